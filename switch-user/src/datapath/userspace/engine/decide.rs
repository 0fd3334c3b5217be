//! The switching decision: what happens to one received frame.
//!
//! The rules are the eBPF datapath's (`switch-ebpf/src/tc_ingress.rs`), in the same order:
//! runts are dropped as malformed, group or zero sources are dropped, sources are learned,
//! group destinations are flooded, known unicast goes to its port, a destination behind the
//! ingress port is dropped, and everything else is flooded to every other port.
//!
//! One difference in *when*, not *what*: the eBPF program learns before every lookup, while
//! the engine decides a whole batch with one view of the table and learns afterwards, as its
//! one writer, only if something changed. [`BatchSources`] makes the later frames
//! of a batch see the sources of the earlier ones, so the verdicts come out as if each frame
//! had been learned first.
use pnet_packet::ethernet::EthernetPacket;
use switch_common::{PORT_F_BIND_MAC, is_group, is_valid_source};

use super::{
    BATCH,
    guard::{Guard, Spoof},
    mac_table::{Clock, FdbView, PortId},
    ports::PortTable,
};

/// What happens to one received frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Shorter than an Ethernet header: dropped, counted as dropped and malformed.
    Malformed,
    /// Invalid source, destination behind the ingress port, or truncated: dropped.
    Drop,
    /// Broadcast, multicast or unknown unicast: a copy to every other port.
    Flood,
    /// Known unicast: to the port in this slot.
    Unicast(u32),
    /// Port security: another station's MAC, address or ARP claim: dropped.
    Spoofed(Spoof),
    /// A new station from a port that reached its learning limit: dropped.
    OverLimit,
}

impl Verdict {
    /// Whether a frame with this verdict goes out of the port in `slot` (never the ingress
    /// port: flooding skips it, and unicast to it is a `Drop`).
    pub(super) fn goes_to(self, slot: u32) -> bool {
        self == Verdict::Flood || self == Verdict::Unicast(slot)
    }
}

/// Destination and source MAC of an Ethernet frame, or `None` if it is shorter than a header.
/// Nothing past the header is looked at: the switch forwards any EtherType unchanged.
fn addresses(frame: &[u8]) -> Option<([u8; 6], [u8; 6])> {
    // A zero-copy view: pnet checks the length and reads the two fields in place.
    let eth = EthernetPacket::new(frame)?;
    Some((eth.get_destination().octets(), eth.get_source().octets()))
}

/// Source addresses of the frames of one batch decided so far.
///
/// All of them arrived on the ingress port, and the table is only written once the whole
/// batch is decided, so a later frame of the batch addressed to one of them must be treated as
/// the eBPF datapath (which learns before every lookup) would: as behind the ingress port.
pub(super) struct BatchSources {
    macs: [[u8; 6]; BATCH],
    /// Whether the table must be written for `macs[i]` (see [`FdbView::wants_learn`]).
    stale: [bool; BATCH],
    len: usize,
}

impl BatchSources {
    pub(super) fn new() -> Self {
        Self { macs: [[0; 6]; BATCH], stale: [false; BATCH], len: 0 }
    }

    fn contains(&self, mac: &[u8; 6]) -> bool {
        self.macs[..self.len].contains(mac)
    }

    fn note(&mut self, fdb: &FdbView<'_>, src: [u8; 6], port: PortId, now: u64) {
        if self.len < BATCH && !self.contains(&src) {
            self.macs[self.len] = src;
            self.stale[self.len] = fdb.wants_learn(&src, port, now);
            self.len += 1;
        }
    }

    /// Sources the table must learn.
    pub(super) fn stale(&self) -> impl Iterator<Item = &[u8; 6]> {
        self.macs[..self.len].iter().zip(&self.stale).filter_map(|(m, s)| s.then_some(m))
    }
}

/// What decide needs to know about the ports: which still exist (an entry may point at one
/// just removed: the frame is flooded then, as the eBPF datapath does), and which MACs are
/// reserved for which port.
pub(super) trait Ports {
    /// Whether the port still exists.
    fn is_live(&self, id: PortId) -> bool;
    /// The live port a MAC is reserved for.
    fn reserved_port(&self, mac: &[u8; 6]) -> Option<PortId>;
    /// Takes one new station from `id`'s learning budget; `false` when it is spent.
    fn take_learn_budget(&self, _id: PortId, _clock: Clock) -> bool {
        true
    }
}

impl Ports for PortTable {
    fn is_live(&self, id: PortId) -> bool {
        PortTable::is_live(self, id)
    }
    fn reserved_port(&self, mac: &[u8; 6]) -> Option<PortId> {
        self.get(self.reserved(mac)?).map(|p| p.id)
    }
    fn take_learn_budget(&self, id: PortId, clock: Clock) -> bool {
        self.get(id.slot).is_none_or(|p| p.learning.take(clock))
    }
}

/// Decides what to do with `frame` (the Ethernet frame, without the virtio header) received on
/// `ingress`, whose port security is `guard`.
pub(super) fn decide(
    fdb: &FdbView<'_>,
    frame: &[u8],
    ingress: PortId,
    guard: &Guard,
    sources: &mut BatchSources,
    clock: Clock,
    ports: &impl Ports,
) -> Verdict {
    let Some((dst, src)) = addresses(frame) else {
        return Verdict::Malformed;
    };
    if !is_valid_source(&src) {
        // Multicast or zero source: the Linux bridge drops these too, and learning them would
        // poison the table.
        return Verdict::Drop;
    }
    if let Some(why) = guard.check(frame, &src) {
        return Verdict::Spoofed(why);
    }
    // A MAC reserved for another port is never taken (nor learned) by this one. A source this
    // batch already let through was checked then: one lookup per new source, not per frame.
    if !sources.contains(&src) && ports.reserved_port(&src).is_some_and(|owner| owner.slot != ingress.slot) {
        return Verdict::Spoofed(Spoof::Mac);
    }
    // A port without a bound MAC may bring only so many new stations per ageing period (one
    // look per new source of the batch, as the eBPF datapath looks once per new station).
    if guard.flags & PORT_F_BIND_MAC == 0
        && !sources.contains(&src)
        && fdb.is_new_on(&src, ingress)
        && !ports.take_learn_budget(ingress, clock)
    {
        return Verdict::OverLimit;
    }
    sources.note(fdb, src, ingress, clock.now);
    if is_group(&dst) {
        return Verdict::Flood;
    }
    let station = fdb.lookup(&dst, clock);
    let out = match station {
        // Learned from this batch: behind the ingress port, unless a static entry pins it.
        _ if sources.contains(&dst) && !station.is_some_and(|s| s.entry.is_static()) => ingress,
        Some(s) => s.port(),
        // Reserved MACs stay reachable whatever the table forgot.
        None => match ports.reserved_port(&dst) {
            Some(port) => port,
            None => return Verdict::Flood,
        },
    };
    if out.ifindex == ingress.ifindex {
        // Destination is on the port the frame came from: the bridge without hairpin mode drops
        // these too.
        Verdict::Drop
    } else if ports.is_live(out) {
        Verdict::Unicast(out.slot)
    } else {
        Verdict::Flood
    }
}

#[cfg(test)]
mod tests {
    use switch_common::{FDB_F_STATIC, FdbEntry};

    use super::{
        super::mac_table::{Fdb, Station, fixtures::*},
        *,
    };

    fn frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
        let mut f = Vec::from(dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x08, 0x00, 0x45]);
        f
    }

    /// Decides one frame alone in its batch, every port alive.
    /// Ports live as a function says, no MAC reserved.
    struct LiveIf<F: Fn(PortId) -> bool>(F);

    impl<F: Fn(PortId) -> bool> Ports for LiveIf<F> {
        fn is_live(&self, p: PortId) -> bool {
            (self.0)(p)
        }
        fn reserved_port(&self, _: &[u8; 6]) -> Option<PortId> {
            None
        }
    }

    /// Every port is live, no MAC is reserved.
    struct AllLive;

    impl Ports for AllLive {
        fn is_live(&self, _: PortId) -> bool {
            true
        }
        fn reserved_port(&self, _: &[u8; 6]) -> Option<PortId> {
            None
        }
    }

    fn decide1(fdb: &Fdb, f: &[u8], ingress: PortId, now: u64) -> Verdict {
        decide(&fdb.read(), f, ingress, &Guard::default(), &mut BatchSources::new(), clock(now), &AllLive)
    }

    #[test]
    fn runts_and_bad_sources_are_dropped() {
        let fdb = Fdb::default();
        assert_eq!(decide1(&fdb, &[], P1, 0), Verdict::Malformed);
        assert_eq!(decide1(&fdb, &frame(B, A)[..13], P1, 0), Verdict::Malformed);
        assert_eq!(decide1(&fdb, &frame(B, A)[..14], P1, 0), Verdict::Flood);
        assert_eq!(decide1(&fdb, &frame(B, [0xff; 6]), P1, 0), Verdict::Drop);
        assert_eq!(decide1(&fdb, &frame(B, [0x01, 0, 0x5e, 0, 0, 1]), P1, 0), Verdict::Drop);
        assert_eq!(decide1(&fdb, &frame(B, [0; 6]), P1, 0), Verdict::Drop);
    }

    #[test]
    fn group_and_unknown_destinations_flood_known_go_to_their_port() {
        let fdb = Fdb::default();
        assert_eq!(decide1(&fdb, &frame([0xff; 6], A), P1, 0), Verdict::Flood);
        assert_eq!(decide1(&fdb, &frame(B, A), P1, 0), Verdict::Flood);
        fdb.write().learn(B, P2, 0);
        assert_eq!(decide1(&fdb, &frame(B, A), P1, 0), Verdict::Unicast(P2.slot));
        // Broadcast floods even from a known station.
        assert_eq!(decide1(&fdb, &frame([0xff; 6], A), P1, 0), Verdict::Flood);
        // Destination behind the ingress port: dropped.
        assert_eq!(decide1(&fdb, &frame(B, A), P2, 0), Verdict::Drop);
    }

    #[test]
    fn entry_of_a_removed_port_floods() {
        let fdb = Fdb::default();
        fdb.write().learn(B, P2, 0);
        let v = decide(
            &fdb.read(),
            &frame(B, A),
            P1,
            &Guard::default(),
            &mut BatchSources::new(),
            clock(0),
            &LiveIf(|p| p != P2),
        );
        assert_eq!(v, Verdict::Flood);
    }

    #[test]
    fn a_station_moves_at_once() {
        let fdb = Fdb::default();
        fdb.write().learn(A, P1, 0);
        assert!(fdb.read().wants_learn(&A, P2, 1));
        fdb.write().learn(A, P2, 1);
        assert_eq!(station(&fdb, A).port(), P2);
        assert_eq!(decide1(&fdb, &frame(A, B), P1, 2), Verdict::Unicast(P2.slot));
    }

    #[test]
    fn static_entries_neither_move_nor_age() {
        let fdb = Fdb::default();
        let entry = FdbEntry { ifindex: P1.ifindex, flags: FDB_F_STATIC, last_seen_ns: 0, remote: 0, pad: 0 };
        fdb.write().insert(A, Station { entry, slot: P1.slot });
        assert!(!fdb.read().wants_learn(&A, P2, 10 * SEC));
        fdb.write().learn(A, P2, 10 * SEC);
        assert_eq!(station(&fdb, A).port(), P1);
        let late = 10_000 * SEC;
        fdb.write().sweep(clock(late));
        assert_eq!(fdb.read().lookup(&A, clock(late)).map(|s| s.port()), Some(P1));
        // Even a frame from A on P2 earlier in the same batch does not move it.
        let mut sources = BatchSources::new();
        assert_eq!(
            decide(&fdb.read(), &frame(B, A), P2, &Guard::default(), &mut sources, clock(late), &AllLive),
            Verdict::Flood
        );
        assert_eq!(sources.stale().count(), 0);
        assert_eq!(
            decide(&fdb.read(), &frame(A, B), P2, &Guard::default(), &mut sources, clock(late), &AllLive),
            Verdict::Unicast(P1.slot)
        );
    }

    #[test]
    fn expired_entries_are_ignored_then_swept() {
        let fdb = Fdb::default();
        fdb.write().learn(B, P2, 0);
        let ageing = 300 * SEC;
        assert_eq!(decide1(&fdb, &frame(B, A), P1, ageing), Verdict::Unicast(P2.slot));
        assert_eq!(decide1(&fdb, &frame(B, A), P1, ageing + 1), Verdict::Flood);
        fdb.write().learn(A, P1, ageing);
        fdb.write().sweep(clock(ageing + 1));
        assert!(!has(&fdb, B));
        assert!(has(&fdb, A));
    }

    #[test]
    fn later_frames_of_a_batch_see_sources_learned_earlier() {
        let fdb = Fdb::default();
        // B is known on P2 but shows up on P1 in this batch: the datapath would move it before
        // the second frame is looked up.
        fdb.write().learn(B, P2, 0);
        let mut sources = BatchSources::new();
        let live = |_| true;
        assert_eq!(
            decide(&fdb.read(), &frame(C, B), P1, &Guard::default(), &mut sources, clock(1), &LiveIf(live)),
            Verdict::Flood
        );
        assert_eq!(
            decide(&fdb.read(), &frame(B, A), P1, &Guard::default(), &mut sources, clock(1), &LiveIf(live)),
            Verdict::Drop
        );
        // A frame to its own source is dropped, as after learning it.
        assert_eq!(
            decide(&fdb.read(), &frame(A, A), P1, &Guard::default(), &mut BatchSources::new(), clock(1), &LiveIf(live)),
            Verdict::Drop
        );
        let stale: Vec<_> = sources.stale().copied().collect();
        assert_eq!(stale, vec![B, A]);
    }

    #[test]
    fn batch_sources_are_distinct_and_only_stale_ones_are_learned() {
        let fdb = Fdb::default();
        fdb.write().learn(A, P1, 0);
        let mut sources = BatchSources::new();
        for _ in 0..3 {
            sources.note(&fdb.read(), A, P1, 1);
            sources.note(&fdb.read(), B, P1, 1);
        }
        assert_eq!(sources.len, 2);
        assert_eq!(sources.stale().copied().collect::<Vec<_>>(), vec![B]);
    }

    #[test]
    fn verdicts_choose_egress_ports() {
        assert!(Verdict::Flood.goes_to(3));
        assert!(Verdict::Unicast(3).goes_to(3));
        assert!(!Verdict::Unicast(2).goes_to(3));
        assert!(!Verdict::Drop.goes_to(3));
        assert!(!Verdict::Malformed.goes_to(3));
    }

    /// Ports live, and `A` reserved for port 1.
    struct Reserved;

    impl Ports for Reserved {
        fn is_live(&self, _: PortId) -> bool {
            true
        }
        fn reserved_port(&self, mac: &[u8; 6]) -> Option<PortId> {
            (*mac == A).then_some(P1)
        }
    }

    #[test]
    fn reserved_macs_are_never_taken_and_always_reachable() {
        let fdb = Fdb::default();
        let d = |f: &[u8], ingress| {
            decide(&fdb.read(), f, ingress, &Guard::default(), &mut BatchSources::new(), clock(0), &Reserved)
        };
        // Another port sending as A (even without port security of its own) is dropped.
        assert_eq!(d(&frame(B, A), P2), Verdict::Spoofed(Spoof::Mac));
        assert_eq!(d(&frame(B, A), P1), Verdict::Flood, "A itself");
        // A is reachable though the table never learned it.
        assert_eq!(d(&frame(A, B), P2), Verdict::Unicast(P1.slot));
    }
}
