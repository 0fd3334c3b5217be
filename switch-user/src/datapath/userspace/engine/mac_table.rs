//! The MAC table (forwarding database): which station is behind which port, and since when.
//!
//! It holds the same [`FdbEntry`] records as the eBPF datapath's FDB map and follows the same
//! rules, so both datapaths learn, move, age and evict alike:
//!
//! - a source is (re)learned only when it is new, has moved, or was last refreshed more than
//!   [`FDB_REFRESH_NS`] ago, so most frames leave the table untouched;
//! - static entries never move and never age;
//! - an expired dynamic entry is ignored on lookup and removed by the next sweep;
//! - a full table evicts its least recently seen dynamic station, as an LRU map would.
//!
//! The table itself knows nothing about locking: the engine keeps it behind one `RwLock`
//! (`Shared::fdb`) and decides a whole batch under one read lock.
use std::collections::HashMap;

use switch_common::{FDB_CAPACITY, FDB_REFRESH_NS, FdbEntry};

/// A port as the FDB and the forwarding decision see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct PortId {
    /// Slot in the switch (the counters' index and the flood order).
    pub(super) slot: u32,
    /// Interface index of the host-side veth.
    pub(super) ifindex: u32,
}

/// The time of a batch and the ageing time, both in nanoseconds on the engine's monotonic clock.
#[derive(Clone, Copy, Debug)]
pub(super) struct Clock {
    pub(super) now: u64,
    pub(super) ageing: u64,
}

/// A learned or static station: the same entry the eBPF FDB holds, plus the port's slot so
/// forwarding needs no second lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Station {
    pub(super) entry: FdbEntry,
    pub(super) slot: u32,
}

impl Station {
    pub(super) fn port(&self) -> PortId {
        PortId { slot: self.slot, ifindex: self.entry.ifindex }
    }
}

/// The forwarding database, shared by all port tasks behind one `RwLock`. Frames only read it
/// unless a source is new, moved or due for a refresh, so the write lock is rare.
#[derive(Debug, Default)]
pub(super) struct Fdb {
    pub(super) stations: HashMap<[u8; 6], Station>,
}

impl Fdb {
    /// Whether learning `src` on `port` at `now` would change the table: a new station, one
    /// that moved, or one whose last-seen time is older than [`FDB_REFRESH_NS`] (refreshing on
    /// every frame would take the write lock on every frame). Static entries never change.
    pub(super) fn wants_learn(&self, src: &[u8; 6], port: PortId, now: u64) -> bool {
        match self.stations.get(src) {
            None => true,
            Some(s) if s.entry.is_static() => false,
            Some(s) if s.entry.ifindex != port.ifindex => true,
            Some(s) => now > s.entry.last_seen_ns.saturating_add(FDB_REFRESH_NS),
        }
    }

    /// Whether learning `src` on `port` would add a station to the port: it is unknown, or a
    /// dynamic entry of another port (a move). What counts against a port's learning limit.
    pub(super) fn is_new_on(&self, src: &[u8; 6], port: PortId) -> bool {
        self.stations.get(src).is_none_or(|s| !s.entry.is_static() && s.entry.ifindex != port.ifindex)
    }

    /// Records that `src` was seen on `port` at `now`.
    pub(super) fn learn(&mut self, src: [u8; 6], port: PortId, now: u64) {
        if self.wants_learn(&src, port, now) {
            let entry = FdbEntry { ifindex: port.ifindex, flags: 0, last_seen_ns: now, remote: 0, pad: 0 };
            self.insert(src, Station { entry, slot: port.slot });
        }
    }

    /// Adds or replaces `mac`. A full table (as many stations as the eBPF LRU map holds) makes
    /// room by evicting the least recently seen dynamic station, as the LRU map would.
    pub(super) fn insert(&mut self, mac: [u8; 6], station: Station) {
        if self.stations.len() >= FDB_CAPACITY as usize && !self.stations.contains_key(&mac) {
            let oldest = self
                .stations
                .iter()
                .filter(|(_, s)| !s.entry.is_static())
                .min_by_key(|(_, s)| s.entry.last_seen_ns)
                .map(|(m, _)| *m);
            if let Some(m) = oldest {
                self.stations.remove(&m);
            }
        }
        self.stations.insert(mac, station);
    }

    /// The station `dst`, unless unknown or expired.
    pub(super) fn lookup(&self, dst: &[u8; 6], clock: Clock) -> Option<Station> {
        self.stations.get(dst).filter(|s| !s.entry.is_expired(clock.now, clock.ageing)).copied()
    }

    /// Removes expired dynamic entries.
    pub(super) fn sweep(&mut self, clock: Clock) {
        self.stations.retain(|_, s| !s.entry.is_expired(clock.now, clock.ageing));
    }

    /// Removes every entry (static too) behind the port with `ifindex`.
    pub(super) fn forget_port(&mut self, ifindex: u32) {
        self.stations.retain(|_, s| s.entry.ifindex != ifindex);
    }
}

/// Stations, ports and clocks shared by the unit tests of the table and of the decision.
#[cfg(test)]
pub(super) mod fixtures {
    use super::{Clock, Fdb, PortId, Station};

    pub const A: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa];
    pub const B: [u8; 6] = [0x02, 0, 0, 0, 0, 0xb];
    pub const C: [u8; 6] = [0x02, 0, 0, 0, 0, 0xc];
    pub const P1: PortId = PortId { slot: 0, ifindex: 11 };
    pub const P2: PortId = PortId { slot: 1, ifindex: 12 };
    pub const SEC: u64 = 1_000_000_000;

    /// `now` with the default ageing time of 300 s.
    pub fn clock(now: u64) -> Clock {
        Clock { now, ageing: 300 * SEC }
    }

    pub fn station(fdb: &Fdb, mac: [u8; 6]) -> Station {
        fdb.stations[&mac]
    }
}

#[cfg(test)]
mod tests {
    use switch_common::FDB_F_STATIC;

    use super::{fixtures::*, *};

    #[test]
    fn learning_refreshes_at_most_once_per_interval() {
        let mut fdb = Fdb::default();
        assert!(fdb.wants_learn(&A, P1, 5));
        fdb.learn(A, P1, 5);
        assert_eq!(
            station(&fdb, A).entry,
            FdbEntry { ifindex: P1.ifindex, flags: 0, last_seen_ns: 5, remote: 0, pad: 0 }
        );
        assert!(!fdb.wants_learn(&A, P1, 5 + FDB_REFRESH_NS));
        fdb.learn(A, P1, 5 + FDB_REFRESH_NS);
        assert_eq!(station(&fdb, A).entry.last_seen_ns, 5);
        assert!(fdb.wants_learn(&A, P1, 6 + FDB_REFRESH_NS));
        fdb.learn(A, P1, 6 + FDB_REFRESH_NS);
        assert_eq!(station(&fdb, A).entry.last_seen_ns, 6 + FDB_REFRESH_NS);
    }

    #[test]
    fn full_table_evicts_the_coldest_dynamic_station() {
        let mut fdb = Fdb::default();
        let entry = FdbEntry { ifindex: P1.ifindex, flags: FDB_F_STATIC, last_seen_ns: 0, remote: 0, pad: 0 };
        fdb.insert(A, Station { entry, slot: P1.slot });
        for i in 1..FDB_CAPACITY {
            let mac = [0x06, 0, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8];
            fdb.learn(mac, P2, u64::from(i) + 10);
        }
        assert_eq!(fdb.stations.len(), FDB_CAPACITY as usize);
        fdb.learn(C, P2, SEC);
        assert_eq!(fdb.stations.len(), FDB_CAPACITY as usize);
        assert!(fdb.stations.contains_key(&C));
        assert!(fdb.stations.contains_key(&A), "static entries are never evicted");
        assert!(!fdb.stations.contains_key(&[0x06, 0, 0, 0, 0, 1]), "the coldest one goes");
    }

    #[test]
    fn forget_port_removes_static_and_dynamic_entries() {
        let mut fdb = Fdb::default();
        fdb.learn(A, P1, 0);
        fdb.learn(B, P2, 0);
        fdb.insert(
            C,
            Station {
                entry: FdbEntry { ifindex: P1.ifindex, flags: FDB_F_STATIC, last_seen_ns: 0, remote: 0, pad: 0 },
                slot: 0,
            },
        );
        fdb.forget_port(P1.ifindex);
        assert_eq!(fdb.stations.keys().collect::<Vec<_>>(), vec![&B]);
    }
}
