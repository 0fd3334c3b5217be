//! rtnetlink requests the controller makes: veth pairs, addresses, link state, deletion.
//!
//! A `Netlink` talks to the namespace of the thread that created it: the host's when made on
//! the main runtime, a namespace's when made inside `netns::run_in`.
use std::{net::IpAddr, os::fd::RawFd};

use futures::TryStreamExt as _;
use netlink_packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkMessage};
use rtnetlink::{Handle, LinkUnspec, LinkVeth};

use crate::{
    error::{Context as _, Error, Result},
    names::{Cidr, Cidr6, Mac},
};

/// The errno a netlink request failed with, if it was the kernel that refused it.
pub fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

/// One rtnetlink connection.
#[derive(Clone)]
pub struct Netlink {
    pub(crate) handle: Handle,
}

impl Netlink {
    /// Opens a connection on the current runtime (in the current thread's namespace).
    pub fn new() -> Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection().context("opening a netlink socket")?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    /// Wraps an existing handle (e.g. the one `netns::run_in` passes).
    pub fn from_handle(handle: Handle) -> Self {
        Self { handle }
    }

    /// The link called `name`, if any.
    pub async fn link(&self, name: &str) -> Result<Option<LinkMessage>> {
        let mut links = self.handle.link().get().match_name(name.to_owned()).execute();
        match links.try_next().await {
            Ok(l) => Ok(l),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e).context(format!("looking up interface {name}")),
        }
    }

    /// Interface index of `name`, if it exists.
    pub async fn ifindex(&self, name: &str) -> Result<Option<u32>> {
        Ok(self.link(name).await?.map(|l| l.header.index))
    }

    /// MAC address of `name`.
    pub async fn mac(&self, name: &str) -> Result<Option<Mac>> {
        Ok(self.link(name).await?.and_then(|l| {
            l.attributes.into_iter().find_map(|a| match a {
                LinkAttribute::Address(b) if b.len() == 6 => Some(Mac(b.try_into().ok()?)),
                _ => None,
            })
        }))
    }

    /// Every link of this namespace by name: (index, MAC), in one dump.
    pub async fn links(&self) -> Result<std::collections::HashMap<String, (u32, Option<Mac>)>> {
        let msgs: Vec<LinkMessage> =
            self.handle.link().get().execute().try_collect().await.context("listing interfaces")?;
        Ok(msgs
            .into_iter()
            .filter_map(|l| {
                let index = l.header.index;
                let (mut name, mut mac) = (None, None);
                for a in l.attributes {
                    match a {
                        LinkAttribute::IfName(n) => name = Some(n),
                        LinkAttribute::Address(b) if b.len() == 6 => mac = b.try_into().ok().map(Mac),
                        _ => {}
                    }
                }
                Some((name?, (index, mac)))
            })
            .collect())
    }

    /// Creates a veth pair: `name` in this namespace, `peer` directly inside the namespace
    /// open at `peer_ns` (so the peer's name never has to be free in this namespace), with
    /// `peer_mac` and both ends with `mtu` if given. Returns the index of `name`.
    pub async fn add_veth(
        &self,
        name: &str,
        peer: &str,
        peer_ns: RawFd,
        peer_mac: Option<Mac>,
        mtu: Option<u32>,
    ) -> Result<u32> {
        let mut peer_msg = LinkUnspec::new_with_name(peer).setns_by_fd(peer_ns);
        if let Some(mac) = peer_mac {
            peer_msg = peer_msg.address(mac.0.to_vec());
        }
        let mut host = LinkVeth::new(name, peer);
        if let Some(mtu) = mtu {
            peer_msg = peer_msg.mtu(mtu);
            host = host.mtu(mtu);
        }
        let msg = host.set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg.build()))).build();
        self.handle.link().add(msg).execute().await.map_err(|e| match errno(&e) {
            Some(libc::EEXIST) => Error::invalid(
                "interface name",
                format!("{name}/{peer}"),
                format!("{name} exists on the host or {peer} in the namespace already"),
            ),
            _ => Error::Netlink { context: format!("creating veth pair {name}/{peer}"), source: e },
        })?;
        self.ifindex(name)
            .await?
            .ok_or_else(|| Error::Command(format!("veth {name} vanished right after it was created")))
    }

    /// Creates a veth pair with both ends in this namespace; returns their indexes.
    pub async fn add_veth_pair(&self, a: &str, b: &str) -> Result<(u32, u32)> {
        self.handle
            .link()
            .add(LinkVeth::new(a, b).build())
            .execute()
            .await
            .context(format!("creating veth pair {a}/{b}"))?;
        let missing = || Error::Command(format!("veth pair {a}/{b} vanished right after it was created"));
        Ok((self.ifindex(a).await?.ok_or_else(missing)?, self.ifindex(b).await?.ok_or_else(missing)?))
    }

    /// The IPv4 addresses of interface `index`.
    pub async fn ipv4_addrs(&self, index: u32) -> Result<Vec<std::net::Ipv4Addr>> {
        use netlink_packet_route::address::{AddressAttribute, AddressMessage};
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .context(format!("reading the addresses of interface {index}"))?;
        Ok(msgs
            .into_iter()
            .filter(|m| m.header.index == index)
            .flat_map(|m| m.attributes)
            .filter_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(v4)) | AddressAttribute::Address(IpAddr::V4(v4)) => Some(v4),
                _ => None,
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect())
    }

    /// Name of the interface of the host's IPv4 default route, if there is one.
    pub async fn default_route_interface(&self) -> Result<Option<String>> {
        use netlink_packet_route::route::{RouteAttribute, RouteMessage};
        let msg = rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new().build();
        let routes: Vec<RouteMessage> =
            self.handle.route().get(msg).execute().try_collect().await.context("reading the routing table")?;
        let index = routes.into_iter().filter(|r| r.header.destination_prefix_length == 0).find_map(|r| {
            r.attributes.into_iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(i),
                _ => None,
            })
        });
        match index {
            Some(i) => {
                let mut links = self.handle.link().get().match_index(i).execute();
                let link = links.try_next().await.context("looking up the default route's interface")?;
                Ok(link.and_then(|l| {
                    l.attributes.into_iter().find_map(|a| match a {
                        LinkAttribute::IfName(n) => Some(n),
                        _ => None,
                    })
                }))
            }
            None => Ok(None),
        }
    }

    /// The routes of the main table out of interface `index` via a gateway, but the default
    /// one: (destination, prefix length, gateway).
    pub async fn gateway_routes(&self, index: u32) -> Result<Vec<(std::net::Ipv4Addr, u8, std::net::Ipv4Addr)>> {
        use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
        let msg = rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new().build();
        let routes: Vec<RouteMessage> =
            self.handle.route().get(msg).execute().try_collect().await.context("reading the routing table")?;
        let mut out = vec![];
        for r in routes.into_iter().filter(|r| r.header.destination_prefix_length > 0) {
            let (mut dst, mut gw, mut oif) = (None, None, None);
            for a in r.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = Some(d),
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => gw = Some(g),
                    RouteAttribute::Oif(i) => oif = Some(i),
                    _ => {}
                }
            }
            if let (Some(dst), Some(gw), Some(i)) = (dst, gw, oif)
                && i == index
            {
                out.push((dst, r.header.destination_prefix_length, gw));
            }
        }
        Ok(out)
    }

    /// Adds a route to `dst`/`prefix` via `gateway`; prefix 0 is the default route.
    pub async fn add_route(&self, dst: std::net::Ipv4Addr, prefix: u8, gateway: std::net::Ipv4Addr) -> Result<()> {
        let mut msg = rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new();
        if prefix > 0 {
            msg = msg.destination_prefix(dst, prefix);
        }
        let what = if prefix == 0 { "a default route".to_owned() } else { format!("a route to {dst}/{prefix}") };
        let msg = msg.gateway(gateway).build();
        self.handle.route().add(msg).execute().await.context(format!("adding {what} via {gateway}"))
    }

    /// Adds a default IPv6 route via `gateway`.
    pub async fn add_default_route6(&self, gateway: std::net::Ipv6Addr) -> Result<()> {
        let msg = rtnetlink::RouteMessageBuilder::<std::net::Ipv6Addr>::new().gateway(gateway).build();
        self.handle.route().add(msg).execute().await.context(format!("adding a default IPv6 route via {gateway}"))
    }

    /// Creates a veth pair with each end directly inside a namespace.
    pub async fn add_veth_between(&self, a: &str, a_ns: RawFd, b: &str, b_ns: RawFd) -> Result<()> {
        let peer_msg = LinkUnspec::new_with_name(b).setns_by_fd(b_ns).build();
        let msg = LinkVeth::new(a, b).setns_by_fd(a_ns).set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg))).build();
        self.handle.link().add(msg).execute().await.context(format!("creating veth pair {a}/{b}"))
    }

    /// Sets interface `index` up.
    pub async fn set_up(&self, index: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.handle.link().set(msg).execute().await.context(format!("setting interface {index} up"))
    }

    /// Sets the MTU of interface `index`.
    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).mtu(mtu).build();
        self.handle.link().set(msg).execute().await.context(format!("setting the MTU of interface {index} to {mtu}"))
    }

    /// Sets interface `name` up.
    pub async fn set_up_by_name(&self, name: &str) -> Result<()> {
        let index = self.ifindex(name).await?.ok_or_else(|| Error::Command(format!("interface {name} not found")))?;
        self.set_up(index).await
    }

    /// Adds `cidr` to interface `index`.
    pub async fn add_address(&self, index: u32, cidr: Cidr) -> Result<()> {
        self.add_ip(index, IpAddr::V4(cidr.addr), cidr.prefix).await
    }

    /// Adds IPv6 address `cidr` to interface `index` (its interface takes it without
    /// duplicate address detection: see `sysctl::enable_ipv6`).
    pub async fn add_address6(&self, index: u32, cidr: Cidr6) -> Result<()> {
        self.add_ip(index, IpAddr::V6(cidr.addr), cidr.prefix).await
    }

    async fn add_ip(&self, index: u32, addr: IpAddr, prefix: u8) -> Result<()> {
        self.handle
            .address()
            .add(index, addr, prefix)
            .execute()
            .await
            .context(format!("adding address {addr}/{prefix}"))
    }

    /// Deletes every interface of `names` that exists (and so their veth peers), as one
    /// batch in the kernel when there are several.
    ///
    /// Unregistering an interface waits out RCU grace periods under the rtnl lock, about
    /// 30 ms per request here, whatever the request holds: deleting 250 ports one at a time
    /// takes seconds. The kernel deletes a whole interface group in one unregister batch
    /// (RTM_DELLINK with IFLA_GROUP and no index), so our interfaces are moved to a group
    /// nobody uses and that group is deleted. Should the group turn out to hold anything else
    /// when checked right before the delete, or the batch be refused, they go one at a time.
    pub async fn delete_all(&self, names: &[String]) -> Result<()> {
        let links = self.groups().await?;
        let ours: Vec<(u32, &str)> =
            names.iter().filter_map(|n| links.iter().find(|l| &l.1 == n).map(|l| (l.0, n.as_str()))).collect();
        if ours.len() > 1 && self.delete_as_group(&ours, &links).await.unwrap_or(false) {
            return Ok(());
        }
        for (_, name) in ours {
            self.delete(name).await?;
        }
        Ok(())
    }

    /// Every link of this namespace as (index, name, group), in one dump.
    async fn groups(&self) -> Result<Vec<(u32, String, u32)>> {
        let msgs: Vec<LinkMessage> =
            self.handle.link().get().execute().try_collect().await.context("listing interfaces")?;
        Ok(msgs
            .into_iter()
            .filter_map(|l| {
                let (mut name, mut group) = (None, 0);
                for a in l.attributes {
                    match a {
                        LinkAttribute::IfName(n) => name = Some(n),
                        LinkAttribute::Group(g) => group = g,
                        _ => {}
                    }
                }
                Some((l.header.index, name?, group))
            })
            .collect())
    }

    /// Moves `ours` to a group no interface is in and deletes that group. Ok(false): the group
    /// held something else by the time of the delete, nothing was deleted.
    async fn delete_as_group(&self, ours: &[(u32, &str)], links: &[(u32, String, u32)]) -> Result<bool> {
        let in_use: std::collections::HashSet<u32> = links.iter().map(|l| l.2).collect();
        // Any unused value will do; the clock's nanoseconds spread them, and the high bit keeps
        // them away from the small numbers people give groups by hand.
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let Some(group) = (0..64u32).map(|i| 0x8000_0000 | seed.wrapping_add(i)).find(|g| !in_use.contains(g)) else {
            return Ok(false);
        };
        for &(index, name) in ours {
            let msg = LinkUnspec::new_with_index(index).link_group(group).build();
            self.handle.link().set(msg).execute().await.context(format!("moving {name} to interface group {group}"))?;
        }
        let mut members: Vec<u32> = self.groups().await?.into_iter().filter(|l| l.2 == group).map(|l| l.0).collect();
        let mut wanted: Vec<u32> = ours.iter().map(|o| o.0).collect();
        members.sort_unstable();
        wanted.sort_unstable();
        if members != wanted {
            return Ok(false);
        }
        let mut del = self.handle.link().del(0);
        del.message_mut().attributes.push(LinkAttribute::Group(group));
        del.execute().await.context(format!("deleting interface group {group}"))?;
        Ok(true)
    }

    /// MTU of interface `name`, if it exists.
    pub async fn mtu(&self, name: &str) -> Result<Option<u32>> {
        Ok(self.link(name).await?.and_then(|l| {
            l.attributes.into_iter().find_map(|a| match a {
                LinkAttribute::Mtu(m) => Some(m),
                _ => None,
            })
        }))
    }

    /// Creates `name`, a collect-metadata (`external`) VXLAN device on UDP port `port` with a
    /// VNI filter holding `vni` only, learning off (the switch learns), MTU `mtu`; returns its
    /// index. With the filter, devices of other switches (other VNIs) share the UDP port, and
    /// the kernel hands this one only its own VNI (`ip link add NAME type vxlan external
    /// vnifilter dstport PORT nolearning` and `bridge vni add dev NAME vni VNI`). A VNI that
    /// another device of this host has is refused.
    pub async fn add_vxlan(&self, name: &str, vni: u32, port: u16, mtu: u32) -> Result<u32> {
        use netlink_packet_route::link::InfoVxlan;
        let msg = rtnetlink::LinkVxlan::new(name, 0)
            .mtu(mtu)
            .set_info_data(InfoData::Vxlan(vec![
                InfoVxlan::CollectMetadata(true),
                InfoVxlan::Vnifilter(true),
                InfoVxlan::Port(port),
                InfoVxlan::Learning(false),
            ]))
            .build();
        self.handle.link().add(msg).execute().await.map_err(|e| match errno(&e) {
            Some(libc::EEXIST) => Error::invalid("interface name", name, "exists on the host already"),
            _ => Error::Netlink { context: format!("creating VXLAN device {name}"), source: e },
        })?;
        let index = self
            .ifindex(name)
            .await?
            .ok_or_else(|| Error::Command(format!("{name} vanished right after it was created")))?;
        super::blocking(move || vni_filter_add(index, vni)).await?;
        Ok(index)
    }

    /// Deletes interface `name` (and so its veth peer); a missing interface is not an error.
    pub async fn delete(&self, name: &str) -> Result<()> {
        let Some(index) = self.ifindex(name).await? else { return Ok(()) };
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
            Err(e) => Err(e).context(format!("deleting interface {name}")),
        }
    }
}

/// `RTM_NEWTUNNEL`: adds to the VNI filter of a VXLAN device (linux/rtnetlink.h). rtnetlink
/// has no request for it, so it is written here.
const RTM_NEWTUNNEL: u16 = 120;
/// `VXLAN_VNIFILTER_ENTRY` (nested) and its `VXLAN_VNIFILTER_ENTRY_START` (linux/if_link.h).
const VXLAN_VNIFILTER_ENTRY: u16 = 1;
const VXLAN_VNIFILTER_ENTRY_START: u16 = 1;
const NLA_F_NESTED: u16 = 0x8000;

/// Puts `vni` in the VNI filter of VXLAN device `index` of the calling thread's namespace
/// (`bridge vni add dev DEV vni VNI`): one request on a netlink socket of its own, the
/// kernel's acknowledgement read back. Blocking.
fn vni_filter_add(index: u32, vni: u32) -> Result<()> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    // nlmsghdr (16) + tunnel_msg (8) + ENTRY (4) { START (4 + 4) }.
    let len: u32 = 16 + 8 + 4 + 8;
    let mut msg = Vec::with_capacity(len as usize);
    msg.extend_from_slice(&len.to_ne_bytes());
    msg.extend_from_slice(&RTM_NEWTUNNEL.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    msg.extend_from_slice(&[libc::AF_BRIDGE as u8, 0, 0, 0]); // family, flags, reserved
    msg.extend_from_slice(&index.to_ne_bytes());
    msg.extend_from_slice(&12u16.to_ne_bytes());
    msg.extend_from_slice(&(VXLAN_VNIFILTER_ENTRY | NLA_F_NESTED).to_ne_bytes());
    msg.extend_from_slice(&8u16.to_ne_bytes());
    msg.extend_from_slice(&VXLAN_VNIFILTER_ENTRY_START.to_ne_bytes());
    msg.extend_from_slice(&vni.to_ne_bytes());
    debug_assert_eq!(msg.len(), len as usize);
    // SAFETY: plain socket(2); the descriptor is owned at once.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("opening a netlink socket");
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sending the buffer just built, of its own length, to the kernel (address 0).
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as u16;
    let sent = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&raw const kernel).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if sent != msg.len() as isize {
        return Err(std::io::Error::last_os_error()).context(format!("adding VNI {vni} to interface {index}"));
    }
    let mut ack = [0u8; 512];
    // SAFETY: receiving into a buffer of the length passed.
    let got = unsafe { libc::recv(sock.as_raw_fd(), ack.as_mut_ptr().cast(), ack.len(), 0) };
    // An NLMSG_ERROR message: nlmsghdr, then the error (0: success), negative errno.
    if got < 20 || u16::from_ne_bytes([ack[4], ack[5]]) != libc::NLMSG_ERROR as u16 {
        return Err(Error::Command(format!("adding VNI {vni} to interface {index}: no answer from the kernel")));
    }
    match -i32::from_ne_bytes([ack[16], ack[17], ack[18], ack[19]]) {
        0 => Ok(()),
        libc::EADDRINUSE | libc::EEXIST => Err(Error::invalid(
            "VNI",
            vni.to_string(),
            "another VXLAN device of this host has it already (each VNI belongs to one switch per host)",
        )),
        e => Err(std::io::Error::from_raw_os_error(e)).context(format!("adding VNI {vni} to interface {index}")),
    }
}
