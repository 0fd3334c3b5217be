//! Ports of every kind: their records, making them (`make`), plugging them into the
//! datapath, tearing them down (`teardown`).
//!
//! ```text
//!   kind       made here                               the datapath sees
//!   namespace  namespace + veth (eth0 inside)           the host end, slot, flags 0
//!   adopted    veth into a namespace someone else made  the host end, slot, flags 0
//!              (or, handed over, its far end left on
//!              the host for the runtime to move: Docker)
//!   gateway    veth pair on the host, address on gNAME  the sNAME end, slot, PORT_F_HOST
//!   uplink     nothing (a host interface)               the forwarding programs, no slot
//!   tunnel     a VXLAN device (external, VNI filter)    the device, slot, PORT_F_TUNNEL,
//!                                                       its VNI and peers (TUNNEL, PEERS)
//! ```
//! A port's record says all there is to know about it; nothing here looks at an interface
//! name to find out what it is.
use std::{os::fd::AsRawFd as _, path::Path};

use super::failpoint;
use crate::{
    datapath::{Datapath, UplinkSetup},
    error::{Context as _, Error, Result},
    names::{Cidr, Cidr6, Mac, NS_IFNAME, gateway_ifnames, tunnel_ifname},
    state::{PortKind, PortState, State, TunnelState},
    sys::{blocking, netlink::Netlink, netns, sysctl},
};

/// What is behind a namespace port (made or adopted): the namespace end's address, its MAC
/// (a random one, chosen when the port is made, if `None`) and the pair's MTU, and whether
/// port security binds the port to them.
pub(crate) struct NsEnd {
    pub ip: Cidr,
    pub ip6: Option<Cidr6>,
    pub mac: Option<Mac>,
    pub mtu: Option<u32>,
    pub port_security: bool,
}

/// The record every kind starts from: not made yet (`ready: false`, no index), nothing behind
/// it known.
fn record(switch: &str, kind: PortKind, owner: &str, host_if: String) -> PortState {
    PortState {
        switch: switch.to_owned(),
        kind,
        owner: owner.to_owned(),
        host_if,
        host_ifindex: 0,
        peer_if: String::new(),
        slot: None,
        ip: None,
        ip6: None,
        mac: None,
        netns_cookie: 0,
        netns_path: None,
        mtu: None,
        port_security: true,
        tunnel: None,
        attachment: None,
        handed_over: false,
        workload: None,
        ready: false,
    }
}

/// A port behind a namespace, its end in it called `peer_if`.
fn behind_namespace(
    kind: PortKind,
    switch: &str,
    owner: &str,
    host_if: String,
    slot: u32,
    peer_if: &str,
    end: NsEnd,
) -> PortState {
    PortState {
        peer_if: peer_if.to_owned(),
        slot: Some(slot),
        ip: Some(end.ip),
        ip6: end.ip6,
        mac: end.mac,
        mtu: end.mtu,
        port_security: end.port_security,
        ..record(switch, kind, owner, host_if)
    }
}

/// The record of namespace `ns` (made by `ns add`) on `switch`, at `slot`, through `host_if`.
pub(crate) fn namespace(switch: &str, ns: &str, host_if: String, slot: u32, end: NsEnd) -> PortState {
    behind_namespace(PortKind::Namespace, switch, ns, host_if, slot, NS_IFNAME, end)
}

/// The record of port `name` into the namespace at `netns` that someone else made (`ns
/// attach`), with `ifname` inside it.
pub(crate) fn adopted(
    switch: &str,
    name: &str,
    host_if: String,
    slot: u32,
    netns: &Path,
    ifname: &str,
    end: NsEnd,
) -> PortState {
    PortState {
        netns_path: Some(netns.display().to_string()),
        ..behind_namespace(PortKind::Adopted, switch, name, host_if, slot, ifname, end)
    }
}

/// The record of switch `switch`'s gateway port: a veth pair whose far end (`g…`) carries the
/// host's address `cidr` (and `cidr6`), the switch end (`s…`) plugged in like a namespace's.
pub(crate) fn gateway(switch: &str, cidr: Cidr, cidr6: Option<Cidr6>, slot: u32, mtu: Option<u32>) -> PortState {
    let (host_end, switch_end) = gateway_ifnames(switch);
    PortState {
        peer_if: host_end,
        slot: Some(slot),
        ip: Some(cidr),
        ip6: cidr6,
        mtu,
        ..record(switch, PortKind::Gateway, "host", switch_end)
    }
}

/// The record of uplink `ifname` of switch `switch`.
pub(crate) fn uplink(switch: &str, ifname: &str) -> PortState {
    record(switch, PortKind::Uplink, ifname, ifname.to_owned())
}

/// The record of switch `switch`'s tunnel port: its VXLAN device `v…`.
pub(crate) fn tunnel(switch: &str, t: TunnelState, slot: u32) -> PortState {
    let base = record(switch, PortKind::Tunnel, &format!("vxlan{}", t.vni), tunnel_ifname(switch));
    PortState { slot: Some(slot), mtu: Some(t.mtu), port_security: false, tunnel: Some(t), ..base }
}

/// What making a port found out: the index of the switch's end, the far end's MAC (namespace
/// ports, the gateway) and the namespace's cookie (namespace ports).
pub(crate) struct Made {
    pub ifindex: u32,
    pub mac: Option<Mac>,
    pub cookie: u64,
}

/// Makes port `p` as its kind needs (the table above) and plugs it into `dp`; `state` has the
/// rest of its switch (the gateway a namespace routes through, the other uplinks).
pub(crate) async fn make(dp: &(dyn Datapath + 'static), state: &State, p: &PortState) -> Result<Made> {
    match p.kind {
        PortKind::Adopted if p.handed_over => make_handed_over_port(dp, p).await,
        PortKind::Namespace | PortKind::Adopted => {
            let gateways =
                (state.gateway_cidr(&p.switch).map(|g| g.addr), state.gateway_cidr6(&p.switch).map(|g| g.addr));
            make_namespace_port(dp, p, gateways).await
        }
        PortKind::Gateway => make_gateway_port(dp, p).await,
        PortKind::Tunnel => make_tunnel_port(dp, p).await,
        PortKind::Uplink => make_uplink(dp, state, p).await,
    }
}

/// Makes the namespace (kind `Namespace` only: an adopted one exists), the veth pair, the
/// address and default route inside, and plugs the host end into the datapath.
///
/// The program is attached and the port registered before the host end goes up, so no frame
/// from the namespace ever reaches the host stack unswitched. The MAC is chosen here (unless
/// given), so the datapath can take the port, bound to it, while the namespace side is set
/// up on its own thread.
async fn make_namespace_port(
    dp: &dyn Datapath,
    port: &PortState,
    (gateway, gateway6): (Option<std::net::Ipv4Addr>, Option<std::net::Ipv6Addr>),
) -> Result<Made> {
    let ns = port.namespace().ok_or_else(|| Error::Command(format!("port {} has no namespace", port.host_if)))?;
    let ns_path = port.netns_file().expect("a port behind a namespace");
    let ip = port.ip.ok_or_else(|| Error::Command(format!("port {} has no address", port.host_if)))?;
    let nl = Netlink::new()?;
    if port.kind.owns_namespace() {
        netns::create(ns).await?;
    }
    let ns_file = netns::open_path(&ns_path)?;
    let mac = match port.mac {
        Some(m) => m,
        None => Mac::random_station()?,
    };
    let ifindex = nl.add_veth(&port.host_if, &port.peer_if, ns_file.as_raw_fd(), Some(mac), port.mtu).await?;
    drop(ns_file);
    failpoint("ns-add:veth")?;

    let host_if = port.host_if.clone();
    blocking(move || sysctl::disable_ipv6(&host_if)).await?;

    let ns_if = port.peer_if.clone();
    // The namespace side runs on the namespace's own thread: /proc/sys/net and ioctl sockets
    // see the namespace of the thread that opens them; a handle of the datapath goes along.
    // It prepares the interface and hands over the namespace's cookie, then waits until the
    // host end is up to set its own end up: the kernel announces the address when it comes up
    // (see `sysctl::announce_on_up`), and the announcement must find a port that switches it.
    let prepare = dp.kind().open(dp.switch());
    let owns_namespace = port.kind.owns_namespace();
    let (cookie_tx, cookie_rx) = tokio::sync::oneshot::channel();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let ip6 = port.ip6;
    let inside = netns::run_in_path(&ns_path, move |h| async move {
        let nl = Netlink::from_handle(h);
        prepare.prepare_peer(&ns_if)?;
        let idx = address_inside(&nl, &ns_if, ip, ip6).await?;
        nl.set_up_by_name("lo").await?;
        let _ = cookie_tx.send(netns::cookie_here()?);
        if go_rx.await.is_err() {
            // The host side failed; its error is the one to report.
            return Ok(());
        }
        nl.set_up(idx).await?;
        route_inside(&nl, (gateway, gateway6.filter(|_| ip6.is_some())), owns_namespace).await
    });
    // Bound to the MAC the namespace's end was made with (port security needs it).
    let plugged = PortState { host_ifindex: ifindex, mac: Some(mac), ..port.clone() };
    let host = async {
        let (cookie, attached) = tokio::join!(cookie_rx, dp.attach_port(&plugged));
        attached?;
        let cookie = cookie.map_err(|_| {
            Error::Command(format!("setting up {ns_if_name} in {ns} failed", ns_if_name = port.peer_if))
        })?;
        if let Some(fw) = dp.forwarding() {
            // Sockets of this namespace may reach forwards on the uplinks directly.
            fw.allow_netns(cookie).await?;
        }
        failpoint("ns-add:attached")?;
        nl.set_up(ifindex).await?;
        let _ = go_tx.send(());
        Ok::<_, Error>(cookie)
    };
    let (inside, host) = tokio::join!(inside, host);
    // The namespace side's own error first: the host side's is then only its consequence.
    inside?;
    let cookie = host?;
    Ok(Made { ifindex, mac: Some(mac), cookie })
}

/// Inside the namespace (on its thread): the settings and addresses of its end `ns_if`, before
/// it comes up. IPv6 is on only for an interface given an IPv6 address. Returns its index.
async fn address_inside(nl: &Netlink, ns_if: &str, ip: Cidr, ip6: Option<Cidr6>) -> Result<u32> {
    match ip6 {
        Some(_) => sysctl::enable_ipv6(ns_if)?,
        None => sysctl::disable_ipv6(ns_if)?,
    }
    sysctl::announce_on_up(ns_if)?;
    let idx = nl.ifindex(ns_if).await?.ok_or_else(|| Error::Command(format!("{ns_if} missing in namespace")))?;
    nl.add_address(idx, ip).await?;
    if let Some(ip6) = ip6 {
        nl.add_address6(idx, ip6).await?;
    }
    Ok(idx)
}

/// Inside the namespace: default routes via the gateway (and its IPv6 address, `gateway6`,
/// given only for a namespace with an IPv6 address). An adopted namespace that has a default
/// route already (attached to another network before) keeps it: this port's segment is
/// reached on its own.
async fn route_inside(
    nl: &Netlink,
    (gateway, gateway6): (Option<std::net::Ipv4Addr>, Option<std::net::Ipv6Addr>),
    owns_namespace: bool,
) -> Result<()> {
    if let Some(gw) = gateway
        && (owns_namespace || nl.default_route_interface().await?.is_none())
    {
        nl.add_route(std::net::Ipv4Addr::UNSPECIFIED, 0, gw).await?;
        if let Some(gw6) = gateway6 {
            nl.add_default_route6(gw6).await?;
        }
    }
    Ok(())
}

/// Makes an adopted port whose far end the runtime moves into its namespace itself (Docker's
/// Join): the veth pair on the host, the far end (`peer_if`) with the port's MAC and MTU and
/// nothing else (the runtime moves it, names it, gives it its address and routes), the host
/// end plugged in and up. Bound to its MAC and address like any namespace port. The
/// namespace may not exist yet (Docker makes it when the container starts, after Join): its
/// cookie is learned later (`learn_namespace`).
async fn make_handed_over_port(dp: &dyn Datapath, port: &PortState) -> Result<Made> {
    let nl = Netlink::new()?;
    let mac = match port.mac {
        Some(m) => m,
        None => Mac::random_station()?,
    };
    // A far end an interrupted Join left on the host has this derived name: it is ours.
    nl.delete(&port.peer_if).await?;
    let here = std::fs::File::open("/proc/self/ns/net").context("opening this network namespace")?;
    let ifindex = nl.add_veth(&port.host_if, &port.peer_if, here.as_raw_fd(), Some(mac), port.mtu).await?;
    drop(here);
    let (host_if, peer_if, prepare) = (port.host_if.clone(), port.peer_if.clone(), dp.kind().open(dp.switch()));
    blocking(move || {
        sysctl::disable_ipv6(&host_if)?;
        prepare.prepare_peer(&peer_if)
    })
    .await?;
    dp.attach_port(&PortState { host_ifindex: ifindex, mac: Some(mac), ..port.clone() }).await?;
    nl.set_up(ifindex).await?;
    Ok(Made { ifindex, mac: Some(mac), cookie: 0 })
}

/// The cookie of the namespace of port `p` (handed over: the runtime made it after the
/// port), now that it exists, allowed to reach forwards directly (hairpin) in `dp`.
/// `Ok(None)` while the namespace is not there yet.
pub(crate) async fn learn_namespace(dp: &dyn Datapath, p: &PortState) -> Result<Option<u64>> {
    let Some(path) = p.netns_file().filter(|f| netns::open_path(f).is_ok()) else { return Ok(None) };
    let cookie = netns::run_in_path(&path, |h| async move {
        // The runtime brings the loopback up too; the cookie's socket needs it now.
        Netlink::from_handle(h).set_up_by_name("lo").await?;
        netns::cookie_here()
    })
    .await?;
    if let Some(fw) = dp.forwarding() {
        fw.allow_netns(cookie).await?;
    }
    Ok(Some(cookie))
}

/// Makes the gateway's veth pair: the far end (`peer_if`) gets the host's address, the switch
/// end becomes a port, bound to the far end's MAC (no namespace may claim it). Leftovers of
/// an interrupted `up` are replaced.
async fn make_gateway_port(dp: &dyn Datapath, port: &PortState) -> Result<Made> {
    let ip = port.ip.ok_or_else(|| Error::Command("the gateway port has no address".into()))?;
    let nl = Netlink::new()?;
    nl.delete(&port.peer_if).await?;
    let (host_idx, port_idx) = nl.add_veth_pair(&port.peer_if, &port.host_if).await?;
    if let Some(mtu) = port.mtu {
        nl.set_mtu(host_idx, mtu).await?;
        nl.set_mtu(port_idx, mtu).await?;
    }
    let (a, b, prepare) = (port.peer_if.clone(), port.host_if.clone(), dp.kind().open(dp.switch()));
    let ip6 = port.ip6;
    blocking(move || {
        // The host's end carries IPv6 only with an IPv6 gateway address; the switch's end
        // never (a layer-2 port).
        match ip6 {
            Some(_) => sysctl::enable_ipv6(&a)?,
            None => sysctl::disable_ipv6(&a)?,
        }
        sysctl::disable_ipv6(&b)?;
        // The host end is to the other ports what a namespace's eth0 is.
        prepare.prepare_peer(&a)
    })
    .await?;
    let mac = nl.mac(&port.peer_if).await?.ok_or_else(|| Error::Command(format!("{} has no MAC", port.peer_if)))?;
    dp.attach_port(&PortState { host_ifindex: port_idx, mac: Some(mac), ..port.clone() }).await?;
    nl.add_address(host_idx, ip).await?;
    if let Some(ip6) = port.ip6 {
        nl.add_address6(host_idx, ip6).await?;
    }
    nl.set_up(host_idx).await?;
    nl.set_up(port_idx).await?;
    Ok(Made { ifindex: port_idx, mac: Some(mac), cookie: 0 })
}

/// Makes the tunnel port `port`: its VXLAN device (a leftover of an interrupted `up` is
/// replaced), attached to the datapath with its settings and peers before it goes up, so
/// nothing from the underlay is switched by anything else.
async fn make_tunnel_port(dp: &dyn Datapath, port: &PortState) -> Result<Made> {
    let t =
        port.tunnel.as_ref().ok_or_else(|| Error::Command(format!("tunnel port {} has no settings", port.host_if)))?;
    let nl = Netlink::new()?;
    nl.delete(&port.host_if).await?;
    let index = nl.add_vxlan(&port.host_if, t.vni, t.udp_port, t.mtu).await?;
    let name = port.host_if.clone();
    blocking(move || {
        sysctl::disable_ipv6(&name)?;
        sysctl::forward_on_tunnel(&name)
    })
    .await?;
    dp.attach_port(&PortState { host_ifindex: index, ..port.clone() }).await?;
    nl.set_up(index).await?;
    Ok(Made { ifindex: index, mac: None, cookie: 0 })
}

/// Puts the forwarding programs on uplink `p` (the interface is the host's: nothing is made).
/// The datapath takes a switch's uplinks as one set (one table of their addresses, with the
/// gateway's and the masquerade setting), so this sets up every uplink `state` records for
/// the switch, `p` among them, with their addresses as they are now.
async fn make_uplink(dp: &(dyn Datapath + 'static), state: &State, p: &PortState) -> Result<Made> {
    let fw = dp.require_forwarding()?;
    let gateway = state.gateway(&p.switch).ok_or_else(|| Error::Command("port forwarding needs a gateway".into()))?;
    let setup = UplinkSetup {
        uplinks: state.uplinks(&p.switch),
        gateway: gateway.ip.ok_or_else(|| Error::Command("the gateway port has no address".into()))?,
        gateway_if: gateway.peer_if.clone(),
        masquerade: state.switch(&p.switch)?.masquerade,
    };
    fw.setup_uplinks(&setup).await?;
    let ifindex = Netlink::new()?.ifindex(&p.host_if).await?.unwrap_or(0);
    Ok(Made { ifindex, mac: None, cookie: 0 })
}

/// Removes everything port `p` stands for: its datapath attachment, the veth pair it made and,
/// for a namespace the switch made, the namespace with its direct links. Idempotent, and
/// tolerant of a half-made port. `dp` is `None` when the switch record is gone.
pub(crate) async fn teardown(state: &State, dp: Option<&dyn Datapath>, p: &PortState) -> Result<()> {
    match p.kind {
        PortKind::Uplink => {
            if let Some(fw) = dp.and_then(|d| d.forwarding()) {
                fw.detach_uplink(&p.host_if).await?;
            }
            // The interface is the host's: it stays.
        }
        PortKind::Namespace | PortKind::Adopted | PortKind::Gateway | PortKind::Tunnel => {
            // The veth pair goes with either end, and its programs with it. Interface first:
            // the kernel drops a filter with its interface for free, where detaching a link
            // on its own (XDP, the gateway's TCX guard) waits out a grace period that the
            // deletion then queues behind; after it the datapath only forgets the port (its
            // slot, its pins).
            Netlink::new()?.delete(&p.host_if).await?;
            if let Some(dp) = dp {
                dp.detach_port(p).await?;
            }
        }
    }
    if let (true, Some(ns)) = (p.kind.owns_namespace(), p.namespace()) {
        let links = state.namespaces.get(ns).map(|n| n.links.iter().map(|l| l.ifname.clone()).collect());
        delete_namespace(ns, links.unwrap_or_default()).await?;
    }
    Ok(())
}

/// Deletes the connection-table entries of the address of port `p` (a namespace's, going
/// away on its own): the next holder of the address starts clean. One walk of the tables per
/// port, so not part of `teardown`, which `down` runs for every port of a switch whose tables
/// go with it.
pub(crate) async fn forget_connections(dp: Option<&dyn Datapath>, p: &PortState) -> Result<()> {
    if let (Some(fw), Some(ip)) = (dp.and_then(|d| d.forwarding()), p.ip) {
        fw.forget_connections(ip.addr).await?;
    }
    Ok(())
}

/// Deletes namespace `ns` made by this tool, with its direct links `ifnames` first: the kernel
/// would remove them with the namespace, but asynchronously, and the peer namespace must not
/// see a dying interface afterwards. Idempotent.
pub(crate) async fn delete_namespace(ns: &str, ifnames: Vec<String>) -> Result<()> {
    if !ifnames.is_empty() && netns::exists(ns) {
        netns::run_in(ns, move |h| async move {
            let nl = Netlink::from_handle(h);
            for ifname in ifnames {
                nl.delete(&ifname).await?;
            }
            Ok(())
        })
        .await?;
    }
    let name = ns.to_owned();
    blocking(move || netns::delete(&name)).await
}

/// One row of `switch ports`: a port of any kind.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PortRow {
    /// The switch.
    pub switch: String,
    /// What is behind the port.
    pub kind: crate::state::PortKind,
    /// Who: the namespace, `host` (gateway) or the interface (uplink).
    pub owner: String,
    /// The switch's end of the port.
    pub interface: String,
    /// Slot in the port array (switched ports).
    pub slot: Option<u32>,
    /// Address behind the port.
    pub ip: Option<String>,
    /// IPv6 address behind the port, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip6: Option<String>,
    /// Port security: "mac+ip" (bound to both), "mac reserved" (the gateway: no other port
    /// may use its MAC), "off".
    pub security: &'static str,
    /// MAC behind the port.
    pub mac: Option<String>,
    /// The pod or container a runtime runs behind it (`namespace/name` for a pod).
    pub workload: Option<String>,
    /// False while being made, or left half-made by an interrupted command.
    pub ready: bool,
}

/// Every port of `switch` (of every switch if `None`), of every kind, from the one table.
/// Changes nothing.
pub async fn list(switch: Option<&str>) -> Result<Vec<PortRow>> {
    if let Some(s) = switch {
        crate::names::validate_name("switch name", s)?;
    }
    let store = super::lock().await?;
    let state = store.load()?;
    if let Some(s) = switch {
        state.switch(s)?;
    }
    let mut rows: Vec<PortRow> = state
        .ports
        .iter()
        .filter(|p| switch.is_none_or(|s| s == p.switch))
        .map(|p| PortRow {
            switch: p.switch.clone(),
            kind: p.kind,
            owner: p.owner.clone(),
            interface: p.host_if.clone(),
            slot: p.slot,
            ip: p.ip.map(|c| c.to_string()),
            ip6: p.ip6.map(|c| c.to_string()),
            mac: p.mac.map(|m| m.to_string()),
            security: {
                let d = p.datapath_port();
                match (d.flags & switch_common::PORT_F_BIND_IP != 0, d.mac != [0; 6]) {
                    (true, _) => "mac+ip",
                    (false, true) => "mac reserved",
                    _ => "off",
                }
            },
            workload: p.workload_name(),
            ready: p.ready,
        })
        .collect();
    rows.sort_by(|a, b| (&a.switch, a.kind, &a.owner).cmp(&(&b.switch, b.kind, &b.owner)));
    Ok(rows)
}
