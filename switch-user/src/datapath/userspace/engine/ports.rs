//! The ports of the switch: each one's socket and counters, the table of them by slot, and
//! sending a decided batch out of them.
//!
//! The port table is copy-on-write: adding or removing a port builds a new [`PortTable`] and
//! swaps the `Arc` (see `Shared::set_port`). A batch takes one snapshot before deciding and
//! sends through it afterwards, so it never holds a lock while it waits on the kernel, and a
//! port removed meanwhile stays usable (its socket open) until the batches still holding it
//! are done.
use std::{
    collections::HashMap,
    os::fd::{AsRawFd, RawFd},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
};

use switch_common::PortStats;

use super::{
    BATCH, closer,
    decide::Verdict,
    guard::{Guard, Spoof},
    mac_table::{Clock, PortId},
    socket::{PacketSocket, RxBuffers, Sent},
};

/// Per-batch receive-side counts, added to the port's atomics once per batch.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct RxTally {
    packets: u64,
    bytes: u64,
    flooded: u64,
    dropped: u64,
    malformed: u64,
    spoofed_mac: u64,
    spoofed_ip: u64,
    spoofed_arp: u64,
    mac_limit: u64,
    tagged: u64,
    spoofed_nd: u64,
    router_guard: u64,
}

impl RxTally {
    pub(super) fn count(&mut self, verdict: Verdict, len: usize) {
        self.packets += 1;
        self.bytes += len as u64;
        match verdict {
            Verdict::Malformed => {
                self.dropped += 1;
                self.malformed += 1;
            }
            Verdict::Drop => self.dropped += 1,
            Verdict::Spoofed(why) => {
                self.dropped += 1;
                match why {
                    Spoof::Mac => self.spoofed_mac += 1,
                    Spoof::Ip => self.spoofed_ip += 1,
                    Spoof::Arp => self.spoofed_arp += 1,
                    Spoof::Tagged => self.tagged += 1,
                    Spoof::Nd => self.spoofed_nd += 1,
                    Spoof::Router => self.router_guard += 1,
                    Spoof::Unparsed => self.malformed += 1,
                }
            }
            Verdict::OverLimit => {
                self.dropped += 1;
                self.mac_limit += 1;
            }
            Verdict::Flood => self.flooded += 1,
            Verdict::Unicast(_) => {}
        }
    }
}

/// Counters of one port, as [`PortStats`]. Atomics because the port's own task counts its
/// receptions while every other port's task counts what it sends out of this one.
#[derive(Debug, Default)]
pub(super) struct Counters {
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    flooded_packets: AtomicU64,
    dropped_packets: AtomicU64,
    malformed_packets: AtomicU64,
    tx_errors: AtomicU64,
    spoofed_mac: AtomicU64,
    spoofed_ip: AtomicU64,
    spoofed_arp: AtomicU64,
    mac_limit: AtomicU64,
    tagged: AtomicU64,
    spoofed_nd: AtomicU64,
    router_guard: AtomicU64,
}

impl Counters {
    pub(super) fn add_rx(&self, t: &RxTally) {
        for (counter, n) in [
            (&self.rx_packets, t.packets),
            (&self.rx_bytes, t.bytes),
            (&self.flooded_packets, t.flooded),
            (&self.dropped_packets, t.dropped),
            (&self.malformed_packets, t.malformed),
            (&self.spoofed_mac, t.spoofed_mac),
            (&self.spoofed_ip, t.spoofed_ip),
            (&self.spoofed_arp, t.spoofed_arp),
            (&self.mac_limit, t.mac_limit),
            (&self.tagged, t.tagged),
            (&self.spoofed_nd, t.spoofed_nd),
            (&self.router_guard, t.router_guard),
        ] {
            if n != 0 {
                counter.fetch_add(n, Relaxed);
            }
        }
    }

    fn add_tx(&self, s: &Sent) {
        for (counter, n) in [(&self.tx_packets, s.packets), (&self.tx_bytes, s.bytes), (&self.tx_errors, s.errors)] {
            if n != 0 {
                counter.fetch_add(n, Relaxed);
            }
        }
    }

    pub(super) fn snapshot(&self) -> PortStats {
        PortStats {
            rx_packets: self.rx_packets.load(Relaxed),
            rx_bytes: self.rx_bytes.load(Relaxed),
            tx_packets: self.tx_packets.load(Relaxed),
            tx_bytes: self.tx_bytes.load(Relaxed),
            flooded_packets: self.flooded_packets.load(Relaxed),
            dropped_packets: self.dropped_packets.load(Relaxed),
            malformed_packets: self.malformed_packets.load(Relaxed),
            tx_errors: self.tx_errors.load(Relaxed),
            spoofed_mac: self.spoofed_mac.load(Relaxed),
            spoofed_ip: self.spoofed_ip.load(Relaxed),
            spoofed_arp: self.spoofed_arp.load(Relaxed),
            mac_limit: self.mac_limit.load(Relaxed),
            tagged: self.tagged.load(Relaxed),
            spoofed_nd: self.spoofed_nd.load(Relaxed),
            router_guard: self.router_guard.load(Relaxed),
        }
    }
}

/// One port: its sockets and counters. Shared (`Arc`) by its own receive tasks, by the port
/// table every other task sends through, and by the table snapshots of batches in flight, so
/// the sockets close only when the last of them lets go.
#[derive(Debug)]
pub(super) struct Port {
    pub(super) id: PortId,
    pub(super) name: String,
    /// One socket per lane (engine thread), sharing the port's frames between them (a fanout
    /// group, see [`PacketSocket::open_group`]); never empty. Lane `i` of every port receives
    /// on `sockets[i]` and sends out of the other ports' `sockets[i]`, so two lanes never
    /// contend for a socket.
    pub(super) sockets: Vec<PacketSocket>,
    pub(super) counters: Counters,
    /// What the port is bound to (port security).
    pub(super) guard: Guard,
    /// How many new stations it may still learn (ports without a bound MAC).
    pub(super) learning: LearnBudget,
}

/// A port's learning limit, as the eBPF datapath keeps it (`LEARNED`): at most `limit` new
/// stations per window of one ageing period (0: no limit). The port's lanes take from it
/// concurrently: each new station is one `fetch_add`, so they never take more than `limit`
/// between them (a window's reset may race with a take, which then counts in either window).
#[derive(Debug, Default)]
pub(super) struct LearnBudget {
    limit: u32,
    start_ns: AtomicU64,
    learned: AtomicU64,
}

impl LearnBudget {
    pub(super) fn new(limit: u32) -> Self {
        Self { limit, ..Default::default() }
    }

    /// Takes one new station at `clock`; `false` when this window's are spent.
    pub(super) fn take(&self, clock: Clock) -> bool {
        if self.limit == 0 {
            return true;
        }
        if clock.now > self.start_ns.load(Relaxed).saturating_add(clock.ageing) {
            self.start_ns.store(clock.now, Relaxed);
            self.learned.store(0, Relaxed);
        }
        self.learned.fetch_add(1, Relaxed) < u64::from(self.limit)
    }
}

/// One lane of a port: what its receive task waits on (`AsyncFd<Lane>`).
#[derive(Debug)]
pub(super) struct Lane {
    pub(super) port: Arc<Port>,
    pub(super) index: usize,
}

impl Lane {
    pub(super) fn socket(&self) -> &PacketSocket {
        self.port.socket(self.index)
    }
}

impl AsRawFd for Lane {
    fn as_raw_fd(&self) -> RawFd {
        self.socket().as_raw_fd()
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        // Closing waits on the kernel for a while, and this may be a lane's thread (the port's
        // aborted receive task, a batch with the last old table): see closer.rs.
        closer::close_later(std::mem::take(&mut self.sockets));
    }
}

impl Port {
    /// The socket of `lane` (lanes beyond the port's sockets wrap around).
    pub(super) fn socket(&self, lane: usize) -> &PacketSocket {
        &self.sockets[lane % self.sockets.len()]
    }

    /// Sends the frames of the batch in `rx` whose verdict sends them out of this port, through
    /// its socket of `lane`.
    fn transmit(&self, lane: usize, rx: &RxBuffers, verdicts: &[Verdict]) {
        let frames = verdicts.iter().enumerate().filter(|(_, v)| v.goes_to(self.id.slot)).map(|(i, _)| rx.raw(i));
        self.counters.add_tx(&self.socket(lane).send(frames));
    }
}

/// The ports by slot. Immutable: adding or removing a port swaps in a new table, so a batch
/// works on one consistent snapshot without holding a lock while it sends.
#[derive(Debug, Default)]
pub(super) struct PortTable {
    by_slot: Vec<Option<Arc<Port>>>,
    /// MAC -> slot of the port it is reserved for (bound ports, the gateway): rebuilt with the
    /// table, so a batch reads it without a lock.
    reserved: HashMap<[u8; 6], u32>,
}

impl PortTable {
    pub(super) fn get(&self, slot: u32) -> Option<&Arc<Port>> {
        self.by_slot.get(slot as usize)?.as_ref()
    }

    /// Ports in slot order (the flood order of the eBPF datapath).
    fn iter(&self) -> impl Iterator<Item = &Arc<Port>> {
        self.by_slot.iter().flatten()
    }

    pub(super) fn by_ifindex(&self, ifindex: u32) -> Option<&Arc<Port>> {
        self.iter().find(|p| p.id.ifindex == ifindex)
    }

    pub(super) fn is_live(&self, id: PortId) -> bool {
        self.get(id.slot).is_some_and(|p| p.id == id)
    }

    /// The gateway's port (the one the host is behind), if the switch has one.
    pub(super) fn gateway(&self) -> Option<&Arc<Port>> {
        self.iter().find(|p| p.guard.flags & switch_common::PORT_F_HOST != 0)
    }

    /// The slot a MAC is reserved for, if any.
    pub(super) fn reserved(&self, mac: &[u8; 6]) -> Option<u32> {
        self.reserved.get(mac).copied()
    }

    /// A copy of the table with `slot` set to `port`.
    pub(super) fn with(&self, slot: u32, port: Option<Arc<Port>>) -> Self {
        let mut by_slot = self.by_slot.clone();
        if by_slot.len() <= slot as usize {
            by_slot.resize(slot as usize + 1, None);
        }
        by_slot[slot as usize] = port;
        while by_slot.last().is_some_and(Option::is_none) {
            by_slot.pop();
        }
        let reserved =
            by_slot.iter().flatten().filter(|p| p.guard.mac != [0; 6]).map(|p| (p.guard.mac, p.id.slot)).collect();
        Self { by_slot, reserved }
    }
}

/// Sends every frame of a batch from `ingress` (received on `lane`) to where its verdict says:
/// one `sendmmsg` per destination port, on that port's socket of the same lane.
pub(super) fn forward(table: &PortTable, ingress: PortId, lane: usize, rx: &RxBuffers, verdicts: &[Verdict]) {
    if verdicts.contains(&Verdict::Flood) {
        for out in table.iter().filter(|p| p.id.slot != ingress.slot) {
            out.transmit(lane, rx, verdicts);
        }
        return;
    }
    let mut done = [0u32; BATCH];
    let mut n = 0;
    for v in verdicts {
        if let Verdict::Unicast(slot) = *v
            && !done[..n].contains(&slot)
        {
            done[n] = slot;
            n += 1;
            if let Some(out) = table.get(slot) {
                out.transmit(lane, rx, verdicts);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_learning_budget_refills_once_per_ageing_period() {
        let at = |now| Clock { now, ageing: 100 };
        let b = LearnBudget::new(2);
        assert!(b.take(at(1)) && b.take(at(2)));
        assert!(!b.take(at(50)) && !b.take(at(100)), "a third station within the window");
        assert!(b.take(at(101)) && b.take(at(150)), "a new window, from 101");
        assert!(!b.take(at(200)), "the new window is spent too");
        let none = LearnBudget::new(0);
        assert!((0..1000).all(|i| none.take(at(i))), "0 is no limit");
    }

    #[test]
    fn verdicts_are_tallied_into_the_port_counters() {
        let mut t = RxTally::default();
        t.count(Verdict::Malformed, 5);
        t.count(Verdict::Drop, 60);
        t.count(Verdict::Flood, 60);
        t.count(Verdict::Unicast(1), 1000);
        t.count(Verdict::Spoofed(Spoof::Ip), 60);
        t.count(Verdict::Spoofed(Spoof::Arp), 60);
        t.count(Verdict::OverLimit, 60);
        t.count(Verdict::Spoofed(Spoof::Tagged), 64);
        t.count(Verdict::Spoofed(Spoof::Nd), 86);
        t.count(Verdict::Spoofed(Spoof::Router), 110);
        t.count(Verdict::Spoofed(Spoof::Unparsed), 300);
        assert_eq!(
            t,
            RxTally {
                packets: 11,
                bytes: 1865,
                flooded: 1,
                dropped: 9,
                malformed: 2,
                spoofed_mac: 0,
                spoofed_ip: 1,
                spoofed_arp: 1,
                mac_limit: 1,
                tagged: 1,
                spoofed_nd: 1,
                router_guard: 1,
            }
        );
        let c = Counters::default();
        c.add_rx(&t);
        c.add_tx(&Sent { packets: 2, bytes: 100, errors: 1 });
        let s = c.snapshot();
        assert_eq!((s.rx_packets, s.rx_bytes, s.flooded_packets, s.dropped_packets), (11, 1865, 1, 9));
        assert_eq!((s.tagged, s.spoofed_nd, s.router_guard), (1, 1, 1));
        assert_eq!((s.malformed_packets, s.tx_packets, s.tx_bytes, s.tx_errors), (2, 2, 100, 1));
        assert_eq!((s.spoofed_mac, s.spoofed_ip, s.spoofed_arp, s.mac_limit), (0, 1, 1, 1));
    }

    /// What an open file of this process is (`socket:[inode]` for a socket).
    fn describe(fd: RawFd) -> String {
        std::fs::read_link(format!("/proc/self/fd/{fd}")).map(|l| l.to_string_lossy().into_owned()).unwrap_or_default()
    }

    /// The sockets among `sockets` (as [`describe`] names them) this process still has open:
    /// by inode, as their fd numbers may be reused by other tests once closed.
    fn still_open(sockets: &[String]) -> Vec<String> {
        let fds =
            std::fs::read_dir("/proc/self/fd").unwrap().filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok());
        let open: Vec<String> = fds.map(describe).collect();
        sockets.iter().filter(|s| open.contains(s)).cloned().collect()
    }

    #[test]
    fn a_dropped_port_closes_its_sockets_on_the_closer_not_on_the_dropping_thread() {
        // Sockets on the loopback of a namespace of their own, not on an interface of the host:
        // a thread enters a new namespace, opens them there and ends; they keep it alive.
        let sockets = std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare (run as root)");
            PacketSocket::open_group(1, 2, None).expect("packet sockets on the namespace's loopback")
        })
        .join()
        .unwrap();
        let inodes: Vec<String> = sockets.iter().map(|s| describe(s.as_raw_fd())).collect();
        assert!(inodes.iter().all(|i| i.starts_with("socket:[")), "{inodes:?}");
        assert_eq!(still_open(&inodes), inodes);
        let port = Port {
            id: PortId { slot: 0, ifindex: 1 },
            name: "lo".into(),
            sockets,
            counters: Counters::default(),
            guard: Guard::default(),
            learning: LearnBudget::new(0),
        };
        let stall = closer::tests::stall_closer();
        drop(port);
        assert_eq!(still_open(&inodes), inodes, "closed by the thread that dropped the port");
        drop(stall);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !still_open(&inodes).is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(still_open(&inodes), Vec::<String>::new(), "the closer never closed them");
    }

    #[test]
    fn port_table_snapshots() {
        let t = PortTable::default();
        assert!(t.get(0).is_none());
        let t = t.with(3, None);
        assert!(t.by_slot.is_empty());
    }
}
