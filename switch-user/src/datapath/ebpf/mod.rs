//! The eBPF datapaths (tc and xdp: two modes of one implementation): loading the programs,
//! pinning them under `/sys/fs/bpf/switch/NAME/`, attaching them to ports and uplinks, and
//! typed access to their maps.
//!
//! ```text
//! /sys/fs/bpf/switch/NAME/
//!   prog_ingress | prog_xdp        the switching program (TC or XDP; one instance per
//!                                  switch: switches share nothing)
//!   prog_nat_in  prog_nat_out      port forwarding on the uplinks' TCX ingress and egress
//!   prog_nat_gateway               the reply shortcut on the gateway's host end
//!   prog_gateway_egress            the segment's guard on the gateway's host end (egress)
//!   prog_sock_connect4 prog_sock_sendmsg4 prog_sock_recvmsg4
//!                                  cgroup socket hooks: host-local and hairpin access
//!   FDB BOUND LEARNED PORTS PORT_SLOTS STATS CONFIG PORT_DEVMAP TABLE_STATS  switching maps
//!   BOUND_IP PEER_LEARNED          the tunnel's port security (later maps: optional)
//!   FORWARDS UPLINK_ADDRS CONNTRACK FWD_STATS NAT_CONFIG UPLINK_BY_IFINDEX
//!   SOCK_ORIG NAT_NETNS                                                      forwarding maps
//!   links/IFNAME                   one link per port (XDP; a tc port's program is a filter of
//!                                  its clsact qdisc, which goes with the port's veth)
//!   links/uplink-{in,out}-IFNAME   the forwarding programs on an uplink
//!   links/gateway-nat-IFNAME       the reply shortcut
//!   links/gateway-guard-IFNAME     the guard (attached with the gateway port)
//!   links/cgroup-sock_*            the socket hooks on the cgroup v2 root
//! ```
//! Everything forwarding needs is pinned, so the datapath runs on after the CLI exits and
//! every later CLI call finds the same state. Removing a link's pin detaches it.
mod batch;
pub mod loader;
pub mod maps;
pub mod nat;

use std::{collections::HashMap, fs, io::Write as _, net::Ipv4Addr, time::Duration};

use async_trait::async_trait;
pub use loader::{Pins, Program};
use maps::{SwitchMaps, TunnelMaps};
use nat::{NatMaps, wire};
use switch_common::{
    CFG_F_CAPTURE, CFG_F_EVENTS, CFG_F_LOG, CFG_F_REDIRECT_PEER, CFG_F_ROUTABLE, FDB_CAPACITY, FDB_F_STATIC, FdbEntry,
    FwdTarget, NAT_F_MASQUERADE, NatConfig, SwitchConfig, TunnelConfig, maps as names,
    nat::{CT_CAPACITY, CT_UNREPLIED_CAPACITY},
};
use tokio::io::unix::AsyncFd;

use super::{
    Datapath, DatapathCapture, DatapathEvents, DatapathLog, FdbEntryView, ForwardCounters, PortCounters,
    PortForwarding, RingSink, SwitchDrops, TableFill, Tables, TablesNow, Tunnels, UplinkSetup, settings::Setting,
};
use crate::{
    error::{Context as _, Error, Result, bpf},
    kind::{Capability, DatapathKind},
    names::Mac,
    state::{ForwardState, PortKind, PortState, Redirect, SwitchState},
    sys::{blocking, clock::now_ns, netlink::Netlink, netns},
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
            pad: 0,
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
            SwitchMaps::open(&pins)?.add_port(slot, ifindex, binding)?;
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

#[async_trait]
impl Tunnels for Ebpf {
    async fn set_peers(&self, peers: &[Ipv4Addr]) -> Result<()> {
        let peers: Vec<u32> = peers.iter().map(|a| wire(*a)).collect();
        let pins = self.pins.clone();
        blocking(move || TunnelMaps::open(&pins)?.set_peers(&peers)).await
    }

    async fn learned(&self) -> Result<HashMap<Ipv4Addr, u32>> {
        let pins = self.pins.clone();
        blocking(move || {
            let ageing = SwitchMaps::open(&pins)?.ageing()?.as_nanos() as u64;
            let windows = TunnelMaps::open(&pins)?.learned(now_ns(), ageing);
            Ok(windows.into_iter().map(|(addr, n)| (Ipv4Addr::from(addr.to_ne_bytes()), n)).collect())
        })
        .await
    }

    async fn forget_peer(&self, addr: Ipv4Addr) -> Result<usize> {
        let remote = wire(addr);
        self.with_maps(move |mut maps| {
            let before = maps.fdb_entries()?.len();
            let left = maps.flush_fdb(|e| e.remote == remote)?;
            Ok(before.saturating_sub(left))
        })
        .await
    }
}

#[async_trait]
impl PortForwarding for Ebpf {
    async fn setup_uplinks(&self, setup: &UplinkSetup) -> Result<()> {
        let nl = Netlink::new()?;
        let mut addrs = vec![];
        let mut sources = vec![];
        for u in &setup.uplinks {
            let idx = nl
                .ifindex(u)
                .await?
                .ok_or_else(|| Error::invalid("uplink interface", u.clone(), "no such interface"))?;
            let a = nl.ipv4_addrs(idx).await?;
            if let Some(first) = a.first() {
                sources.push((idx, *first));
            }
            addrs.extend(a);
        }
        let gateway = setup.gateway;
        let mask = if gateway.prefix == 0 { 0 } else { u32::MAX << (32 - gateway.prefix) };
        // Without masquerade no port is ever picked: no range is needed.
        let (masq_first, masq_count) = if setup.masquerade { masquerade_ports()? } else { (0, 0) };
        let cfg = NatConfig {
            host_netns_cookie: netns::cookie_here()?,
            segment: wire(Ipv4Addr::from(u32::from(gateway.addr) & mask)),
            segment_mask: wire(Ipv4Addr::from(mask)),
            flags: if setup.masquerade { NAT_F_MASQUERADE } else { 0 },
            gateway_ifindex: nl.ifindex(&setup.gateway_if).await?.unwrap_or(0),
            masq_first,
            masq_count,
            gateway_addr: wire(gateway.addr),
        };
        let (pins, uplinks, gateway_if) = (self.pins.clone(), setup.uplinks.clone(), setup.gateway_if.clone());
        blocking(move || {
            let mut maps = NatMaps::open(&pins)?;
            maps.set_config(cfg)?;
            maps.set_uplink_addrs(&addrs)?;
            for (idx, addr) in &sources {
                maps.set_uplink_source(*idx, *addr)?;
            }
            for u in &uplinks {
                pins.attach_uplink(u)?;
            }
            pins.attach_sock_hooks(&cgroup2_root()?)?;
            pins.attach_gateway_nat(&gateway_if)
        })
        .await
    }

    async fn detach_uplink(&self, ifname: &str) -> Result<()> {
        let (pins, ifname) = (self.pins.clone(), ifname.to_owned());
        blocking(move || pins.detach_uplink(&ifname)).await
    }

    async fn allow_netns(&self, cookie: u64) -> Result<()> {
        self.with_nat(move |mut nat| nat.allow_netns(cookie)).await
    }

    async fn write(&self, f: &ForwardState, target: Ipv4Addr, written: fn() -> Result<()>) -> Result<()> {
        let f = f.clone();
        self.with_nat(move |mut maps| {
            maps.reset_stats(f.rule)?;
            for (i, host) in (f.host_first..=f.host_last).enumerate() {
                let to = FwdTarget { addr: wire(target), port: f.ns_first + i as u16, rule: f.rule };
                maps.add(f.proto.number(), host, to)?;
                written()?;
            }
            Ok(())
        })
        .await
    }

    async fn remove(&self, f: &ForwardState) -> Result<()> {
        if !self.pins.complete() {
            return Ok(());
        }
        let f = f.clone();
        self.with_nat(move |mut maps| {
            for host in f.host_first..=f.host_last {
                maps.remove(f.proto.number(), host)?;
            }
            Ok(())
        })
        .await
    }

    async fn forget_connections(&self, addr: Ipv4Addr) -> Result<usize> {
        let pins = self.pins.clone();
        blocking(move || {
            if !pins.complete() {
                // A switch half made or half removed: no table to clean.
                return Ok(0);
            }
            let (answered, unreplied) = NatMaps::open(&pins)?.forget(addr);
            maps::TableCounters::open(&pins)?.count(|t| {
                t.ct_removed += answered as u64;
                t.unreplied_removed += unreplied as u64;
            })?;
            Ok(answered + unreplied)
        })
        .await
    }

    async fn counters(&self, rules: &[u16]) -> Result<ForwardCounters> {
        let rules = rules.to_vec();
        self.with_nat(move |maps| {
            let live = maps.connections()?;
            let mut out = ForwardCounters::default();
            for r in rules {
                out.per_rule.insert(r, maps.stats(r)?);
                out.active.insert(r, live.by_rule.get(&r).copied().unwrap_or(0));
            }
            Ok(out)
        })
        .await
    }
}

#[async_trait]
impl Tables for Ebpf {
    async fn fill(&self) -> Result<Vec<(&'static str, TableFill)>> {
        let pins = self.pins.clone();
        blocking(move || {
            let maps = SwitchMaps::open(&pins)?;
            let nat = NatMaps::open(&pins)?;
            let (now, ageing) = (now_ns(), maps.ageing()?.as_nanos() as u64);
            let (fdb_live, fdb_present) = maps.fdb_fill(now, ageing)?;
            let ct = nat.connections()?;
            let t = maps.tables()?;
            let fill =
                |entries: usize, present: usize, capacity: u32, added: u64, removed: u64, refused: u64| TableFill {
                    entries: entries as u64,
                    present: present as u64,
                    capacity: u64::from(capacity),
                    added,
                    removed,
                    refused,
                };
            Ok(vec![
                ("fdb", fill(fdb_live, fdb_present, FDB_CAPACITY, t.fdb_added, t.fdb_removed, 0)),
                (
                    "conntrack",
                    fill(ct.answered.entries, ct.answered.present, CT_CAPACITY, t.ct_added, t.ct_removed, t.ct_refused),
                ),
                (
                    "unreplied",
                    fill(
                        ct.unreplied.entries,
                        ct.unreplied.present,
                        CT_UNREPLIED_CAPACITY,
                        t.unreplied_added,
                        t.unreplied_removed,
                        0,
                    ),
                ),
            ])
        })
        .await
    }

    async fn drops(&self) -> Result<SwitchDrops> {
        let pins = self.pins.clone();
        blocking(move || {
            let t = SwitchMaps::open(&pins)?.tables()?;
            let present = NatMaps::open(&pins)?.unreplied_present() as u64;
            let evicted =
                TableFill { added: t.unreplied_added, removed: t.unreplied_removed, present, ..Default::default() };
            Ok(SwitchDrops {
                nat_refused: t.ct_refused,
                unsolicited_routed: t.routed_refused,
                unreplied_evicted: evicted.evicted(),
                icmp_refused: t.icmp_refused,
                masquerade_share: t.masq_share_refused,
            })
        })
        .await
    }
}

/// Prints aya-log records as `LEVEL message` lines on stdout.
struct Printer;

impl log::Log for Printer {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{:<5} {}", record.level(), record.args());
    }
    fn flush(&self) {}
}

#[async_trait]
impl DatapathLog for Ebpf {
    /// The programs only log while CFG_F_LOG is set in CONFIG.
    async fn set_logging(&self, on: bool) -> Result<()> {
        self.set_flag(CFG_F_LOG, on).await
    }

    async fn stream(
        &self,
        started: Box<dyn FnOnce() + Send>,
        mut stop: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    ) -> Result<()> {
        let pins = self.pins.clone();
        let id = blocking(move || pins.prog_id()).await?;
        let logger =
            aya_log::EbpfLogger::init_from_id_with_logger(id, Printer).map_err(bpf("opening the datapath log"))?;
        // SAFETY: the logger owns its ring buffer fd and keeps it open, unchanged, for as long
        // as the AsyncFd owns the logger.
        let mut fd = unsafe { AsyncFd::register(logger) }
            .map_err(|e| Error::Io { context: "watching the datapath log".into(), source: e.into() })?;
        started();
        loop {
            tokio::select! {
                _ = &mut stop => return Ok(()),
                guard = fd.readable_mut() => {
                    let mut guard = guard.map_err(|e| Error::Io { context: "reading the datapath log".into(), source: e })?;
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
            }
        }
    }
}

impl Ebpf {
    /// Sets or clears `flag` in CONFIG.
    async fn set_flag(&self, flag: u32, on: bool) -> Result<()> {
        self.with_maps(move |mut maps| {
            let mut cfg = maps.config()?;
            cfg.flags = if on { cfg.flags | flag } else { cfg.flags & !flag };
            maps.set_config(cfg)
        })
        .await
    }
}

#[async_trait]
impl DatapathEvents for Ebpf {
    /// The programs only emit events while CFG_F_EVENTS is set in CONFIG.
    async fn set_events(&self, on: bool) -> Result<()> {
        self.set_flag(CFG_F_EVENTS, on).await
    }

    async fn tables_now(&self) -> Result<TablesNow> {
        let pins = self.pins.clone();
        blocking(move || {
            let maps = SwitchMaps::open(&pins)?;
            let ageing_ns = maps.config()?.ageing_ns;
            let stations = maps.fdb_entries()?.into_iter().filter(|(_, e)| !e.is_static()).map(|(k, e)| (k.addr, e));
            let stations = stations.collect();
            // A switch without port forwarding has empty connection tables.
            let connections = NatMaps::open(&pins).map(|n| n.dnat_entries()).unwrap_or_default();
            Ok(TablesNow { now_ns: now_ns(), ageing_ns, stations, connections })
        })
        .await
    }

    async fn stream(
        &self,
        mut sink: Box<dyn FnMut(switch_common::events::Event) + Send>,
        started: Box<dyn FnOnce() + Send>,
        stop: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    ) -> Result<()> {
        let sink = Box::new(move |item: &[u8]| {
            if let Some(e) = maps::decode_event(item) {
                sink(e);
            }
        });
        self.read_ring(names::EVENTS, "the datapath's events", sink, started, stop).await
    }
}

#[async_trait]
impl DatapathCapture for Ebpf {
    /// The filter first, then the flag: the programs never see the flag with a stale filter.
    async fn set_capture(&self, filter: Option<switch_common::capture::Filter>) -> Result<()> {
        if let Some(filter) = filter {
            let pins = self.pins.clone();
            blocking(move || maps::set_capture_filter(&pins, filter)).await?;
        }
        self.set_flag(CFG_F_CAPTURE, filter.is_some()).await
    }

    async fn stream(
        &self,
        sink: RingSink,
        started: Box<dyn FnOnce() + Send>,
        stop: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    ) -> Result<()> {
        self.read_ring(names::CAPTURE, "captured frames", sink, started, stop).await
    }
}

impl Ebpf {
    /// Hands every item of ring buffer `ring` to `sink` until `stop` resolves, waiting on the
    /// ring's descriptor (epoll) while it is empty.
    async fn read_ring(
        &self,
        ring: &'static str,
        what: &str,
        mut sink: RingSink,
        started: Box<dyn FnOnce() + Send>,
        mut stop: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    ) -> Result<()> {
        let pins = self.pins.clone();
        let ring = blocking(move || maps::ring(&pins, ring)).await?;
        // SAFETY: the ring buffer owns its map fd and keeps it open, unchanged, for as long as
        // the AsyncFd owns the ring buffer.
        let mut fd = unsafe { AsyncFd::register(ring) }
            .map_err(|e| Error::Io { context: format!("watching {what}"), source: e.into() })?;
        started();
        loop {
            tokio::select! {
                _ = &mut stop => return Ok(()),
                guard = fd.readable_mut() => {
                    let mut guard = guard.map_err(|e| Error::Io { context: format!("reading {what}"), source: e })?;
                    // Consuming a ring buffer item is a memory read, not a system call: fine on
                    // a tokio worker.
                    while let Some(item) = guard.get_inner_mut().next() {
                        sink(&item);
                    }
                    guard.clear_ready();
                }
            }
        }
    }
}

/// Fewest masquerade source ports: below this, busy remotes would run out.
const MIN_MASQUERADE_PORTS: u32 = 1024;

/// The source ports masquerade uses: every port above the host's ephemeral range
/// (`net.ipv4.ip_local_port_range`), which the host's own sockets never pick when they
/// connect. A host connection from port P to R:r and a namespace's connection from P to R:r
/// then never share a translated 5-tuple, so the namespace cannot take the host's replies.
/// (Reserving ports with `ip_local_reserved_ports` would change a host-wide setting that
/// several switches share; choosing outside the range changes nothing.)
fn masquerade_ports() -> Result<(u16, u16)> {
    let path = "/proc/sys/net/ipv4/ip_local_port_range";
    let text = fs::read_to_string(path).context(format!("reading {path}"))?;
    masquerade_ports_above(&text)
}

/// `masquerade_ports` for the text of `ip_local_port_range` ("32768\t60999").
fn masquerade_ports_above(range: &str) -> Result<(u16, u16)> {
    let last: u32 = range.split_whitespace().nth(1).and_then(|v| v.parse().ok()).ok_or_else(|| {
        Error::Command(format!("cannot read the host's ephemeral port range from '{}'", range.trim()))
    })?;
    let count = 65_535u32.saturating_sub(last);
    if count < MIN_MASQUERADE_PORTS {
        return Err(Error::Command(format!(
            "the host's ephemeral ports (net.ipv4.ip_local_port_range {}) leave only {count} ports above them for \
             masquerade, which needs {MIN_MASQUERADE_PORTS}: lower the range's end (e.g. sysctl -w \
             net.ipv4.ip_local_port_range=\"32768 60999\") or use --no-masquerade",
            range.split_whitespace().collect::<Vec<_>>().join(" ")
        )));
    }
    Ok(((last + 1) as u16, count as u16))
}

/// Where the cgroup v2 hierarchy is mounted (its root holds every process).
fn cgroup2_root() -> Result<std::path::PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| std::path::PathBuf::from(f[1]))
        })
        .ok_or_else(|| {
            Error::Command("no cgroup v2 hierarchy is mounted (needed for host-local port forwarding)".into())
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn masquerade_ports_lie_above_the_ephemeral_range() {
        assert_eq!(super::masquerade_ports_above("32768\t60999\n").unwrap(), (61000, 4536));
        assert_eq!(super::masquerade_ports_above("1024 64000").unwrap(), (64001, 1535));
        let e = super::masquerade_ports_above("1024\t65000").unwrap_err().to_string();
        assert!(e.contains("only 535 ports") && e.contains("--no-masquerade"), "{e}");
        assert!(super::masquerade_ports_above("garbage").is_err());
    }
}
