//! Flows the host translated into the segment (a Service's DNAT to a station of the switch):
//! the eBPF datapath's `helpers/host_flows.rs`, for the engine. A frame the host sends in
//! from a station's address notes its flow; the other end's answers then go to the gateway,
//! with the gateway's MAC, so the host translates them back. See docs/services.md.
//!
//! The eBPF table is an LRU map; here a concurrent map whose entries carry when they were
//! last used, and a full table drops its idlest eighth to make room.
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use papaya::HashMap;
use switch_common::{CtKey, HOST_FLOWS_CAPACITY, is_station_addr};

use super::guard::Guard;

/// IPv4's EtherType, and the protocols whose flows are noted.
const ETH_P_IP: [u8; 2] = [0x08, 0x00];
const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;

/// A flow of a frame: protocol, addresses (network order) and ports (an ICMP echo's
/// identifier stands for a port on the side its answer swaps it to, as in the eBPF parser).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Flow {
    proto: u8,
    saddr: u32,
    daddr: u32,
    sport: u16,
    dport: u16,
}

impl Flow {
    /// The flow of an untagged IPv4 TCP, UDP or ICMP echo frame (first fragment or whole).
    pub(super) fn of(frame: &[u8]) -> Option<Self> {
        if frame.get(12..14)? != ETH_P_IP {
            return None;
        }
        let ip = frame.get(14..)?;
        let ihl = usize::from(ip.first()? & 0x0f) * 4;
        let frag = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]);
        if ip[0] >> 4 != 4 || ihl < 20 || frag & 0x3fff != 0 {
            return None;
        }
        let word = |at: usize| ip.get(at..at + 4).map(|b| u32::from_ne_bytes(b.try_into().expect("4 bytes")));
        let (proto, saddr, daddr) = (*ip.get(9)?, word(12)?, word(16)?);
        let l4 = ip.get(ihl..ihl + 8)?;
        let half = |at: usize| u16::from_be_bytes([l4[at], l4[at + 1]]);
        let (sport, dport) = match proto {
            TCP | UDP => (half(0), half(2)),
            ICMP => match (l4[0], l4[1]) {
                (8, 0) => (half(4), 0),
                (0, 0) => (0, half(4)),
                _ => return None,
            },
            _ => return None,
        };
        Some(Self { proto, saddr, daddr, sport, dport })
    }

    fn key(&self) -> CtKey {
        CtKey::either_way(self.proto, self.saddr, self.sport, self.daddr, self.dport)
    }
}

/// The client of a noted flow, and when the flow was last used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Noted {
    client: u32,
    client_port: u16,
    used: u64,
}

/// The engine's flows the host translated.
#[derive(Debug, Default)]
pub(super) struct HostFlows {
    map: HashMap<CtKey, Noted>,
    /// Whether any flow was ever noted: until then no switched frame is parsed.
    on: AtomicBool,
}

impl HostFlows {
    /// A frame the host sent in through gateway port `gateway` at `now`: its flow is noted if
    /// it comes from a station of the segment.
    pub(super) fn note(&self, gateway: &Guard, frame: &[u8], now: u64) {
        let Some(f) = Flow::of(frame).filter(|f| is_station_addr(gateway.ip, gateway.prefix, f.saddr)) else {
            return;
        };
        let map = self.map.pin();
        let noted = Noted { client: f.saddr, client_port: f.sport, used: now };
        if map.get(&f.key()).is_some_and(|n| (n.client, n.client_port) == (noted.client, noted.client_port)) {
            return;
        }
        if map.len() >= HOST_FLOWS_CAPACITY as usize {
            self.evict_idlest(&map);
        }
        map.insert(f.key(), noted);
        self.on.store(true, Relaxed);
    }

    /// Drops the idlest eighth of a full table.
    fn evict_idlest(&self, map: &papaya::HashMapRef<'_, CtKey, Noted, std::hash::RandomState, papaya::LocalGuard<'_>>) {
        let mut used: Vec<u64> = map.values().map(|n| n.used).collect();
        let cut = used.len() / 8;
        let (_, &mut threshold, _) = used.select_nth_unstable(cut);
        map.retain(|_, n| n.used > threshold);
    }

    /// Whether the switched `frame` (at `now`) is the answer of a noted flow, to go through
    /// the host. The client's own frame to the other end ends the flow (its port reused).
    pub(super) fn via_host(&self, frame: &[u8], now: u64) -> bool {
        if !self.on.load(Relaxed) {
            return false;
        }
        let Some(f) = Flow::of(frame) else { return false };
        let map = self.map.pin();
        let Some(n) = map.get(&f.key()).copied() else { return false };
        if (n.client, n.client_port) == (f.daddr, f.dport) {
            if now.saturating_sub(n.used) > 1_000_000_000 {
                map.insert(f.key(), Noted { used: now, ..n });
            }
            return true;
        }
        map.remove(&f.key());
        false
    }

    /// Flows noted now.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 4] = [10, 66, 0, 1];
    const B: [u8; 4] = [10, 66, 0, 2];

    /// An Ethernet + IPv4 + TCP/UDP header (checksums not needed here).
    fn frame(proto: u8, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12..14].copy_from_slice(&ETH_P_IP);
        f[14] = 0x45;
        f[14 + 9] = proto;
        f[14 + 12..14 + 16].copy_from_slice(&src);
        f[14 + 16..14 + 20].copy_from_slice(&dst);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f
    }

    fn gateway() -> Guard {
        Guard { ip: u32::from_ne_bytes([10, 66, 0, 254]), prefix: 24, ..Guard::default() }
    }

    #[test]
    fn answers_of_noted_flows_go_through_the_host_until_the_client_goes_direct() {
        let t = HostFlows::default();
        assert!(!t.via_host(&frame(TCP, B, A, 8080, 40_000), 1), "nothing noted yet");
        t.note(&gateway(), &frame(TCP, A, B, 40_000, 8080), 1);
        assert!(t.via_host(&frame(TCP, B, A, 8080, 40_000), 2));
        assert!(!t.via_host(&frame(UDP, B, A, 8080, 40_000), 2), "another protocol");
        assert!(!t.via_host(&frame(TCP, B, A, 8081, 40_000), 2), "another port");
        // The client straight to the other end: the flow is over.
        assert!(!t.via_host(&frame(TCP, A, B, 40_000, 8080), 3));
        assert_eq!(t.len(), 0);
        assert!(!t.via_host(&frame(TCP, B, A, 8080, 40_000), 4));
    }

    #[test]
    fn only_stations_of_the_segment_are_noted() {
        let t = HostFlows::default();
        for src in [[10, 66, 0, 254], [198, 51, 100, 7], [10, 67, 0, 1]] {
            t.note(&gateway(), &frame(TCP, src, B, 40_000, 8080), 1);
        }
        t.note(&Guard { prefix: 0, ..gateway() }, &frame(TCP, A, B, 40_000, 8080), 1);
        let mut fragment = frame(UDP, A, B, 40_000, 53);
        fragment[14 + 6] = 0x20; // more fragments
        t.note(&gateway(), &fragment, 1);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn a_full_table_drops_its_idlest_flows() {
        let t = HostFlows::default();
        for i in 0..HOST_FLOWS_CAPACITY {
            t.note(&gateway(), &frame(UDP, A, B, i as u16, 53), u64::from(i));
        }
        assert_eq!(t.len(), HOST_FLOWS_CAPACITY as usize);
        t.note(&gateway(), &frame(TCP, A, B, 1, 80), u64::MAX);
        assert!(t.len() < HOST_FLOWS_CAPACITY as usize * 9 / 10, "{}", t.len());
        assert!(t.via_host(&frame(TCP, B, A, 80, 1), u64::MAX), "the newest flow was dropped");
        assert!(!t.via_host(&frame(UDP, B, A, 53, 0), u64::MAX), "the idlest flow was kept");
        assert!(t.via_host(&frame(UDP, B, A, 53, (HOST_FLOWS_CAPACITY - 1) as u16), u64::MAX));
    }
}
