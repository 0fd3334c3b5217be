//! The eBPF datapaths (tc and xdp: two modes of one implementation): loading the programs,
//! pinning them under `/sys/fs/bpf/switch/NAME/`, attaching them to ports and uplinks, and
//! typed access to their maps.
//!
//! ```text
//! /sys/fs/bpf/switch/NAME/
//!   prog_ingress | prog_xdp        the switching program (TC or XDP; one instance per
//!                                  switch: switches share nothing)
//!   prog_tunnel                    the tunnel port's ingress (tc datapath)
//!   prog_nat_in  prog_nat_out      port forwarding on the uplinks' TCX ingress and egress
//!   prog_nat_gateway               the reply shortcut on the gateway's host end
//!   prog_gateway_egress            the segment's guard on the gateway's host end (egress)
//!   prog_sock_connect4 prog_sock_sendmsg4 prog_sock_recvmsg4
//!                                  cgroup socket hooks: host-local and hairpin access
//!   FDB BOUND LEARNED PORTS PORT_SLOTS STATS CONFIG PORT_DEVMAP TABLE_STATS  switching maps
//!   FORWARDS UPLINK_ADDRS CONNTRACK CT_UNREPLIED FWD_STATS NAT_CONFIG
//!   UPLINK_BY_IFINDEX SOCK_ORIG NAT_NETNS                                    forwarding maps
//!   EVENTS EVENT_RATE              switch monitor
//!   CAPTURE CAPTURE_FILTER CAPTURE_SCRATCH                                   switch capture
//!   TUNNEL PEERS PEER_SLOTS        the tunnel port and its peers
//!   BOUND_IP PEER_LEARNED          the tunnel's port security (later maps: optional)
//!   links/IFNAME                   one link per port (XDP; a tc port's program is a filter of
//!                                  its clsact qdisc, which goes with the port's veth)
//!   links/uplink-{in,out}-IFNAME   the forwarding programs on an uplink
//!   links/gateway-nat-IFNAME       the reply shortcut
//!   links/gateway-guard-IFNAME     the guard (attached with the gateway port)
//!   links/cgroup-sock_*            the socket hooks on the cgroup v2 root
//! ```
//! Everything forwarding needs is pinned, so the datapath runs on after the CLI exits and
//! every later CLI call finds the same state. Removing a link's pin detaches it.
//!
//! The trait's parts, one file each: `mod.rs` (the switch object and its ports, the FDB,
//! counters), `forwarding` (port forwarding), `tunnel` (the tunnel port's peers), `tables`
//! (fill levels), `streams` (log, events, capture); `loader` loads and pins, `maps` and `nat`
//! are typed access to the maps.
mod batch;
mod forwarding;
pub mod loader;
pub mod maps;
pub mod nat;
mod streams;
mod tables;
mod tunnel;

use std::{collections::HashMap, fs, net::Ipv4Addr, time::Duration};

use async_trait::async_trait;
pub use loader::{Pins, Program};
use maps::{SwitchMaps, TunnelMaps};
use nat::{NatMaps, wire};
use switch_common::{CFG_F_REDIRECT_PEER, CFG_F_ROUTABLE, FDB_F_STATIC, FdbEntry, SwitchConfig, TunnelConfig};

use super::{
    Datapath, DatapathCapture, DatapathEvents, DatapathLog, FdbEntryView, PortCounters, PortForwarding, Tables,
    Tunnels, settings::Setting,
};
use crate::{
    error::{Error, Result},
    kind::{Capability, DatapathKind},
    names::Mac,
    state::{PortKind, PortState, Redirect, SwitchState},
    sys::{blocking, clock::now_ns, netlink::Netlink},
};

/// The tc or xdp datapath of one switch.
pub struct Ebpf {
    name: String,
    program: Program,
    pins: Pins,
}

impl Ebpf {
    /// Switch `name` running `program`.
    pub fn new(name: &str, program: Program) -> Self {
        Self { name: name.to_owned(), program, pins: Pins::new(name) }
    }

    /// Runs `f` on the switch's maps, off the async workers (bpf syscalls block).
    async fn with_maps<T: Send + 'static>(
        &self,
        f: impl FnOnce(SwitchMaps) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let pins = self.pins.clone();
        blocking(move || f(SwitchMaps::open(&pins)?)).await
    }

    /// Runs `f` on the switch's forwarding maps, off the async workers.
    async fn with_nat<T: Send + 'static>(&self, f: impl FnOnce(NatMaps) -> Result<T> + Send + 'static) -> Result<T> {
        let pins = self.pins.clone();
        blocking(move || f(NatMaps::open(&pins)?)).await
    }
}

#[async_trait]
impl Datapath for Ebpf {
    fn kind(&self) -> DatapathKind {
        match self.program {
            Program::Tc => DatapathKind::Tc,
            Program::Xdp => DatapathKind::Xdp,
        }
    }

    fn switch(&self) -> &str {
        &self.name
    }

    async fn create(&self, sw: &SwitchState) -> Result<()> {
        let (pins, program) = (self.pins.clone(), self.program);
        let cfg = SwitchConfig {
            ageing_ns: sw.ageing_secs.saturating_mul(1_000_000_000),
            flags: if sw.redirect == Redirect::Peer { CFG_F_REDIRECT_PEER } else { 0 }
                | if sw.routable { CFG_F_ROUTABLE } else { 0 },
            slot_limit: 0,
            max_learned: sw.max_learned,
            // Set as the gateway port is added (`SwitchMaps::add_port`).
            gateway_slot: 0,
        };
        blocking(move || {
            pins.remove()?;
            pins.create(program)?;
            SwitchMaps::open(&pins)?.set_config(cfg)
        })
        .await
    }

    async fn healthy(&self) -> Result<bool> {
        Ok(self.pins.complete())
    }

    async fn destroy(&self) -> Result<()> {
        let pins = self.pins.clone();
        blocking(move || {
            pins.remove()?;
            // The shared root goes once the last switch is gone; busy is fine.
            // (A host namespace's directory first, then the root.)
            let _ = fs::remove_dir(crate::sys::host::pin_root());
            let _ = fs::remove_dir(loader::PIN_ROOT);
            Ok(())
        })
        .await
    }

    async fn exists(&self) -> Result<bool> {
        Ok(self.pins.exists())
    }

    fn location(&self) -> Option<String> {
        Some(self.pins.dir().display().to_string())
    }

    fn prepare_peer(&self, ifname: &str) -> Result<()> {
        match self.program {
            // Native XDP on the host end needs the far end to take XDP frames (see ethtool.rs).
            Program::Xdp => crate::sys::ethtool::prepare_for_xdp(ifname),
            Program::Tc => Ok(()),
        }
    }

    async fn attach_port(&self, port: &PortState) -> Result<()> {
        let slot = port.slot.ok_or_else(|| Error::Command(format!("port {} has no slot", port.host_if)))?;
        let (pins, host_if, ifindex) = (self.pins.clone(), port.host_if.clone(), port.host_ifindex);
        let binding = port.datapath_port();
        let addrs6 = port.datapath_addrs6().unwrap_or_default();
        // The host's end of the gateway pair: where the host routes into the segment.
        let guarded = (port.kind == PortKind::Gateway).then(|| port.peer_if.clone());
        // A tunnel port: its settings first (its program admits nothing until they name its
        // device), its peers after it is a port (a flood may go to them from then on).
        let tunnel = match (&port.tunnel, port.kind) {
            (Some(t), PortKind::Tunnel) => {
                if self.program != Program::Tc {
                    return Err(Error::Unsupported {
                        switch: self.name.clone(),
                        datapath: self.kind(),
                        capability: Capability::Tunnel,
                        with: "tc".into(),
                    });
                }
                // The program encapsulates known unicast itself and sends it out of the
                // underlay (0: unknown, everything goes through the VXLAN device).
                let underlay = Netlink::new()?.ifindex(&t.underlay).await?.unwrap_or(0);
                Some((
                    TunnelConfig {
                        vni: t.vni,
                        ifindex,
                        local: wire(t.local),
                        slot,
                        underlay,
                        port: t.udp_port,
                        ..Default::default()
                    },
                    t.peers.iter().map(|a| wire(*a)).collect::<Vec<u32>>(),
                ))
            }
            (None, PortKind::Tunnel) => {
                return Err(Error::Command(format!("tunnel port {} has no settings", port.host_if)));
            }
            _ => None,
        };
        blocking(move || {
            if let Some((cfg, _)) = &tunnel {
                TunnelMaps::open(&pins)?.set_config(*cfg)?;
            }
            SwitchMaps::open(&pins)?.add_port(slot, ifindex, binding, addrs6)?;
            if let Some(gateway) = guarded {
                pins.attach_gateway_guard(&gateway)?;
            }
            match tunnel {
                Some((_, peers)) => {
                    pins.attach_tunnel(&host_if)?;
                    TunnelMaps::open(&pins)?.set_peers(&peers)
                }
                None => pins.attach(&host_if),
            }
        })
        .await
    }

    async fn detach_port(&self, port: &PortState) -> Result<()> {
        let (pins, host_if, slot, cookie) = (self.pins.clone(), port.host_if.clone(), port.slot, port.netns_cookie);
        let guarded = (port.kind == PortKind::Gateway).then(|| port.peer_if.clone());
        let tunnel = port.kind == PortKind::Tunnel;
        blocking(move || {
            if tunnel {
                pins.detach_tunnel(&host_if)?;
                if pins.complete() {
                    // No peers, no device: the settings go before the port.
                    let mut maps = TunnelMaps::open(&pins)?;
                    maps.set_peers(&[])?;
                    maps.set_config(TunnelConfig::default())?;
                }
            } else {
                pins.detach(&host_if)?;
            }
            if let Some(gateway) = guarded {
                pins.detach_gateway_guard(&gateway)?;
            }
            if pins.complete() {
                if let Some(slot) = slot {
                    SwitchMaps::open(&pins)?.remove_port(slot)?;
                }
                NatMaps::open(&pins)?.forget_netns(cookie);
            }
            Ok(())
        })
        .await
    }

    async fn fdb(&self, ports: HashMap<u32, Mac>) -> Result<Vec<FdbEntryView>> {
        self.with_maps(move |maps| {
            let ageing = maps.ageing()?.as_nanos() as u64;
            let now = now_ns();
            // Expired entries wait for the datapath's next lookup (or the LRU) to go: a read
            // changes nothing, it just does not show them.
            Ok(maps
                .fdb_entries()?
                .into_iter()
                .filter(|(_, e)| !e.is_expired(now, ageing) && ports.contains_key(&e.ifindex))
                .map(|(k, e)| FdbEntryView {
                    mac: Mac(k.addr),
                    ifindex: e.ifindex,
                    is_static: e.is_static(),
                    age: (!e.is_static()).then(|| Duration::from_nanos(now.saturating_sub(e.last_seen_ns))),
                    remote: (e.remote != 0).then(|| Ipv4Addr::from(e.remote.to_ne_bytes())),
                })
                .collect())
        })
        .await
    }

    async fn fdb_add(&self, mac: Mac, ifindex: u32) -> Result<()> {
        self.with_maps(move |mut maps| {
            maps.fdb_insert(mac.0, FdbEntry { ifindex, flags: FDB_F_STATIC, last_seen_ns: now_ns(), remote: 0, pad: 0 })
        })
        .await
    }

    async fn fdb_del(&self, mac: Mac, _ports: &[u32]) -> Result<bool> {
        self.with_maps(move |mut maps| maps.fdb_remove(mac.0)).await
    }

    async fn stats(&self, ports: &[PortState]) -> Result<Vec<PortCounters>> {
        let slots: Vec<Option<u32>> = ports.iter().map(|p| p.slot).collect();
        // The maps are opened once for every port.
        self.with_maps(move |maps| {
            slots
                .into_iter()
                .map(|slot| match slot {
                    Some(slot) => Ok(PortCounters { stats: maps.port_stats(slot)?, detailed: true }),
                    None => Ok(PortCounters::default()),
                })
                .collect()
        })
        .await
    }

    fn forwarding(&self) -> Option<&dyn PortForwarding> {
        Some(self)
    }

    fn tables(&self) -> Option<&dyn Tables> {
        Some(self)
    }

    fn log(&self) -> Option<&dyn DatapathLog> {
        Some(self)
    }

    fn events(&self) -> Option<&dyn DatapathEvents> {
        Some(self)
    }

    fn capture(&self) -> Option<&dyn DatapathCapture> {
        Some(self)
    }

    fn tunnel(&self) -> Option<&dyn Tunnels> {
        // The XDP program has no tunnel path: a VXLAN device gives it no tunnel key.
        (self.program == Program::Tc).then_some(self)
    }

    fn takes(&self, setting: Setting) -> bool {
        // Only a TC program has a choice of redirect (XDP's goes through the devmap).
        setting == Setting::Redirect && self.program == Program::Tc
    }
}
