//! Typed access to one switch's pinned maps.
use std::time::Duration;

use aya::maps::{Array, DevMapHash, HashMap, Map, MapData, MapError, PerCpuArray, PerCpuValues, RingBuf};
use switch_common::{
    FdbEntry, LearnWindow, MAX_PEERS, MacKey, Peer, Port, PortAddrs6, PortStats, SwitchConfig, TABLE_STATS_CONTROLLER,
    TABLE_STATS_DATAPATH, TableStats, TunnelConfig, maps as names,
};

use super::Pins;
use crate::error::{Error, Result, bpf};

/// `bpf_map_update_elem` flag: add the entry only if the key has none (fails with EEXIST).
const BPF_NOEXIST: u64 = 1;

/// The maps of one switch, opened from their pins.
pub struct SwitchMaps {
    fdb: HashMap<MapData, MacKey, FdbEntry>,
    ports: Array<MapData, Port>,
    slots: HashMap<MapData, u32, u32>,
    stats: PerCpuArray<MapData, PortStats>,
    config: Array<MapData, SwitchConfig>,
    devmap: DevMapHash<MapData>,
    bound: HashMap<MapData, MacKey, u32>,
    learned: Array<MapData, LearnWindow>,
    tables: TableCounters,
    /// `None` on a switch pinned before the map existed (its program does not read it).
    bound_ip: Option<HashMap<MapData, u32, u32>>,
    /// `PORT_ADDRS6`; `None` on a switch pinned before it existed, as `bound_ip`.
    addrs6: Option<Array<MapData, PortAddrs6>>,
    /// `BOUND_IP6`; likewise.
    bound_ip6: Option<HashMap<MapData, [u32; 4], u32>>,
}

/// `TABLE_STATS`: what went into and out of FDB and CONNTRACK.
pub struct TableCounters(PerCpuArray<MapData, TableStats>);

impl TableCounters {
    /// Opens the pinned map.
    pub fn open(pins: &Pins) -> Result<Self> {
        Ok(Self(open_as(pins, names::TABLE_STATS)?))
    }

    /// The programs' and the controller's counts, summed over CPUs.
    pub fn total(&self) -> Result<TableStats> {
        let mut sum = TableStats::default();
        for index in [TABLE_STATS_DATAPATH, TABLE_STATS_CONTROLLER] {
            for t in self.0.get(&index, 0).map_err(bpf("reading TABLE_STATS"))?.iter() {
                sum.accumulate(t);
            }
        }
        Ok(sum)
    }

    /// Adds to the controller's counts (kept in CPU 0's copy of its index; commands run one at
    /// a time under the state lock, so the read-modify-write cannot race another writer).
    pub fn count(&mut self, f: impl FnOnce(&mut TableStats)) -> Result<()> {
        let values = self.0.get(&TABLE_STATS_CONTROLLER, 0).map_err(bpf("reading TABLE_STATS"))?;
        let mut values: Vec<TableStats> = values.iter().copied().collect();
        if let Some(first) = values.first_mut() {
            f(first);
        }
        let values = PerCpuValues::try_from(values).map_err(bpf("writing TABLE_STATS"))?;
        self.0.set(TABLE_STATS_CONTROLLER, values, 0).map_err(bpf("writing TABLE_STATS"))
    }
}

/// One of the switch's ring buffers (`EVENTS`, `CAPTURE`), for reading.
pub fn ring(pins: &Pins, name: &'static str) -> Result<RingBuf<MapData>> {
    open_as(pins, name)
}

/// Writes the filter of the running capture.
pub fn set_capture_filter(pins: &Pins, filter: switch_common::capture::Filter) -> Result<()> {
    let mut map: Array<MapData, switch_common::capture::Filter> = open_as(pins, names::CAPTURE_FILTER)?;
    map.set(0, filter, 0).map_err(bpf("writing CAPTURE_FILTER"))
}

/// An event from the bytes of one ring buffer item; `None` for an item of another size (a
/// datapath of another version).
pub fn decode_event(item: &[u8]) -> Option<switch_common::events::Event> {
    (item.len() == std::mem::size_of::<switch_common::events::Event>())
        // SAFETY: `Event` is plain old data of exactly this many bytes (any bit pattern is a
        // valid value); the read makes no assumption about the item's alignment.
        .then(|| unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) })
}

/// Opens pinned map `name` of a switch as the typed map `T`.
pub(super) fn open_as<T: TryFrom<Map, Error = MapError>>(pins: &Pins, name: &str) -> Result<T> {
    let path = pins.map(name);
    let what = || format!("opening pinned map {}", path.display());
    let data = MapData::from_pin(&path).map_err(bpf(what()))?;
    Map::from_map_data(data).map_err(bpf(what()))?.try_into().map_err(bpf(format!("map {name} has an unexpected type")))
}

/// Opens pinned map `name` if it is pinned: one of `loader::LATER_MAPS`, which a switch made
/// by an older binary does not have (nor does its program use it).
pub(super) fn open_optional<T: TryFrom<Map, Error = MapError>>(pins: &Pins, name: &str) -> Result<Option<T>> {
    if !pins.map(name).exists() {
        return Ok(None);
    }
    open_as(pins, name).map(Some)
}

/// One zeroed value per possible CPU, for resetting a per-CPU array entry.
pub(super) fn zeroed_per_cpu<T: aya::Pod + Default + Clone>(what: &str) -> Result<PerCpuValues<T>> {
    let ncpu = aya::util::nr_cpus().map_err(|(what, e)| Error::Io { context: what.to_owned(), source: e })?;
    PerCpuValues::try_from(vec![T::default(); ncpu]).map_err(bpf(format!("zeroing {what}")))
}

/// `Ok(None)` for "no such key", the error otherwise.
fn optional<T>(r: Result<T, MapError>, what: &str) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(bpf(what.to_owned())(e)),
    }
}

impl SwitchMaps {
    /// Opens every map of the switch.
    pub fn open(pins: &Pins) -> Result<Self> {
        Ok(Self {
            fdb: open_as(pins, names::FDB)?,
            ports: open_as(pins, names::PORTS)?,
            slots: open_as(pins, names::PORT_SLOTS)?,
            stats: open_as(pins, names::STATS)?,
            config: open_as(pins, names::CONFIG)?,
            devmap: open_as(pins, names::PORT_DEVMAP)?,
            bound: open_as(pins, names::BOUND)?,
            learned: open_as(pins, names::LEARNED)?,
            tables: TableCounters::open(pins)?,
            bound_ip: open_optional(pins, names::BOUND_IP)?,
            addrs6: open_optional(pins, names::PORT_ADDRS6)?,
            bound_ip6: open_optional(pins, names::BOUND_IP6)?,
        })
    }

    /// The switch-wide settings.
    pub fn config(&self) -> Result<SwitchConfig> {
        self.config.get(&0, 0).map_err(bpf("reading CONFIG"))
    }

    /// Replaces the switch-wide settings.
    pub fn set_config(&mut self, cfg: SwitchConfig) -> Result<()> {
        self.config.set(0, cfg, 0).map_err(bpf("writing CONFIG"))
    }

    /// Ageing time.
    pub fn ageing(&self) -> Result<Duration> {
        Ok(Duration::from_nanos(self.config()?.ageing_ns))
    }

    /// Makes `ifindex` port `slot` with `port`'s flags and binding: the bound MAC claimed
    /// first (a MAC another port holds refuses the port before anything changed), counters
    /// and learning window zeroed, the bound address recorded, then the ifindex lookup, then
    /// the flood list (so a frame flooded to the port can already be counted), then the loop
    /// bound.
    pub fn add_port(&mut self, slot: u32, ifindex: u32, port: Port, addrs6: PortAddrs6) -> Result<()> {
        self.claim_bound(slot, port.mac)?;
        if let Some(a) = self.addrs6.as_mut() {
            a.set(slot, addrs6, 0).map_err(bpf("writing PORT_ADDRS6"))?;
        }
        if let Some(b) = self.bound_ip6.as_mut() {
            for addr in [addrs6.ip, addrs6.link_local].into_iter().filter(|a| *a != [0; 4]) {
                b.insert(addr, slot, 0).map_err(bpf("writing BOUND_IP6"))?;
            }
        }
        let zeros = zeroed_per_cpu::<PortStats>(names::STATS)?;
        self.stats.set(slot, zeros, 0).map_err(bpf("zeroing STATS"))?;
        self.learned.set(slot, LearnWindow::default(), 0).map_err(bpf("zeroing LEARNED"))?;
        // `claim_bound` released the slot's old addresses with its old MACs.
        if let Some(bound_ip) = self.bound_ip.as_mut().filter(|_| port.ip != 0) {
            bound_ip.insert(port.ip, slot, 0).map_err(bpf("writing BOUND_IP"))?;
        }
        // The devmap is only read by the XDP program; keeping it filled for every switch keeps
        // one port-registration path.
        self.devmap.insert(ifindex, ifindex, None, 0).map_err(bpf("writing PORT_DEVMAP"))?;
        self.slots.insert(ifindex, slot, 0).map_err(bpf("writing PORT_SLOTS"))?;
        self.ports.set(slot, Port { ifindex, slot, ..port }, 0).map_err(bpf("writing PORTS"))?;
        let mut cfg = self.config()?;
        cfg.slot_limit = cfg.slot_limit.max(slot + 1);
        if port.flags & switch_common::PORT_F_HOST != 0 {
            cfg.gateway_slot = slot + 1;
        }
        self.set_config(cfg)
    }

    /// Removes port `slot` (whatever ifindex it had): out of the flood list first, then the
    /// ifindex lookup, then every FDB entry pointing at it. `slot_limit` is recomputed.
    pub fn remove_port(&mut self, slot: u32) -> Result<()> {
        self.ports.set(slot, Port::default(), 0).map_err(bpf("writing PORTS"))?;
        if let Some(a) = self.addrs6.as_mut() {
            a.set(slot, PortAddrs6::default(), 0).map_err(bpf("writing PORT_ADDRS6"))?;
        }
        self.release_bound(slot);
        let stale: Vec<u32> =
            self.slots.iter().filter_map(|r| r.ok()).filter(|&(_, s)| s == slot).map(|(ifindex, _)| ifindex).collect();
        for ifindex in &stale {
            let _ = self.slots.remove(ifindex);
            let _ = self.devmap.remove(*ifindex);
        }
        self.flush_fdb(|e| stale.contains(&e.ifindex))?;
        let limit = (0..switch_common::MAX_PORTS)
            .rev()
            .find(|&s| self.ports.get(&s, 0).map(|p| p.ifindex != 0).unwrap_or(false))
            .map_or(0, |s| s + 1);
        let mut cfg = self.config()?;
        cfg.slot_limit = limit;
        if cfg.gateway_slot == slot + 1 {
            cfg.gateway_slot = 0;
        }
        self.set_config(cfg)
    }

    /// How many FDB entries are live (younger than `ageing` at `now`, or static) and how many
    /// are present, without changing anything.
    pub fn fdb_fill(&self, now: u64, ageing: u64) -> Result<(usize, usize)> {
        let entries = self.fdb_entries()?;
        Ok((entries.iter().filter(|(_, e)| !e.is_expired(now, ageing)).count(), entries.len()))
    }

    /// Reserves `mac` (none: `[0; 6]`) for `slot`, and only it. The entry is added only where
    /// there is none (BPF_NOEXIST): an entry of another slot is that port's MAC, and
    /// overwriting it would hand its frames to this one, so it refuses the port instead. An
    /// entry that is already this slot's (the same port made again) is kept.
    fn claim_bound(&mut self, slot: u32, mac: [u8; 6]) -> Result<()> {
        if mac != [0; 6] {
            let key = MacKey::new(mac);
            match self.bound.insert(key, slot, BPF_NOEXIST) {
                Ok(()) => {}
                Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {
                    match optional(self.bound.get(&key, 0), "reading BOUND")? {
                        Some(holder) if holder != slot => {
                            return Err(Error::DuplicateMac {
                                mac: crate::names::Mac(mac).to_string(),
                                holder: format!("port {holder} of the switch (its reserved MAC)"),
                            });
                        }
                        Some(_) => {}
                        // Released meanwhile: nobody holds it now.
                        None => self.bound.insert(key, slot, BPF_NOEXIST).map_err(bpf("writing BOUND"))?,
                    }
                }
                Err(e) => return Err(bpf("writing BOUND")(e)),
            }
        }
        self.release_bound_except(slot, mac);
        Ok(())
    }

    /// Forgets the MACs and addresses bound to `slot`.
    fn release_bound(&mut self, slot: u32) {
        self.release_bound_except(slot, [0; 6]);
    }

    /// Forgets the MACs bound to `slot` but `keep`, and the addresses bound to it.
    fn release_bound_except(&mut self, slot: u32, keep: [u8; 6]) {
        let mine: Vec<MacKey> = self
            .bound
            .iter()
            .filter_map(|r| r.ok())
            .filter(|&(k, s)| s == slot && k != MacKey::new(keep))
            .map(|(k, _)| k)
            .collect();
        for k in &mine {
            let _ = self.bound.remove(k);
        }
        if let Some(bound_ip) = &mut self.bound_ip {
            let mine: Vec<u32> =
                bound_ip.iter().filter_map(|r| r.ok()).filter(|&(_, s)| s == slot).map(|(k, _)| k).collect();
            for k in &mine {
                let _ = bound_ip.remove(k);
            }
        }
        if let Some(bound_ip6) = &mut self.bound_ip6 {
            let mine: Vec<[u32; 4]> =
                bound_ip6.iter().filter_map(|r| r.ok()).filter(|&(_, s)| s == slot).map(|(k, _)| k).collect();
            for k in &mine {
                let _ = bound_ip6.remove(k);
            }
        }
    }

    /// Every FDB entry.
    pub fn fdb_entries(&self) -> Result<Vec<(MacKey, FdbEntry)>> {
        super::batch::entries(&self.fdb).map_err(bpf("reading FDB"))
    }

    /// Deletes the FDB entries matching `pred`; returns how many entries are left (one walk of
    /// the table serves both).
    pub fn flush_fdb(&mut self, pred: impl Fn(&FdbEntry) -> bool) -> Result<usize> {
        let entries = self.fdb_entries()?;
        let doomed: Vec<&MacKey> = entries.iter().filter(|(_, e)| pred(e)).map(|(k, _)| k).collect();
        // An entry the datapath deleted meanwhile is not counted twice.
        let removed = doomed.iter().filter(|k| self.fdb.remove(k).is_ok()).count();
        if removed > 0 {
            self.tables.count(|t| t.fdb_removed += removed as u64)?;
        }
        Ok(entries.len() - doomed.len())
    }

    /// The FDB entry of `mac`.
    pub fn fdb_get(&self, mac: [u8; 6]) -> Result<Option<FdbEntry>> {
        optional(self.fdb.get(&MacKey::new(mac), 0), "reading FDB")
    }

    /// Adds or replaces an FDB entry.
    pub fn fdb_insert(&mut self, mac: [u8; 6], entry: FdbEntry) -> Result<()> {
        let new = self.fdb_get(mac)?.is_none();
        self.fdb.insert(MacKey::new(mac), entry, 0).map_err(bpf("writing FDB"))?;
        if new {
            self.tables.count(|t| t.fdb_added += 1)?;
        }
        Ok(())
    }

    /// Deletes an FDB entry; returns whether it existed.
    pub fn fdb_remove(&mut self, mac: [u8; 6]) -> Result<bool> {
        let existed = optional(self.fdb.remove(&MacKey::new(mac)), "deleting from FDB")?.is_some();
        if existed {
            self.tables.count(|t| t.fdb_removed += 1)?;
        }
        Ok(existed)
    }

    /// The table counters.
    pub fn tables(&self) -> Result<TableStats> {
        self.tables.total()
    }

    /// Counters of port `slot`, summed over CPUs.
    pub fn port_stats(&self, slot: u32) -> Result<PortStats> {
        let per_cpu = self.stats.get(&slot, 0).map_err(bpf("reading STATS"))?;
        let mut sum = PortStats::default();
        for s in per_cpu.iter() {
            sum.accumulate(s);
        }
        Ok(sum)
    }

    /// The port in `slot`.
    pub fn port(&self, slot: u32) -> Result<Port> {
        self.ports.get(&slot, 0).map_err(bpf("reading PORTS"))
    }

    /// The slot of `ifindex`, if it is a port.
    pub fn slot_of(&self, ifindex: u32) -> Result<Option<u32>> {
        optional(self.slots.get(&ifindex, 0), "reading PORT_SLOTS")
    }
}

/// The tunnel port's maps: its settings and its peers.
pub struct TunnelMaps {
    config: Array<MapData, TunnelConfig>,
    peers: Array<MapData, Peer>,
    slots: HashMap<MapData, u32, u32>,
    /// Each peer's learning window; `None` on a switch pinned before the map existed.
    learned: Option<HashMap<MapData, u32, LearnWindow>>,
}

impl TunnelMaps {
    /// Opens the pinned maps.
    pub fn open(pins: &Pins) -> Result<Self> {
        Ok(Self {
            config: open_as(pins, names::TUNNEL)?,
            peers: open_as(pins, names::PEERS)?,
            slots: open_as(pins, names::PEER_SLOTS)?,
            learned: open_optional(pins, names::PEER_LEARNED)?,
        })
    }

    /// The tunnel's settings.
    pub fn config(&self) -> Result<TunnelConfig> {
        self.config.get(&0, 0).map_err(bpf("reading TUNNEL"))
    }

    /// Writes the tunnel's settings, keeping the peer count.
    pub fn set_config(&mut self, cfg: TunnelConfig) -> Result<()> {
        let peer_limit = self.config()?.peer_limit;
        self.config.set(0, TunnelConfig { peer_limit, ..cfg }, 0).map_err(bpf("writing TUNNEL"))
    }

    /// Each peer's (address, new stations learned in its window at `now`): a window older than
    /// `ageing_ns` counts as empty, as the datapath starts it again with the next new station.
    /// Empty on a switch pinned before the map existed.
    pub fn learned(&self, now: u64, ageing_ns: u64) -> Vec<(u32, u32)> {
        let Some(learned) = &self.learned else { return vec![] };
        let live = |w: &LearnWindow| if now > w.start_ns.saturating_add(ageing_ns) { 0 } else { w.learned };
        learned.iter().filter_map(|r| r.ok()).map(|(addr, w)| (addr, live(&w))).collect()
    }

    /// Makes the peer list `peers` (addresses in network order), in that order, and forgets
    /// any other. A new peer gets an empty learning window, then is admitted, before floods
    /// reach it; a peer gone stops receiving floods before its frames stop being taken, and
    /// its window goes last (a peer added again starts afresh).
    pub fn set_peers(&mut self, peers: &[u32]) -> Result<()> {
        if peers.len() > MAX_PEERS as usize {
            return Err(Error::Command(format!("a tunnel has at most {MAX_PEERS} peers")));
        }
        if let Some(learned) = &mut self.learned {
            for addr in peers {
                // A peer already there keeps its window: re-listing peers resets no limit.
                if learned.get(addr, 0).is_err() {
                    learned.insert(addr, LearnWindow::default(), 0).map_err(bpf("writing PEER_LEARNED"))?;
                }
            }
        }
        for (slot, addr) in peers.iter().enumerate() {
            self.slots.insert(addr, slot as u32, 0).map_err(bpf("writing PEER_SLOTS"))?;
        }
        for slot in 0..MAX_PEERS {
            let addr = peers.get(slot as usize).copied().unwrap_or(0);
            self.peers.set(slot, Peer { addr, pad: 0 }, 0).map_err(bpf("writing PEERS"))?;
        }
        let mut cfg = self.config()?;
        cfg.peer_limit = peers.len() as u32;
        self.config.set(0, cfg, 0).map_err(bpf("writing TUNNEL"))?;
        let stale: Vec<u32> = self.slots.keys().filter_map(|k| k.ok()).filter(|a| !peers.contains(a)).collect();
        for addr in stale {
            let _ = self.slots.remove(&addr);
        }
        if let Some(learned) = &mut self.learned {
            let stale: Vec<u32> = learned.keys().filter_map(|k| k.ok()).filter(|a| !peers.contains(a)).collect();
            for addr in stale {
                let _ = learned.remove(&addr);
            }
        }
        Ok(())
    }
}
