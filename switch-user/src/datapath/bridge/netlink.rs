//! The Linux bridge, driven over rtnetlink: the `bridge` datapath, i.e. the classic recipe
//! (`ip link add NAME type bridge`, `ip link set PORT master NAME`, `bridge fdb ...`) made by
//! the tool itself, as the baseline users compare against.
use std::time::Duration;

use futures::TryStreamExt as _;
use netlink_packet_route::{
    AddressFamily,
    link::{InfoBridge, InfoData, LinkAttribute, LinkInfo, Stats64},
    neighbour::{NeighbourAttribute, NeighbourFlags, NeighbourState},
};
use rtnetlink::{LinkBridge, LinkUnspec};

use crate::sys::netlink::{Netlink, errno};
use crate::{
    error::{Context as _, Error, Result},
    names::Mac,
};

/// One entry of a bridge's forwarding database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeFdbEntry {
    /// Station MAC.
    pub mac: Mac,
    /// Port the station is behind.
    pub ifindex: u32,
    /// Added by an operator (never aged).
    pub is_static: bool,
    /// Time since the entry was last updated.
    pub age: Duration,
}

/// `USER_HZ`: the unit of the kernel's neighbour cache-info times.
const USER_HZ: u64 = 100;

impl Netlink {
    /// Creates bridge `name` with `ageing` (seconds) and sets it up. An existing bridge of that
    /// name is an error.
    pub async fn add_bridge(&self, name: &str, ageing_secs: u64) -> Result<u32> {
        // The kernel keeps the ageing time in centiseconds.
        let centis = u32::try_from(ageing_secs.saturating_mul(100)).unwrap_or(u32::MAX);
        // Multicast snooping off: the bridge then floods multicast as the eBPF and userspace
        // switches do, and does not send its own IGMP reports (multicast router discovery)
        // into the namespaces. Unicast forwarding, what the baseline is measured on, is the same.
        let msg = LinkBridge::new(name)
            .ageing_time(centis)
            .append_info_data(InfoBridge::MulticastSnooping(false))
            .up()
            .build();
        self.handle.link().add(msg).execute().await.map_err(|e| match errno(&e) {
            Some(libc::EEXIST) => Error::invalid("bridge name", name, "an interface with this name exists already"),
            _ => Error::Netlink { context: format!("creating bridge {name}"), source: e },
        })?;
        self.ifindex(name).await?.ok_or_else(|| Error::Command(format!("bridge {name} vanished after creation")))
    }

    /// Makes interface `index` a port of bridge `bridge`.
    pub async fn set_controller(&self, index: u32, bridge: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).controller(bridge).build();
        self.handle.link().set(msg).execute().await.context(format!("adding interface {index} to bridge {bridge}"))
    }

    /// The learned and static entries of the bridge ports in `ports` (local entries, i.e. the
    /// ports' own MACs, and entries of other bridges are left out).
    pub async fn bridge_fdb(&self, ports: &[(u32, Mac)]) -> Result<Vec<BridgeFdbEntry>> {
        let mut dump = self.handle.neighbours().get().set_address_family(AddressFamily::Bridge).execute();
        let mut out = vec![];
        while let Some(msg) = dump.try_next().await.context("reading the bridge forwarding database")? {
            let h = &msg.header;
            let Some((_, own_mac)) = ports.iter().find(|(i, _)| *i == h.ifindex) else { continue };
            // Bridge entries name the bridge (NDA_MASTER); the rest are the veth's own address
            // lists ("self" entries).
            if !msg.attributes.iter().any(|a| matches!(a, NeighbourAttribute::Controller(_))) {
                continue;
            }
            let mut mac = None;
            let mut age = Duration::ZERO;
            for a in &msg.attributes {
                match a {
                    NeighbourAttribute::LinkLayerAddress(b) if b.len() == 6 => {
                        mac = b.as_slice().try_into().ok().map(Mac)
                    }
                    NeighbourAttribute::CacheInfo(c) => {
                        age = Duration::from_millis(u64::from(c.updated) * 1000 / USER_HZ)
                    }
                    _ => {}
                }
            }
            let Some(mac) = mac else { continue };
            if mac == *own_mac || h.state == NeighbourState::Permanent {
                continue; // the port's own address
            }
            out.push(BridgeFdbEntry { mac, ifindex: h.ifindex, is_static: h.state == NeighbourState::Noarp, age });
        }
        Ok(out)
    }

    /// Adds a static, sticky entry (`bridge fdb add MAC dev PORT master static sticky`):
    /// sticky so that a frame from another port cannot move it, as with the eBPF datapaths.
    pub async fn bridge_fdb_add(&self, port: u32, mac: Mac) -> Result<()> {
        self.handle
            .neighbours()
            .add_bridge(port, &mac.0)
            .state(NeighbourState::Noarp)
            .flags(NeighbourFlags::Controller | NeighbourFlags::Sticky)
            .replace()
            .execute()
            .await
            .context(format!("adding bridge fdb entry {mac}"))
    }

    /// Deletes the entry of `mac` on `port`; returns whether it existed.
    pub async fn bridge_fdb_del(&self, port: u32, mac: Mac) -> Result<bool> {
        let mut msg = netlink_packet_route::neighbour::NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        msg.header.ifindex = port;
        msg.header.flags = NeighbourFlags::Controller;
        msg.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
        match self.handle.neighbours().del(msg).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e).context(format!("deleting bridge fdb entry {mac}")),
        }
    }

    /// Ageing time of bridge `name` in seconds, as the kernel has it.
    pub async fn bridge_ageing(&self, name: &str) -> Result<Option<u64>> {
        Ok(self.link(name).await?.and_then(|l| {
            l.attributes.into_iter().find_map(|a| match a {
                LinkAttribute::LinkInfo(infos) => infos.into_iter().find_map(|i| match i {
                    LinkInfo::Data(InfoData::Bridge(b)) => b.into_iter().find_map(|x| match x {
                        // Centiseconds, as set in `add_bridge`.
                        InfoBridge::AgeingTime(c) => Some(u64::from(c) / 100),
                        _ => None,
                    }),
                    _ => None,
                }),
                _ => None,
            })
        }))
    }

    /// Interface counters of `name`.
    pub async fn link_stats(&self, name: &str) -> Result<Option<Stats64>> {
        Ok(self.link(name).await?.and_then(|l| {
            l.attributes.into_iter().find_map(|a| match a {
                LinkAttribute::Stats64(s) => Some(s),
                _ => None,
            })
        }))
    }
}
