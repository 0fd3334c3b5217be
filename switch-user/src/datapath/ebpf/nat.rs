//! Typed access to the port-forwarding maps of one switch.
use std::net::Ipv4Addr;

use aya::maps::{Array, HashMap, MapData, PerCpuArray};
use switch_common::{CtEntry, CtKey, FwdKey, FwdStats, FwdTarget, NatConfig, maps as names, nat::CT_DNAT};

use super::{
    Pins,
    batch::entries,
    maps::{open_as, zeroed_per_cpu},
};
use crate::{
    error::{Result, bpf},
    sys::clock::now_ns,
};

/// The forwarding maps of one switch, opened from their pins.
pub struct NatMaps {
    forwards: HashMap<MapData, FwdKey, FwdTarget>,
    uplink_addrs: HashMap<MapData, u32, u32>,
    conntrack: HashMap<MapData, CtKey, CtEntry>,
    unreplied: HashMap<MapData, CtKey, CtEntry>,
    stats: PerCpuArray<MapData, FwdStats>,
    config: Array<MapData, NatConfig>,
    by_ifindex: HashMap<MapData, u32, u32>,
    netns: HashMap<MapData, u64, u32>,
}

/// An address as the datapath keeps it: the on-the-wire bytes read as a native u32.
pub fn wire(addr: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

impl NatMaps {
    /// Opens the maps.
    pub fn open(pins: &Pins) -> Result<Self> {
        Ok(Self {
            forwards: open_as(pins, names::FORWARDS)?,
            uplink_addrs: open_as(pins, names::UPLINK_ADDRS)?,
            conntrack: open_as(pins, names::CONNTRACK)?,
            unreplied: open_as(pins, names::CT_UNREPLIED)?,
            stats: open_as(pins, names::FWD_STATS)?,
            config: open_as(pins, names::NAT_CONFIG)?,
            by_ifindex: open_as(pins, names::UPLINK_BY_IFINDEX)?,
            netns: open_as(pins, names::NAT_NETNS)?,
        })
    }

    /// Lets sockets of namespace `cookie` (a port of the switch) reach forwards directly.
    pub fn allow_netns(&mut self, cookie: u64) -> Result<()> {
        self.netns.insert(cookie, 1, 0).map_err(bpf("writing NAT_NETNS"))
    }

    /// Forgets namespace `cookie`.
    pub fn forget_netns(&mut self, cookie: u64) {
        let _ = self.netns.remove(&cookie);
    }

    /// Replaces the NAT settings.
    pub fn set_config(&mut self, cfg: NatConfig) -> Result<()> {
        self.config.set(0, cfg, 0).map_err(bpf("writing NAT_CONFIG"))
    }

    /// Records the masquerade source of uplink `ifindex`.
    pub fn set_uplink_source(&mut self, ifindex: u32, addr: Ipv4Addr) -> Result<()> {
        self.by_ifindex.insert(ifindex, wire(addr), 0).map_err(bpf("writing UPLINK_BY_IFINDEX"))
    }

    /// Forwards host port `port` of `proto` to `target`. Counters of a new rule start at zero.
    pub fn add(&mut self, proto: u8, port: u16, target: FwdTarget) -> Result<()> {
        self.forwards.insert(FwdKey { port, proto, pad: 0 }, target, 0).map_err(bpf("writing FORWARDS"))
    }

    /// Zeroes the counters of `rule`.
    pub fn reset_stats(&mut self, rule: u16) -> Result<()> {
        let zeros = zeroed_per_cpu::<FwdStats>(names::FWD_STATS)?;
        self.stats.set(u32::from(rule), zeros, 0).map_err(bpf("zeroing FWD_STATS"))
    }

    /// Deletes every forward `keep` says no to; returns how many.
    pub fn retain_forwards(&mut self, keep: impl Fn(&FwdKey) -> bool) -> Result<usize> {
        let doomed: Vec<FwdKey> = self.forwards.keys().filter_map(|k| k.ok()).filter(|k| !keep(k)).collect();
        for k in &doomed {
            let _ = self.forwards.remove(k);
        }
        Ok(doomed.len())
    }

    /// Stops forwarding host port `port` of `proto` (existing connections go on).
    pub fn remove(&mut self, proto: u8, port: u16) -> Result<()> {
        let _ = self.forwards.remove(&FwdKey { port, proto, pad: 0 });
        Ok(())
    }

    /// Makes the forwards answer on exactly `addrs`.
    pub fn set_uplink_addrs(&mut self, addrs: &[Ipv4Addr]) -> Result<()> {
        let keep: Vec<u32> = addrs.iter().map(|a| wire(*a)).collect();
        let old: Vec<u32> = self.uplink_addrs.keys().filter_map(|k| k.ok()).collect();
        for k in old.iter().filter(|k| !keep.contains(k)) {
            let _ = self.uplink_addrs.remove(k);
        }
        for k in keep {
            self.uplink_addrs.insert(k, 1, 0).map_err(bpf("writing UPLINK_ADDRS"))?;
        }
        Ok(())
    }

    /// Counters of `rule`, summed over CPUs.
    pub fn stats(&self, rule: u16) -> Result<FwdStats> {
        let mut sum = FwdStats::default();
        for s in self.stats.get(&u32::from(rule), 0).map_err(bpf("reading FWD_STATS"))?.iter() {
            sum.accumulate(s);
        }
        Ok(sum)
    }

    /// Deletes the entries of both connection tables that involve `addr` (an end of the
    /// connection, or what the entry translates to); returns how many went from each
    /// (answered, unreplied).
    pub fn forget(&mut self, addr: Ipv4Addr) -> (usize, usize) {
        let a = wire(addr);
        let mut gone = [0usize; 2];
        for (i, map) in [&mut self.conntrack, &mut self.unreplied].into_iter().enumerate() {
            // A table that cannot be read has nothing found to forget.
            let doomed: Vec<CtKey> = entries(map)
                .unwrap_or_default()
                .into_iter()
                .filter(|(k, e)| k.src == a || k.dst == a || e.addr == a)
                .map(|(k, _)| k)
                .collect();
            // An entry the datapath replaced or evicted meanwhile is not counted.
            gone[i] = doomed.iter().filter(|k| map.remove(k).is_ok()).count();
        }
        (gone[0], gone[1])
    }

    /// Every connection of both tables by its `CT_DNAT` entry (one per connection), expired
    /// ones too.
    pub fn dnat_entries(&self) -> std::collections::HashMap<CtKey, CtEntry> {
        let mut all = std::collections::HashMap::new();
        for map in [&self.unreplied, &self.conntrack] {
            all.extend(entries(map).unwrap_or_default().into_iter().filter(|(_, e)| e.nat == CT_DNAT));
        }
        all
    }

    /// Entries in `CT_UNREPLIED`, expired ones included (a walk of that table alone).
    pub fn unreplied_present(&self) -> usize {
        entries(&self.unreplied).map_or(0, |e| e.len())
    }

    /// One walk of both connection tables, changing nothing: live connections per rule (each
    /// counted once, by its `CT_DNAT` entry), and per table live entries (both directions of
    /// each connection) and entries present (expired ones too: the programs replace them when
    /// the connection comes back, the LRU evicts them first).
    pub fn connections(&self) -> Result<Live> {
        let now = now_ns();
        let mut live = Live::default();
        for (map, fill) in [(&self.conntrack, &mut live.answered), (&self.unreplied, &mut live.unreplied)] {
            for (_, e) in entries(map).map_err(bpf("reading the connection table"))? {
                fill.present += 1;
                if e.is_expired(now) {
                    continue;
                }
                fill.entries += 1;
                if e.nat == CT_DNAT {
                    *live.by_rule.entry(e.rule).or_insert(0) += 1;
                }
            }
        }
        Ok(live)
    }
}

/// What is live in the connection tables.
#[derive(Debug, Default)]
pub struct Live {
    /// Connections per forward rule.
    pub by_rule: std::collections::HashMap<u16, u64>,
    /// CONNTRACK: answered connections.
    pub answered: Fill,
    /// CT_UNREPLIED: connections waiting for their first answer.
    pub unreplied: Fill,
}

/// Entries of one connection table.
#[derive(Debug, Default)]
pub struct Fill {
    /// Live entries (two per connection).
    pub entries: usize,
    /// Entries in the map, expired ones included.
    pub present: usize,
}
