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
//! Concurrency: every lane reads the table for every frame, and writes it only for a new, moved
//! or stale source (a few times a second per station at most). So the table is a lock-free
//! concurrent map (`papaya`): a reader ([`FdbView`], one per batch) never takes a lock and
//! never waits for a writer, whatever the writers do. Writers ([`FdbWriter`]) take one small
//! mutex among themselves, because some of their changes are several steps that must not
//! interleave with another writer's: evicting the coldest station to make room, or checking
//! that a port still exists before learning on it. Readers may see such a change half done
//! (an eviction before its insert), which costs at most one flooded frame.
use std::sync::{Mutex, MutexGuard, PoisonError};

use papaya::{HashMap, HashMapRef, LocalGuard};
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

/// The forwarding database, shared by every lane: read without locks, written by one writer at
/// a time.
#[derive(Debug, Default)]
pub(super) struct Fdb {
    stations: HashMap<[u8; 6], Station>,
    /// Held by the one [`FdbWriter`] at a time.
    writer: Mutex<()>,
}

impl Fdb {
    /// A view for reading, e.g. for deciding one batch. It holds no lock: it only keeps the
    /// entries it may return from being freed while it lives, so keep it short-lived.
    pub(super) fn read(&self) -> FdbView<'_> {
        FdbView { stations: self.stations.pin() }
    }

    /// The writer, once the writers before it are done. Readers go on meanwhile.
    pub(super) fn write(&self) -> FdbWriter<'_> {
        // A panic elsewhere cannot leave the table half-updated for another writer (each step
        // is one insert, remove or retain of the map), so a poisoned lock is still good to use.
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        FdbWriter { view: self.read(), _writer }
    }
}

/// A reader of the table: lookups and the questions learning asks, without locking.
pub(super) struct FdbView<'a> {
    stations: HashMapRef<'a, [u8; 6], Station, std::hash::RandomState, LocalGuard<'a>>,
}

impl FdbView<'_> {
    /// Whether learning `src` on `port` at `now` would change the table: a new station, one
    /// that moved, or one whose last-seen time is older than [`FDB_REFRESH_NS`] (refreshing on
    /// every frame would write the table for every frame). Static entries never change.
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

    /// The station `dst`, unless unknown or expired.
    pub(super) fn lookup(&self, dst: &[u8; 6], clock: Clock) -> Option<Station> {
        self.stations.get(dst).filter(|s| !s.entry.is_expired(clock.now, clock.ageing)).copied()
    }

    /// The station `mac`, expired or not.
    #[cfg(test)]
    pub(super) fn get(&self, mac: &[u8; 6]) -> Option<Station> {
        self.stations.get(mac).copied()
    }

    /// Every entry, expired ones included.
    pub(super) fn entries(&self) -> impl Iterator<Item = ([u8; 6], Station)> + '_ {
        self.stations.iter().map(|(mac, s)| (*mac, *s))
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.stations.len()
    }
}

/// The one writer of the table at a time (see [`Fdb::write`]); reads like a [`FdbView`].
pub(super) struct FdbWriter<'a> {
    view: FdbView<'a>,
    _writer: MutexGuard<'a, ()>,
}

impl<'a> std::ops::Deref for FdbWriter<'a> {
    type Target = FdbView<'a>;

    fn deref(&self) -> &Self::Target {
        &self.view
    }
}

impl FdbWriter<'_> {
    /// Records that `src` was seen on `port` at `now`.
    pub(super) fn learn(&self, src: [u8; 6], port: PortId, now: u64) {
        if self.wants_learn(&src, port, now) {
            let entry = FdbEntry { ifindex: port.ifindex, flags: 0, last_seen_ns: now, remote: 0, pad: 0 };
            self.insert(src, Station { entry, slot: port.slot });
        }
    }

    /// Adds or replaces `mac`. A full table (as many stations as the eBPF LRU map holds) makes
    /// room by evicting the least recently seen dynamic station, as the LRU map would.
    pub(super) fn insert(&self, mac: [u8; 6], station: Station) {
        let stations = &self.view.stations;
        if stations.len() >= FDB_CAPACITY as usize && !stations.contains_key(&mac) {
            let oldest = stations
                .iter()
                .filter(|(_, s)| !s.entry.is_static())
                .min_by_key(|(_, s)| s.entry.last_seen_ns)
                .map(|(m, _)| *m);
            if let Some(m) = oldest {
                stations.remove(&m);
            }
        }
        stations.insert(mac, station);
    }

    /// Removes `mac`; returns whether it was there.
    pub(super) fn remove(&self, mac: &[u8; 6]) -> bool {
        self.view.stations.remove(mac).is_some()
    }

    /// Removes expired dynamic entries.
    pub(super) fn sweep(&self, clock: Clock) {
        self.view.stations.retain(|_, s| !s.entry.is_expired(clock.now, clock.ageing));
    }

    /// Removes every entry (static too) behind the port with `ifindex`.
    pub(super) fn forget_port(&self, ifindex: u32) {
        self.view.stations.retain(|_, s| s.entry.ifindex != ifindex);
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
        fdb.read().get(&mac).expect("a station")
    }

    pub fn has(fdb: &Fdb, mac: [u8; 6]) -> bool {
        fdb.read().get(&mac).is_some()
    }
}

#[cfg(test)]
mod tests {
    use switch_common::FDB_F_STATIC;

    use super::{fixtures::*, *};

    #[test]
    fn learning_refreshes_at_most_once_per_interval() {
        let fdb = Fdb::default();
        assert!(fdb.read().wants_learn(&A, P1, 5));
        fdb.write().learn(A, P1, 5);
        assert_eq!(
            station(&fdb, A).entry,
            FdbEntry { ifindex: P1.ifindex, flags: 0, last_seen_ns: 5, remote: 0, pad: 0 }
        );
        assert!(!fdb.read().wants_learn(&A, P1, 5 + FDB_REFRESH_NS));
        fdb.write().learn(A, P1, 5 + FDB_REFRESH_NS);
        assert_eq!(station(&fdb, A).entry.last_seen_ns, 5);
        assert!(fdb.read().wants_learn(&A, P1, 6 + FDB_REFRESH_NS));
        fdb.write().learn(A, P1, 6 + FDB_REFRESH_NS);
        assert_eq!(station(&fdb, A).entry.last_seen_ns, 6 + FDB_REFRESH_NS);
    }

    #[test]
    fn full_table_evicts_the_coldest_dynamic_station() {
        let fdb = Fdb::default();
        let writer = fdb.write();
        let entry = FdbEntry { ifindex: P1.ifindex, flags: FDB_F_STATIC, last_seen_ns: 0, remote: 0, pad: 0 };
        writer.insert(A, Station { entry, slot: P1.slot });
        for i in 1..FDB_CAPACITY {
            let mac = [0x06, 0, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8];
            writer.learn(mac, P2, u64::from(i) + 10);
        }
        assert_eq!(writer.len(), FDB_CAPACITY as usize);
        writer.learn(C, P2, SEC);
        drop(writer);
        assert_eq!(fdb.read().len(), FDB_CAPACITY as usize);
        assert!(has(&fdb, C));
        assert!(has(&fdb, A), "static entries are never evicted");
        assert!(!has(&fdb, [0x06, 0, 0, 0, 0, 1]), "the coldest one goes");
    }

    #[test]
    fn forget_port_removes_static_and_dynamic_entries() {
        let fdb = Fdb::default();
        let writer = fdb.write();
        writer.learn(A, P1, 0);
        writer.learn(B, P2, 0);
        writer.insert(
            C,
            Station {
                entry: FdbEntry { ifindex: P1.ifindex, flags: FDB_F_STATIC, last_seen_ns: 0, remote: 0, pad: 0 },
                slot: 0,
            },
        );
        writer.forget_port(P1.ifindex);
        assert_eq!(writer.entries().map(|(mac, _)| mac).collect::<Vec<_>>(), vec![B]);
    }

    #[test]
    fn readers_never_wait_for_a_writer() {
        let fdb = Fdb::default();
        fdb.write().learn(A, P1, 0);
        // A writer holds the table (as a lane learning, or a sweep, would) for the whole test:
        // with a reader-writer lock every read below would wait for it forever.
        let writer = fdb.write();
        writer.learn(B, P2, 0);
        std::thread::scope(|scope| {
            let reader = scope.spawn(|| {
                let view = fdb.read();
                (view.lookup(&A, clock(1)).map(|s| s.port()), view.lookup(&B, clock(1)).map(|s| s.port()))
            });
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !reader.is_finished() {
                assert!(std::time::Instant::now() < deadline, "a reader waited for the writer");
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            // The reader saw the writer's change at once: no batching of writes either.
            assert_eq!(reader.join().unwrap(), (Some(P1), Some(P2)));
        });
        drop(writer);
    }
}
