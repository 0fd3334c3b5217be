//! Types shared by the switch's eBPF programs (`switch-ebpf`) and its controller
//! (`switch-user`).
//!
//! Everything here is `#[repr(C)]`, has no implicit padding and is plain old data, because the
//! same bytes are written by one side and read by the other through BPF maps. Field order and
//! sizes are part of the pinned-map ABI: changing them means a switch made by an older binary
//! can no longer be read by a newer one.
#![no_std]
#![deny(missing_docs)]

/// Most ports one switch can have. It bounds the flood loop in the datapath, so the verifier
/// can prove it terminates, and sizes the port and counter arrays.
pub const MAX_PORTS: u32 = 256;

/// Most MAC addresses one switch learns. The FDB is an LRU map: when it is full the least
/// recently used entry is evicted instead of new stations being refused.
pub const FDB_CAPACITY: u32 = 16_384;

/// Lane steering of the userspace engine (`switch-ebpf/src/lane_steer.rs`, the engine's
/// `steer.rs`), shared by the program and the engine that loads it.
pub mod steer {
    /// Most lanes (sockets per port, threads) of the userspace engine.
    pub const MAX_LANES: u32 = 16;
    /// `CAUGHT_UP` has one entry per port slot and lane: `slot * MAX_LANES + lane`.
    pub const CAUGHT_UP_ENTRIES: u32 = crate::MAX_PORTS * MAX_LANES;
    /// The program's global with the engine's lane count, set when it is loaded.
    pub const LANES_GLOBAL: &str = "LANES";
    /// Interface index -> port slot (hash map), written by the engine as ports come and go.
    pub const PORT_SLOTS: &str = "STEER_SLOTS";
    /// Per port slot and lane, the monotonic time (ns) at which the lane last found the port's
    /// ring empty with every frame it took before already sent (mmapable array of u64).
    pub const CAUGHT_UP: &str = "CAUGHT_UP";
}

/// Linux bridge default ageing time, in seconds.
pub const DEFAULT_AGEING_SECS: u64 = 300;

/// A learned entry is rewritten at most this often when the station keeps talking on the
/// same port. Writing on every frame would bounce the entry's cache line between CPUs.
pub const FDB_REFRESH_NS: u64 = 1_000_000_000;

/// Length of an Ethernet header without VLAN tags.
pub const ETH_HLEN: usize = 14;

/// Map names, as declared in the eBPF object and as pinned under `/sys/fs/bpf/switch/NAME/`.
pub mod maps {
    /// [`crate::MacKey`] -> [`crate::FdbEntry`]; LRU hash.
    pub const FDB: &str = "FDB";
    /// Slot (0..[`crate::MAX_PORTS`]) -> [`crate::Port`]; array. Flooding walks it.
    pub const PORTS: &str = "PORTS";
    /// Interface index (u32) -> slot (u32); hash. Tells the datapath whether and which port a
    /// frame arrived on.
    pub const PORT_SLOTS: &str = "PORT_SLOTS";
    /// Slot -> [`crate::PortStats`]; per-CPU array, summed by the controller.
    pub const STATS: &str = "STATS";
    /// Index 0 -> [`crate::SwitchConfig`]; array with one entry.
    pub const CONFIG: &str = "CONFIG";
    /// ifindex -> ifindex; devmap hash of the ports, used by the XDP datapath.
    pub const PORT_DEVMAP: &str = "PORT_DEVMAP";
    /// [`crate::FwdKey`] -> [`crate::FwdTarget`]: forwarded ports.
    pub const FORWARDS: &str = "FORWARDS";
    /// Uplink IPv4 address (network order) -> 1.
    pub const UPLINK_ADDRS: &str = "UPLINK_ADDRS";
    /// [`crate::CtKey`] -> [`crate::CtEntry`]: the connection table (LRU) of connections
    /// that have been answered.
    pub const CONNTRACK: &str = "CONNTRACK";
    /// The same for connections not answered yet (TCP half-open, a first datagram): a budget
    /// of their own, so a flood of them evicts only its like, never an answered connection.
    pub const CT_UNREPLIED: &str = "CT_UNREPLIED";
    /// Rule -> [`crate::FwdStats`]; per-CPU array.
    pub const FWD_STATS: &str = "FWD_STATS";
    /// Index 0 -> [`crate::NatConfig`].
    pub const NAT_CONFIG: &str = "NAT_CONFIG";
    /// [`crate::CtKey`] (`either_way`) -> [`crate::HostFlow`]; LRU hash: flows the host
    /// translated into the segment, whose answers go back through it.
    pub const HOST_FLOWS: &str = "HOST_FLOWS";
    /// Index 0 -> u32, 1 once `HOST_FLOWS` got its first entry.
    pub const HOST_FLOWS_ON: &str = "HOST_FLOWS_ON";
    /// Uplink ifindex -> its IPv4 address (network order), the masquerade source.
    pub const UPLINK_BY_IFINDEX: &str = "UPLINK_BY_IFINDEX";
    /// Socket cookie -> [`crate::SockOrig`] (UDP through a forward, from host processes).
    pub const SOCK_ORIG: &str = "SOCK_ORIG";
    /// Network namespace cookie -> 1 for the switch's own namespaces: only their sockets (and
    /// the host's) are pointed at forward targets directly (hairpin).
    pub const NAT_NETNS: &str = "NAT_NETNS";
    /// `TableStats`: what went into and out of FDB and CONNTRACK, for counting evictions.
    pub const TABLE_STATS: &str = "TABLE_STATS";
    /// [`crate::MacKey`] -> slot (u32): the MAC each port is bound to (port security, and the
    /// gateway's). A plain hash, outside the LRU: bound stations are never evicted, never
    /// moved by learning, and still reachable when the LRU forgot them.
    pub const BOUND: &str = "BOUND";
    /// Slot -> [`crate::LearnWindow`]: how many stations a port without a bound MAC learned
    /// in the current ageing period (the per-port MAC limit).
    pub const LEARNED: &str = "LEARNED";
    /// Ring buffer of [`crate::events::Event`]s for `switch monitor`; written only while
    /// `CFG_F_EVENTS` is set.
    pub const EVENTS: &str = "EVENTS";
    /// Index 0 -> [`crate::events::EventRate`]; per-CPU array: the events' rate limit.
    pub const EVENT_RATE: &str = "EVENT_RATE";
    /// Index 0 -> [`crate::TunnelConfig`]: the tunnel port's VNI and device.
    pub const TUNNEL: &str = "TUNNEL";
    /// Slot (0..[`crate::MAX_PEERS`]) -> [`crate::Peer`]; array. Head-end replication walks it.
    pub const PEERS: &str = "PEERS";
    /// Peer address (u32, network order) -> slot: frames from the tunnel are only taken from
    /// these addresses.
    pub const PEER_SLOTS: &str = "PEER_SLOTS";
    /// Ring buffer of captured frames for `switch capture` (a [`crate::capture::Header`] and
    /// the frame's first bytes each); written only while `CFG_F_CAPTURE` is set.
    pub const CAPTURE: &str = "CAPTURE";
    /// Index 0 -> [`crate::capture::Filter`]: which frames the running capture wants.
    pub const CAPTURE_FILTER: &str = "CAPTURE_FILTER";
    /// Index 0 -> [`crate::capture::Record`]; per-CPU array: where a CPU assembles a record
    /// before it goes into the ring (and counts the records the ring had no room for).
    pub const CAPTURE_SCRATCH: &str = "CAPTURE_SCRATCH";
    /// IPv4 address (network order) -> slot: the addresses of the ports bound to one (a
    /// namespace with port security, the gateway). Frames from the tunnel claiming one of
    /// them (ARP sender, IPv4 source) are dropped: a peer may not speak for this host's ports.
    pub const BOUND_IP: &str = "BOUND_IP";
    /// Slot -> [`crate::PortAddrs6`]; array: the IPv6 addresses a port is bound to.
    pub const PORT_ADDRS6: &str = "PORT_ADDRS6";
    /// IPv6 address (four words, as [`crate::PortAddrs6`] has them) -> slot: the IPv6 and
    /// link-local addresses of the ports bound to them (a namespace with port security, the
    /// gateway). Frames from the tunnel may not claim them (`BOUND_IP`'s IPv6 counterpart).
    pub const BOUND_IP6: &str = "BOUND_IP6";
    /// One entry per CPU: the IPv6 parse of port security under way (the datapath's own).
    pub const IPV6_SCRATCH: &str = "IPV6_SCRATCH";
    /// Peer address (u32, network order) -> [`crate::LearnWindow`]: the learning limit of each
    /// peer of the tunnel port, so one peer (or one forging its underlay address) cannot use
    /// up the others' share.
    pub const PEER_LEARNED: &str = "PEER_LEARNED";
}

/// Stations a port without a bound MAC may learn per ageing period, unless `switch up
/// --max-learned` says otherwise (0: no limit). Far below `FDB_CAPACITY`, so one port cannot
/// fill the table alone.
pub const DEFAULT_MAX_LEARNED: u32 = 1024;

/// A port's learning count in the current window: new stations learned since `start_ns`.
/// The window is one ageing period long, so a port holds at most twice the limit of live
/// stations (those of the last window still age out). A count of its own, rather than one
/// kept in step with the FDB, because the LRU evicts and ageing deletes lazily: a count of
/// entries present would drift, and a port would end up locked out.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LearnWindow {
    /// When the window started (`bpf_ktime_get_ns`).
    pub start_ns: u64,
    /// New stations learned in it.
    pub learned: u32,
    /// Zero.
    pub pad: u32,
}

/// Most flows the host translated into a segment that a switch remembers (`HOST_FLOWS`). LRU:
/// every answer that finds its entry refreshes it, so a full table evicts the idlest.
pub const HOST_FLOWS_CAPACITY: u32 = 16_384;

/// A flow the host routed into the segment from one of the segment's own stations, typically
/// translated on the way (a Service's DNAT to an endpoint on the same switch): the station
/// that reached the other end through the host, whose answers must go back the same way.
/// Keyed by the flow's `CtKey` with its two ends in a fixed order (`CtKey::either_way`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostFlow {
    /// The client's address (network order).
    pub client: u32,
    /// The client's port (host order; an ICMP echo's identifier).
    pub client_port: u16,
    /// Zero.
    pub pad: u16,
}

impl CtKey {
    /// The key of the flow between `(a, a_port)` and `(b, b_port)` whichever end sends: the
    /// lower end first, so both directions find the same entry with one lookup.
    #[inline(always)]
    pub const fn either_way(proto: u8, a: u32, a_port: u16, b: u32, b_port: u16) -> Self {
        let a_first = a < b || (a == b && a_port <= b_port);
        let (src, sport, dst, dport) = if a_first { (a, a_port, b, b_port) } else { (b, b_port, a, a_port) };
        Self { src, dst, sport, dport, proto, pad: [0; 3] }
    }
}

/// Port forwarding (DNAT on the uplinks) and its connection table.
pub mod nat {
    /// Most forwarded ports per switch (a port range counts one per port).
    pub const MAX_FORWARDS: u32 = 4096;
    /// Most tracked connections; the table is LRU, so a full one evicts the coldest.
    pub const CT_CAPACITY: u32 = 65_536;
    /// Most connections waiting for their first answer (entries of `CT_UNREPLIED`).
    pub const CT_UNREPLIED_CAPACITY: u32 = 32_768;
    /// `CtEntry::nat` of an entry whose packets get a new destination: inbound on an uplink
    /// (the client's half of a forwarded connection, the answers of a masqueraded one).
    pub const CT_DNAT: u16 = 1;
    /// `CtEntry::nat` of an entry whose packets get a new source: leaving through an uplink
    /// (replies of a forwarded connection, a masqueraded connection's own packets).
    pub const CT_SNAT: u16 = 0;
    /// `CtEntry::flags`: the entry's packets go the answering way (server to client): the
    /// first of them makes the connection answered.
    pub const CT_F_ANSWER: u16 = 1;
    /// `CtEntry::flags`: the entry's connection is not answered yet (it is in `CT_UNREPLIED`):
    /// it lives `CT_TIMEOUT_UNREPLIED_NS` past its last packet, whatever its state.
    pub const CT_F_UNREPLIED: u16 = 2;
    /// Most uplink addresses per switch.
    pub const MAX_UPLINK_ADDRS: u32 = 64;
    /// IP protocol numbers the forwards know.
    pub const PROTO_TCP: u8 = 6;
    /// UDP.
    pub const PROTO_UDP: u8 = 17;
    /// IP protocol number of ICMP (echo request and reply are masqueraded, the identifier
    /// standing for the port).
    pub const PROTO_ICMP: u8 = 1;
    /// TCP handshake not finished yet.
    pub const CT_HALF_OPEN: u32 = 0;
    /// TCP established (or UDP seen both ways).
    pub const CT_ESTABLISHED: u32 = 1;
    /// TCP FIN or RST seen.
    pub const CT_CLOSING: u32 = 2;
    /// UDP flow.
    pub const CT_UDP: u32 = 3;
    /// Counter index of masqueraded connections.
    pub const MASQUERADE_RULE: u16 = (MAX_FORWARDS - 1) as u16;
    /// Timeouts by state, in ns.
    pub const CT_TIMEOUT_HALF_OPEN_NS: u64 = 30_000_000_000;
    /// Established TCP.
    pub const CT_TIMEOUT_ESTABLISHED_NS: u64 = 3_600_000_000_000;
    /// Closing TCP.
    pub const CT_TIMEOUT_CLOSING_NS: u64 = 10_000_000_000;
    /// UDP.
    pub const CT_TIMEOUT_UDP_NS: u64 = 60_000_000_000;
    /// A connection not answered yet (a first datagram, a TCP handshake the opener has not
    /// completed): short, so that what nobody answers (spoofed SYNs, datagrams to a silent
    /// remote) holds neither table room nor a masquerade port for long. Longer than a TCP
    /// SYN's first retransmissions (1 s, then 2 s later), which keep the entry alive.
    pub const CT_TIMEOUT_UNREPLIED_NS: u64 = 5_000_000_000;
    /// Masquerade ports: the range is cut into this many blocks...
    pub const MASQ_BLOCKS: u32 = 64;
    /// ...and each source address may take ports from this many of them (chosen by a hash of
    /// the address): towards one remote (the scope in which a port must be unique) a source
    /// holds at most an eighth of the range, however many connections it opens.
    pub const MASQ_SHARE_BLOCKS: u32 = 8;
    /// TCP: how far past the answer's sequence number the opener's acknowledgement may be
    /// and still complete the handshake (a lost first ACK, acknowledged later with data).
    /// A guess of a blind spoofer lands in it once in 4096.
    pub const CT_ACK_WINDOW: u32 = 1 << 20;

    /// The timeout of a connection in `state`.
    pub const fn timeout_ns(state: u32) -> u64 {
        match state {
            CT_HALF_OPEN => CT_TIMEOUT_HALF_OPEN_NS,
            CT_ESTABLISHED => CT_TIMEOUT_ESTABLISHED_NS,
            CT_CLOSING => CT_TIMEOUT_CLOSING_NS,
            _ => CT_TIMEOUT_UDP_NS,
        }
    }
}

/// Key of the forwards map: a protocol and a host port (host byte order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FwdKey {
    /// Host port.
    pub port: u16,
    /// IP protocol (6 or 17).
    pub proto: u8,
    /// Zero.
    pub pad: u8,
}

/// Where a forwarded port goes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FwdTarget {
    /// Namespace address, network byte order.
    pub addr: u32,
    /// Namespace port, host byte order.
    pub port: u16,
    /// Rule number (index of its counters).
    pub rule: u16,
}

/// One direction of a tracked connection: addresses in network byte order, ports in host
/// byte order, as seen on the wire at the hook that looks it up.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    /// Source address.
    pub src: u32,
    /// Destination address.
    pub dst: u32,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// IP protocol.
    pub proto: u8,
    /// Zero.
    pub pad: [u8; 3],
}

/// What a tracked direction is translated to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtEntry {
    /// New address (the destination for `CT_DNAT`, the source for `CT_SNAT`).
    pub addr: u32,
    /// New port.
    pub port: u16,
    /// Rule number.
    pub rule: u16,
    /// `nat::CT_*` state.
    pub state: u32,
    /// `nat::CT_DNAT` or `nat::CT_SNAT`: which end of its packets the entry rewrites.
    pub nat: u16,
    /// `nat::CT_F_*` flags.
    pub flags: u16,
    /// Last packet, `bpf_ktime_get_coarse_ns`.
    pub last_seen_ns: u64,
    /// TCP, not answered yet: the acknowledgement number that completes the handshake (the
    /// answer's sequence number, plus one for its SYN), once the answer was seen.
    pub ack: u32,
    /// Zero.
    pub pad: u32,
}

/// Entries added to and removed from the two LRU tables (FDB and CONNTRACK). The kernel
/// evicts from an LRU map silently, so evictions are what is missing:
/// `added - removed - entries present`.
///
/// `TABLE_STATS` holds two of these, each per CPU: index `TABLE_STATS_DATAPATH` is counted by
/// the programs and index `TABLE_STATS_CONTROLLER` by the controller (static entries, flushes,
/// sweeps), so neither ever overwrites a count of the other.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct TableStats {
    /// New stations (a move of a known one is not new).
    pub fdb_added: u64,
    /// Stations deleted: aged out, port gone, flushed, static entries removed.
    pub fdb_removed: u64,
    /// Connection-table entries created (two per connection, one per direction).
    pub ct_added: u64,
    /// Connection-table entries deleted (expired ones swept by the controller).
    pub ct_removed: u64,
    /// Connections the table could not take (no free masquerade port): their packets were
    /// dropped, never sent on untranslated.
    pub ct_refused: u64,
    /// Entries created in `CT_UNREPLIED` (two per new connection).
    pub unreplied_added: u64,
    /// Entries that left `CT_UNREPLIED` other than by eviction (moved to CONNTRACK when the
    /// connection was answered).
    pub unreplied_removed: u64,
    /// Packets routed towards the segment that nothing asked for: from an uplink and neither
    /// to a forwarded port nor a reply of the segment's own connections, or routed in by the
    /// host from any other interface. Dropped unless the segment is routable.
    pub routed_refused: u64,
    /// ICMP errors refused at an uplink (`events::DROP_ICMP_FOREIGN`): quoting a connection
    /// they have no business with, or a private address that has no translation.
    pub icmp_refused: u64,
    /// New masqueraded connections refused because their source already holds its share of
    /// the masquerade ports towards that remote (`events::DROP_MASQ_SHARE`).
    pub masq_share_refused: u64,
}

impl TableStats {
    /// Adds `other` into `self`.
    pub fn accumulate(&mut self, other: &TableStats) {
        self.fdb_added += other.fdb_added;
        self.fdb_removed += other.fdb_removed;
        self.ct_added += other.ct_added;
        self.ct_removed += other.ct_removed;
        self.ct_refused += other.ct_refused;
        self.unreplied_added += other.unreplied_added;
        self.unreplied_removed += other.unreplied_removed;
        self.routed_refused += other.routed_refused;
        self.icmp_refused += other.icmp_refused;
        self.masq_share_refused += other.masq_share_refused;
    }
}

/// `TABLE_STATS` index the programs count in.
pub const TABLE_STATS_DATAPATH: u32 = 0;
/// `TABLE_STATS` index the controller counts in.
pub const TABLE_STATS_CONTROLLER: u32 = 1;

/// Masquerade namespaces' outbound TCP/UDP behind the uplink address.
pub const NAT_F_MASQUERADE: u32 = 1;

/// Switch-wide NAT settings, one entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatConfig {
    /// Network namespace cookie of the host: only host processes' 127.0.0.1 is forwarded.
    pub host_netns_cookie: u64,
    /// The switch's segment (network order) and its mask, for masquerading.
    pub segment: u32,
    /// Mask of the segment, network order.
    pub segment_mask: u32,
    /// `NAT_F_*` flags.
    pub flags: u32,
    /// Interface index of the gateway's host end (the one with the address): replies leaving
    /// the switch towards the uplinks are routed as if they had arrived there.
    pub gateway_ifindex: u32,
    /// First source port masquerade may use, and how many: a range the host's own sockets
    /// never pick (above `net.ipv4.ip_local_port_range`), so no host connection is hijacked.
    pub masq_first: u16,
    /// Number of masquerade ports (at least 1).
    pub masq_count: u16,
    /// The gateway's address (network order): the switch's namespaces and the host reach
    /// forwarded ports on it too (a container's "host" address), as on an uplink address.
    pub gateway_addr: u32,
}

/// What a UDP socket last sent to through a forward, so its replies can be given the
/// address the application used (socket cookie -> this).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockOrig {
    /// Address the application sent to (network order).
    pub addr: u32,
    /// Port it sent to (host order).
    pub port: u16,
    /// Port the datagrams really went to (host order).
    pub target_port: u16,
    /// Address they really went to (network order).
    pub target_addr: u32,
    /// Zero.
    pub pad: u32,
}

impl NatConfig {
    /// Whether `addr` (network order) is on the switch's segment. A config not written yet
    /// (mask 0) has no segment.
    pub const fn in_segment(&self, addr: u32) -> bool {
        self.segment_mask != 0 && addr & self.segment_mask == self.segment
    }
}

impl CtEntry {
    /// Whether the entry has outlived its state's timeout at `now_ns`. A `last_seen_ns` in the
    /// future (stamped on another CPU a moment later) is not expired.
    pub const fn is_expired(&self, now_ns: u64) -> bool {
        let timeout = if self.flags & nat::CT_F_UNREPLIED != 0 {
            nat::CT_TIMEOUT_UNREPLIED_NS
        } else {
            nat::timeout_ns(self.state)
        };
        now_ns > self.last_seen_ns && now_ns - self.last_seen_ns > timeout
    }
}

/// Counters of one forward rule.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FwdStats {
    /// Packets translated (both directions).
    pub packets: u64,
    /// Bytes translated.
    pub bytes: u64,
    /// Connections created.
    pub connections: u64,
}

impl FwdStats {
    /// Adds `other` (summing per-CPU values).
    pub fn accumulate(&mut self, other: &FwdStats) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        self.connections += other.connections;
    }
}

/// Program names in the eBPF object.
pub mod programs {
    /// TC/TCX ingress program on the host end of every port's veth pair.
    pub const TC_INGRESS: &str = "switch_ingress";
    /// XDP program on the host end of every port's veth pair.
    pub const XDP_INGRESS: &str = "switch_xdp";
    /// TC ingress of the switch's VXLAN device (its tunnel port).
    pub const TUNNEL_INGRESS: &str = "tunnel_ingress";
    /// TC ingress of each uplink: DNAT of forwarded ports.
    pub const NAT_INGRESS: &str = "nat_ingress";
    /// TC egress of each uplink: reverse translation of the replies, masquerade.
    pub const NAT_EGRESS: &str = "nat_egress";
    /// TC ingress of the gateway's host end: replies sent straight out of the uplink.
    pub const NAT_GATEWAY: &str = "nat_gateway";
    /// TC egress of the gateway's host end: nothing routed into the segment unasked.
    pub const GATEWAY_EGRESS: &str = "gateway_egress";
    /// cgroup connect4: host-local and hairpin TCP/UDP to forwarded ports.
    pub const SOCK_CONNECT4: &str = "sock_connect4";
    /// cgroup sendmsg4: the same for unconnected UDP.
    pub const SOCK_SENDMSG4: &str = "sock_sendmsg4";
    /// cgroup recvmsg4: replies shown from the address the application used.
    pub const SOCK_RECVMSG4: &str = "sock_recvmsg4";
}

/// Key of the forwarding database: a MAC address padded to 8 bytes so the key has no
/// uninitialised bytes (hash maps compare keys bytewise).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MacKey {
    /// The station's MAC address, in wire order.
    pub addr: [u8; 6],
    /// Always zero.
    pub pad: [u8; 2],
}

impl MacKey {
    /// Key for `addr`.
    pub const fn new(addr: [u8; 6]) -> Self {
        Self { addr, pad: [0; 2] }
    }
}

/// Entry is static: never aged out, never moved by learning.
pub const FDB_F_STATIC: u32 = 1;

/// Value of the forwarding database.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FdbEntry {
    /// Interface index of the port (host end of the veth pair) the station is behind.
    pub ifindex: u32,
    /// `FDB_F_*` flags.
    pub flags: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the station was last seen.
    pub last_seen_ns: u64,
    /// A station behind a tunnel port: the IPv4 address (network order) of the peer (VTEP)
    /// it is behind. 0 for a station behind a local port.
    pub remote: u32,
    /// Zero.
    pub pad: u32,
}

impl FdbEntry {
    /// Whether the entry is static.
    pub const fn is_static(&self) -> bool {
        self.flags & FDB_F_STATIC != 0
    }

    /// Whether a dynamic entry has outlived `ageing_ns` at time `now_ns`. Static entries never
    /// expire. A `last_seen_ns` in the future (clock read on another CPU a moment later) is
    /// not expired.
    pub const fn is_expired(&self, now_ns: u64, ageing_ns: u64) -> bool {
        !self.is_static() && now_ns > self.last_seen_ns && now_ns - self.last_seen_ns > ageing_ns
    }
}

/// The port's peer is in the host's own namespace (the gateway port): `bpf_redirect_peer`
/// cannot reach it (the kernel only switches namespaces with it), so known unicast to it
/// takes `bpf_redirect`.
pub const PORT_F_HOST: u32 = 1;
/// Port security: the port accepts only frames with its own source MAC (`Port::mac`), and
/// ARP with that sender MAC.
pub const PORT_F_BIND_MAC: u32 = 2;
/// Port security: IPv4 only from the port's own address (`Port::ip`, or 0.0.0.0 for DHCP),
/// ARP only with that sender address (or 0.0.0.0 for a probe).
pub const PORT_F_BIND_IP: u32 = 4;

/// The port is a tunnel (the switch's collect-metadata VXLAN device): frames to it get the
/// tunnel key of the peer their destination is behind, floods go to every peer (head-end
/// replication), and nothing that came from it goes back into it (split horizon).
pub const PORT_F_TUNNEL: u32 = 8;

/// Most peers (remote VTEPs) of one tunnel port. It bounds the head-end replication loop.
pub const MAX_PEERS: u32 = 64;

/// One slot of the peer array (`PEERS`). `addr == 0` marks a free slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Peer {
    /// The peer's underlay IPv4 address, network order.
    pub addr: u32,
    /// Zero.
    pub pad: u32,
}

/// The switch's tunnel port as the datapath needs it, one entry (`TUNNEL`). All zero: the
/// switch has no tunnel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TunnelConfig {
    /// The VXLAN network identifier of the segment.
    pub vni: u32,
    /// Interface index of the VXLAN device.
    pub ifindex: u32,
    /// One past the highest used slot in `PEERS`; the replication loop stops there.
    pub peer_limit: u32,
    /// The local VTEP address (the underlay interface's, network order): the outer source.
    pub local: u32,
    /// The tunnel port's slot (its counters).
    pub slot: u32,
    /// Interface index of the underlay interface: known unicast is encapsulated by the program
    /// itself and sent out of it when the FIB has the peer's neighbour (0: always through the
    /// VXLAN device).
    pub underlay: u32,
    /// The VXLAN UDP port (host order).
    pub port: u16,
    /// Zero.
    pub pad: u16,
    /// Zero.
    pub pad2: u32,
}

/// One slot of the port array. `ifindex == 0` marks a free slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Port {
    /// Interface index of the port's host-side veth.
    pub ifindex: u32,
    /// `PORT_F_*` flags.
    pub flags: u32,
    /// The slot's own index. Redundant on purpose: the flood loop carries the previous port's
    /// slot into the next iteration, and a value read from a map is an unknown scalar to the
    /// verifier, whereas the loop counter is a known constant that would multiply the states it
    /// has to explore (one per slot pair).
    pub slot: u32,
    /// The address the port is bound to (network order), with `PORT_F_BIND_IP`.
    pub ip: u32,
    /// The MAC reserved for the port (all zero: none): no other port may use it, and the
    /// port itself may use no other with `PORT_F_BIND_MAC`.
    pub mac: [u8; 6],
    /// The gateway port's: prefix length of its address, so `ip`/`prefix` is the segment
    /// (what tells a station's address from one the host routes from elsewhere). 0 otherwise.
    pub prefix: u8,
    /// Explicit padding.
    pub pad: u8,
}

impl Port {
    /// Whether `addr` (network order) is on the segment of this gateway port, other than the
    /// gateway's own address. Never true for a port without a prefix.
    #[inline(always)]
    pub const fn is_station_addr(&self, addr: u32) -> bool {
        is_station_addr(self.ip, self.prefix, addr)
    }
}

/// A port's IPv6 addresses, as port security checks them (`PORT_ADDRS6`, by slot): a port
/// bound to its addresses (`PORT_F_BIND_IP`) sends IPv6 only from these, and claims only them
/// in neighbour discovery. Each address as four words in network order (compared a word at a
/// time: the datapath reads the packet's addresses the same way).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortAddrs6 {
    /// The port's address (all zero: none).
    pub ip: [u32; 4],
    /// Its link-local address: fe80::/64 with the modified EUI-64 identifier of its MAC, as
    /// the kernel makes it (`addr_gen_mode` 0, the default, which the controller sets).
    pub link_local: [u32; 4],
}

impl PortAddrs6 {
    /// Whether `addr` (as read from a packet) is one of the port's own, never the unspecified
    /// address.
    #[inline(always)]
    pub fn owns(&self, addr: &[u32; 4]) -> bool {
        !ipv6::is_unspecified(addr) && (*addr == self.ip || *addr == self.link_local)
    }
}

/// IPv6 as port security parses it: the header chain and neighbour discovery.
pub mod ipv6 {
    /// EtherType of IPv6.
    pub const ETH_P_IPV6: u16 = 0x86dd;
    /// Length of the fixed IPv6 header.
    pub const HLEN: usize = 40;
    /// Next header: hop-by-hop options.
    pub const NH_HOP: u8 = 0;
    /// Next header: TCP.
    pub const NH_TCP: u8 = 6;
    /// Next header: UDP.
    pub const NH_UDP: u8 = 17;
    /// Next header: routing.
    pub const NH_ROUTING: u8 = 43;
    /// Next header: fragment.
    pub const NH_FRAGMENT: u8 = 44;
    /// Next header: authentication header (its length counts 4-byte units).
    pub const NH_AUTH: u8 = 51;
    /// Next header: ICMPv6.
    pub const NH_ICMPV6: u8 = 58;
    /// Next header: destination options.
    pub const NH_DSTOPTS: u8 = 60;
    /// Next header: mobility.
    pub const NH_MOBILITY: u8 = 135;
    /// Next header: host identity protocol.
    pub const NH_HIP: u8 = 139;
    /// Next header: shim6.
    pub const NH_SHIM6: u8 = 140;
    /// Next headers reserved for experiments (RFC 3692 style, used as extension headers).
    pub const NH_EXPERIMENT: [u8; 2] = [253, 254];
    /// Most extension headers port security walks before the upper layer: more than any real
    /// stack sends; a chain that does not end by then is dropped from a secured port, so no
    /// header can be hidden behind a long chain.
    pub const MAX_EXT_HEADERS: u32 = 6;
    /// Bytes from the IPv6 header's start the parser looks at; a chain or a neighbour
    /// discovery option that reaches past it is dropped from a secured port.
    pub const WINDOW: usize = 256;
    /// Most neighbour discovery options looked at to find the link-layer address option.
    pub const MAX_ND_OPTIONS: u32 = 4;

    /// ICMPv6 router solicitation.
    pub const ROUTER_SOLICIT: u8 = 133;
    /// ICMPv6 router advertisement.
    pub const ROUTER_ADVERT: u8 = 134;
    /// ICMPv6 neighbour solicitation.
    pub const NEIGH_SOLICIT: u8 = 135;
    /// ICMPv6 neighbour advertisement.
    pub const NEIGH_ADVERT: u8 = 136;
    /// ICMPv6 redirect.
    pub const REDIRECT: u8 = 137;
    /// ICMPv6 multicast listener report (MLDv1), which may come from `::`.
    pub const MLD_REPORT: u8 = 131;
    /// ICMPv6 multicast listener report (MLDv2), which may come from `::`.
    pub const MLD2_REPORT: u8 = 143;
    /// Neighbour discovery option: source link-layer address.
    pub const OPT_SOURCE_LL: u8 = 1;
    /// Neighbour discovery option: target link-layer address.
    pub const OPT_TARGET_LL: u8 = 2;

    /// Whether next header `nh` is an extension header the parser must walk past (or give
    /// up on) to find the upper layer.
    #[inline(always)]
    pub const fn is_extension(nh: u8) -> bool {
        matches!(nh, NH_HOP | NH_ROUTING | NH_FRAGMENT | NH_AUTH | NH_DSTOPTS | NH_MOBILITY | NH_HIP | NH_SHIM6)
            || nh == NH_EXPERIMENT[0]
            || nh == NH_EXPERIMENT[1]
    }

    /// Whether `addr` (four words) is `::`.
    #[inline(always)]
    pub const fn is_unspecified(addr: &[u32; 4]) -> bool {
        addr[0] | addr[1] | addr[2] | addr[3] == 0
    }

    /// The link-local address the kernel gives an interface with `mac` (modified EUI-64:
    /// fe80::, the MAC with ff:fe in its middle and the universal/local bit flipped).
    pub const fn link_local(mac: [u8; 6]) -> [u8; 16] {
        [0xfe, 0x80, 0, 0, 0, 0, 0, 0, mac[0] ^ 0x02, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]]
    }

    /// `bytes` as four words in network order, as the datapath reads an address.
    pub const fn words(bytes: [u8; 16]) -> [u32; 4] {
        let b = bytes;
        [
            u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
            u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
            u32::from_ne_bytes([b[12], b[13], b[14], b[15]]),
        ]
    }
}

/// Whether `addr` is on the segment of gateway address `gateway`/`prefix` (all in network
/// order), other than the gateway itself: a station's address. Never true without a prefix.
#[inline(always)]
pub const fn is_station_addr(gateway: u32, prefix: u8, addr: u32) -> bool {
    if prefix == 0 || prefix > 32 || addr == gateway {
        return false;
    }
    // `to_be` puts the mask's bytes in network order, as the addresses are read raw.
    let mask = (u32::MAX << (32 - prefix as u32)).to_be();
    addr & mask == gateway & mask
}

/// Per-port counters, kept per CPU by the datapath and summed by the controller (and sent
/// as they are over the userspace switch's control socket).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct PortStats {
    /// Frames received from the port's namespace.
    pub rx_packets: u64,
    /// Bytes of those frames.
    pub rx_bytes: u64,
    /// Frames sent into the port's namespace (forwarded or flooded copies).
    pub tx_packets: u64,
    /// Bytes of those frames.
    pub tx_bytes: u64,
    /// Received frames that were flooded (broadcast, multicast, unknown unicast).
    pub flooded_packets: u64,
    /// Received frames that were dropped (malformed, invalid source, same-port destination).
    pub dropped_packets: u64,
    /// Of the dropped frames, those dropped because they could not be parsed.
    pub malformed_packets: u64,
    /// Copies or redirects the kernel refused (`bpf_clone_redirect`/`bpf_redirect` failed).
    pub tx_errors: u64,
    /// Of the dropped frames: a source MAC that is not the port's own, or one bound to
    /// another port (port security).
    pub spoofed_mac: u64,
    /// Of the dropped frames: IPv4 from an address that is not the port's own.
    pub spoofed_ip: u64,
    /// Of the dropped frames: ARP claiming another MAC or address.
    pub spoofed_arp: u64,
    /// Of the dropped frames: a new station from a port that reached its learning limit.
    pub mac_limit: u64,
    /// Of the dropped frames: VLAN-tagged frames from a port with port security.
    pub tagged: u64,
    /// Of the dropped frames: IPv6 neighbour discovery claiming another MAC or address.
    pub spoofed_nd: u64,
    /// Of the dropped frames: IPv6 router advertisements and redirects from a port with port
    /// security (RA guard: only the gateway's host routes).
    pub router_guard: u64,
}

impl PortStats {
    /// Adds `other` into `self` (summing per-CPU values).
    pub fn accumulate(&mut self, other: &PortStats) {
        self.rx_packets += other.rx_packets;
        self.rx_bytes += other.rx_bytes;
        self.tx_packets += other.tx_packets;
        self.tx_bytes += other.tx_bytes;
        self.flooded_packets += other.flooded_packets;
        self.dropped_packets += other.dropped_packets;
        self.malformed_packets += other.malformed_packets;
        self.tx_errors += other.tx_errors;
        self.spoofed_mac += other.spoofed_mac;
        self.spoofed_ip += other.spoofed_ip;
        self.spoofed_arp += other.spoofed_arp;
        self.mac_limit += other.mac_limit;
        self.tagged += other.tagged;
        self.spoofed_nd += other.spoofed_nd;
        self.router_guard += other.router_guard;
    }
}

/// Known unicast goes with `bpf_redirect_peer` straight into the target namespace's ingress
/// (skips the host-side veth's transmit and the backlog queue). Without it, `bpf_redirect` to
/// the host-side veth's egress.
pub const CFG_F_REDIRECT_PEER: u32 = 1;
/// Datapath emits aya-log records (off by default: logging on the hot path costs).
pub const CFG_F_LOG: u32 = 2;
/// The segment is routable: the host may route into it from anywhere and out of it to
/// anywhere (`switch up --routable`). Off, only forwarded ports, replies of the segment's own
/// connections and the host itself reach the segment.
pub const CFG_F_ROUTABLE: u32 = 4;

/// Datapath emits events into the `EVENTS` ring buffer (`switch monitor`; off unless someone
/// listens).
pub const CFG_F_EVENTS: u32 = 8;
/// Datapath copies the frames `CAPTURE_FILTER` wants into the `CAPTURE` ring buffer
/// (`switch capture`; off unless a capture runs).
pub const CFG_F_CAPTURE: u32 = 16;

/// Switch-wide settings, read by the datapath on every frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwitchConfig {
    /// Dynamic FDB entries older than this are treated as unknown and removed.
    pub ageing_ns: u64,
    /// `CFG_F_*` flags.
    pub flags: u32,
    /// One past the highest used slot in `PORTS`; the flood loop stops there.
    pub slot_limit: u32,
    /// New stations a port without a bound MAC may learn per ageing period; 0: no limit.
    pub max_learned: u32,
    /// Slot of the gateway port plus one (0: the switch has no gateway): where a reply the
    /// host must translate back is sent (`HOST_FLOWS`).
    pub gateway_slot: u32,
}

/// Whether `mac` is a group (broadcast or multicast) address: the I/G bit of the first octet.
#[inline(always)]
pub const fn is_group(mac: &[u8; 6]) -> bool {
    mac[0] & 1 != 0
}

/// Whether `mac` is all zeros.
#[inline(always)]
pub const fn is_zero(mac: &[u8; 6]) -> bool {
    (mac[0] | mac[1] | mac[2] | mac[3] | mac[4] | mac[5]) == 0
}

/// Whether `mac` may appear as a frame's source: not a group address, not all zeros. The Linux
/// bridge drops frames failing this test too.
#[inline(always)]
pub const fn is_valid_source(mac: &[u8; 6]) -> bool {
    !is_group(mac) && !is_zero(mac)
}

/// Events of the datapath (`switch monitor`): what happened to a frame, and a summary of it.
pub mod events {
    /// A frame was dropped; `reason` says why (`DROP_*`).
    pub const KIND_DROP: u16 = 1;
    /// A new station was learned.
    pub const KIND_LEARN: u16 = 2;
    /// A known station moved to another port (`other_ifindex` is the port it left).
    pub const KIND_MOVE: u16 = 3;
    /// A connection was created by NAT; `reason` says which (`NAT_*`), `nat_addr`/`nat_port`
    /// what it is translated to, the frame is its first packet as it came.
    pub const KIND_NAT: u16 = 4;

    /// A connection from outside to a forwarded port (its destination is rewritten).
    pub const NAT_FORWARD: u16 = 1;
    /// An outbound connection of the segment, masqueraded (its source is rewritten).
    pub const NAT_MASQUERADE: u16 = 2;

    /// Shorter than an Ethernet header.
    pub const DROP_MALFORMED: u16 = 1;
    /// Group or all-zero source MAC.
    pub const DROP_INVALID_SOURCE: u16 = 2;
    /// Destination behind the port the frame came from.
    pub const DROP_SAME_PORT: u16 = 3;
    /// Port security: a source MAC that is not the port's, or one bound to another port.
    pub const DROP_SPOOFED_MAC: u16 = 4;
    /// Port security: IPv4 from an address that is not the port's.
    pub const DROP_SPOOFED_IP: u16 = 5;
    /// Port security: ARP claiming another MAC or address.
    pub const DROP_SPOOFED_ARP: u16 = 6;
    /// A new station from a port that reached its learning limit.
    pub const DROP_MAC_LIMIT: u16 = 7;
    /// A connection NAT could not translate (no free masquerade port, a full connection
    /// table, nothing to translate a packet of the segment with): dropped rather than sent
    /// with a private source.
    pub const DROP_NAT_REFUSED: u16 = 8;
    /// A packet routed towards the segment that nothing there asked for (not to a forwarded
    /// port, not an answer of the segment's connections).
    pub const DROP_UNSOLICITED: u16 = 9;
    /// A frame from the tunnel that is not the segment's: another VNI, or an underlay address
    /// that is not a peer.
    pub const DROP_NOT_PEER: u16 = 10;
    /// Port security: a VLAN-tagged frame (802.1Q, 802.1ad, 0x9100..0x9300, any VID, the tag
    /// in the bytes or in the skb's metadata) from a port bound to its MAC or address.
    pub const DROP_TAGGED: u16 = 11;
    /// An ICMP error at an uplink that quotes a connection but is not that connection's: from
    /// outside, to another destination than the connection's own address; from the segment,
    /// about a packet its sender never received; or one that would leave quoting a private
    /// address untranslated.
    pub const DROP_ICMP_FOREIGN: u16 = 12;
    /// A new masqueraded connection from a source that already holds its share of the
    /// masquerade ports towards that remote: refused so that one namespace cannot take every
    /// port to a service the others use too.
    pub const DROP_MASQ_SHARE: u16 = 13;
    /// Port security: IPv6 neighbour discovery (a solicitation or advertisement) claiming
    /// another MAC or address.
    pub const DROP_SPOOFED_ND: u16 = 14;
    /// Port security: an IPv6 router advertisement or redirect from a port other than the
    /// gateway (RA guard).
    pub const DROP_ROUTER_GUARD: u16 = 15;

    /// `FrameSummary::flags`: the frame is IPv4 and `saddr`/`daddr`/`proto` are set.
    pub const FRAME_F_IPV4: u8 = 1;
    /// `FrameSummary::flags`: `sport`/`dport` are set (TCP or UDP, first fragment).
    pub const FRAME_F_PORTS: u8 = 2;

    /// Size of the `EVENTS` ring buffer, in bytes (a power of two and a multiple of the page
    /// size, as the kernel requires): about 3000 events, a few seconds of the rate limit's
    /// worth on every CPU at once before a slow reader loses any.
    pub const RING_BYTES: u32 = 256 * 1024;
    /// Most events one CPU emits per window (`RATE_WINDOW_SHIFT`); more are counted in
    /// `EventRate::suppressed` and reported with the next event that gets through.
    pub const RATE_PER_WINDOW: u32 = 200;
    /// A window is 2^30 ns (about 1.07 s): a shift instead of a division, which the verifier
    /// and the JIT like better.
    pub const RATE_WINDOW_SHIFT: u32 = 30;

    /// What an event says about its frame, from the bytes in the packet's linear part.
    /// Addresses as on the wire; ports and EtherType in host order.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct FrameSummary {
        /// Frame length in bytes.
        pub len: u32,
        /// EtherType (0 for a runt).
        pub ethertype: u16,
        /// IP protocol, with `FRAME_F_IPV4`.
        pub proto: u8,
        /// `FRAME_F_*`.
        pub flags: u8,
        /// Destination MAC.
        pub dst: [u8; 6],
        /// Source MAC.
        pub src: [u8; 6],
        /// IPv4 source.
        pub saddr: u32,
        /// IPv4 destination.
        pub daddr: u32,
        /// L4 source port.
        pub sport: u16,
        /// L4 destination port.
        pub dport: u16,
    }

    /// One event, as the datapath writes it into `EVENTS`.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Event {
        /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) when it happened.
        pub ts_ns: u64,
        /// `KIND_*`.
        pub kind: u16,
        /// `DROP_*` for drops, else 0.
        pub reason: u16,
        /// Host ifindex of the port the frame came in on.
        pub ifindex: u32,
        /// Moves: the port the station left. Else 0.
        pub other_ifindex: u32,
        /// Events this CPU did not emit since its last one (rate limit, or the ring buffer
        /// was full).
        pub suppressed: u32,
        /// NAT: the address the connection is translated to (as on the wire).
        pub nat_addr: u32,
        /// NAT: the port it is translated to.
        pub nat_port: u16,
        /// Zero.
        pub pad: u16,
        /// The frame.
        pub frame: FrameSummary,
    }

    /// One CPU's rate-limit window.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct EventRate {
        /// Window number (`ktime >> RATE_WINDOW_SHIFT`).
        pub window: u64,
        /// Events emitted in it.
        pub sent: u32,
        /// Events not emitted since the last one that was.
        pub suppressed: u32,
    }
}

/// Packet capture (`switch capture`): frames as the switch saw them on a port's ingress, with
/// its verdict, copied into the `CAPTURE` ring buffer.
pub mod capture {
    /// Most bytes of a frame a record carries: a jumbo frame (9000-byte MTU) whole, and the
    /// headers of a GSO super-frame (up to 64 KiB, cut here). Bounded so that a record fits
    /// a per-CPU scratch value (at most 32 KiB) and a full capture cannot copy more per frame.
    pub const MAX_SNAPLEN: u32 = 9216;
    /// Size of the `CAPTURE` ring buffer (a power of two, a multiple of the page size): about
    /// 40 000 small frames or 450 full jumbo frames before a slow reader loses any.
    pub const RING_BYTES: u32 = 4 * 1024 * 1024;

    /// Known unicast, sent to `Header::out_ifindex`.
    pub const VERDICT_FORWARD: u16 = 1;
    /// Broadcast, multicast or unknown unicast: sent to every other port.
    pub const VERDICT_FLOOD: u16 = 2;
    /// Dropped; `Header::reason` is the `events::DROP_*` reason.
    pub const VERDICT_DROP: u16 = 3;

    /// `Filter::verdicts`: frames the switch forwards (unicast and flood).
    pub const WANT_FORWARDED: u32 = 1;
    /// `Filter::verdicts`: frames the switch drops.
    pub const WANT_DROPPED: u32 = 2;

    /// Which frames the running capture wants.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Filter {
        /// Only frames arriving on this host ifindex (0: every port).
        pub ifindex: u32,
        /// `WANT_*` flags.
        pub verdicts: u32,
        /// Bytes of each frame to copy, 1..=`MAX_SNAPLEN`.
        pub snaplen: u32,
        /// Zero.
        pub pad: u32,
    }

    /// What precedes a frame's bytes in a record.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Header {
        /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) when the switch decided.
        pub ts_ns: u64,
        /// Host ifindex of the port the frame came in on.
        pub ifindex: u32,
        /// `VERDICT_FORWARD`: the port it went to. Else 0.
        pub out_ifindex: u32,
        /// The frame's length (a GSO super-frame's whole length).
        pub len: u32,
        /// Bytes of it that follow the header.
        pub caplen: u32,
        /// `VERDICT_*`.
        pub verdict: u16,
        /// `events::DROP_*` with `VERDICT_DROP`, else 0.
        pub reason: u16,
        /// Records this CPU could not write since its last one (the ring was full).
        pub lost: u32,
    }

    /// A record as a CPU assembles it; the ring gets the header and `caplen` bytes of `data`.
    #[repr(C)]
    #[derive(Clone, Copy, Debug)]
    pub struct Record {
        /// The header.
        pub header: Header,
        /// The frame's first bytes.
        pub data: [u8; MAX_SNAPLEN as usize],
    }

    /// Bytes of a record's header.
    pub const HEADER_LEN: usize = core::mem::size_of::<Header>();
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)], made of integers and byte arrays only, and have no
    // padding (checked by the size assertions in the tests below).
    unsafe impl aya::Pod for super::MacKey {}
    unsafe impl aya::Pod for super::FdbEntry {}
    unsafe impl aya::Pod for super::Port {}
    unsafe impl aya::Pod for super::PortAddrs6 {}
    unsafe impl aya::Pod for super::Peer {}
    unsafe impl aya::Pod for super::TunnelConfig {}
    unsafe impl aya::Pod for super::PortStats {}
    unsafe impl aya::Pod for super::SwitchConfig {}
    unsafe impl aya::Pod for super::LearnWindow {}
    unsafe impl aya::Pod for super::FwdKey {}
    unsafe impl aya::Pod for super::FwdTarget {}
    unsafe impl aya::Pod for super::CtKey {}
    unsafe impl aya::Pod for super::CtEntry {}
    unsafe impl aya::Pod for super::HostFlow {}
    unsafe impl aya::Pod for super::FwdStats {}
    unsafe impl aya::Pod for super::NatConfig {}
    unsafe impl aya::Pod for super::SockOrig {}
    unsafe impl aya::Pod for super::TableStats {}
    unsafe impl aya::Pod for super::events::EventRate {}
    unsafe impl aya::Pod for super::capture::Filter {}
    unsafe impl aya::Pod for super::capture::Record {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_padding() {
        assert_eq!(size_of::<MacKey>(), 8);
        assert_eq!(size_of::<FdbEntry>(), 24);
        assert_eq!(size_of::<Peer>(), 8);
        assert_eq!(size_of::<TunnelConfig>(), 32);
        assert_eq!(size_of::<Port>(), 24);
        assert_eq!(size_of::<PortStats>(), 15 * 8);
        assert_eq!(size_of::<PortAddrs6>(), 32);
        assert_eq!(size_of::<SwitchConfig>(), 24);
        assert_eq!(size_of::<LearnWindow>(), 16);
        assert_eq!(size_of::<FwdKey>(), 4);
        assert_eq!(size_of::<FwdTarget>(), 8);
        assert_eq!(size_of::<CtKey>(), 16);
        assert_eq!(size_of::<CtEntry>(), 32);
        assert_eq!(size_of::<HostFlow>(), 8);
        assert_eq!(size_of::<FwdStats>(), 24);
        assert_eq!(size_of::<NatConfig>(), 32);
        assert_eq!(size_of::<SockOrig>(), 16);
        assert_eq!(size_of::<TableStats>(), 10 * 8);
        assert_eq!(size_of::<events::FrameSummary>(), 32);
        assert_eq!(size_of::<events::Event>(), 64);
        assert_eq!(size_of::<events::EventRate>(), 16);
        assert_eq!(size_of::<capture::Filter>(), 16);
        assert_eq!(size_of::<capture::Header>(), 32);
        assert_eq!(size_of::<capture::Record>(), 32 + capture::MAX_SNAPLEN as usize);
    }

    #[test]
    fn either_way_keys_both_directions_alike() {
        let (a, b) = (u32::from_ne_bytes([10, 0, 0, 2]), u32::from_ne_bytes([10, 0, 0, 3]));
        let k = CtKey::either_way(6, a, 40_000, b, 80);
        assert_eq!(k, CtKey::either_way(6, b, 80, a, 40_000));
        assert_ne!(k, CtKey::either_way(17, b, 80, a, 40_000));
        assert_ne!(k, CtKey::either_way(6, b, 80, a, 40_001));
        // One address both ends (a station talking to itself): told apart by port.
        assert_eq!(CtKey::either_way(6, a, 1, a, 2), CtKey::either_way(6, a, 2, a, 1));
    }

    #[test]
    fn station_addresses_of_a_gateway_port() {
        let ip = |o: [u8; 4]| u32::from_ne_bytes(o);
        let gw = Port { ip: ip([10, 244, 1, 1]), prefix: 24, ..Default::default() };
        assert!(gw.is_station_addr(ip([10, 244, 1, 7])));
        assert!(!gw.is_station_addr(ip([10, 244, 1, 1])), "the gateway itself");
        assert!(!gw.is_station_addr(ip([10, 244, 2, 7])), "another segment");
        assert!(!gw.is_station_addr(ip([10, 96, 0, 10])), "a ClusterIP");
        let wide = Port { prefix: 16, ..gw };
        assert!(wide.is_station_addr(ip([10, 244, 2, 7])));
        assert!(!Port { prefix: 0, ..gw }.is_station_addr(ip([10, 244, 1, 7])), "no prefix, no segment");
        assert!(!Port { prefix: 32, ..gw }.is_station_addr(ip([10, 244, 1, 7])), "a /32 has no other station");
    }

    #[test]
    fn group_and_source_classification() {
        assert!(is_group(&[0xff; 6]));
        assert!(is_group(&[0x01, 0x00, 0x5e, 0, 0, 1]));
        assert!(is_group(&[0x33, 0x33, 0, 0, 0, 1]));
        assert!(!is_group(&[0x02, 0, 0, 0, 0, 1]));
        assert!(is_valid_source(&[0x02, 0, 0, 0, 0, 1]));
        assert!(!is_valid_source(&[0; 6]));
        assert!(!is_valid_source(&[0xff; 6]));
        assert!(!is_valid_source(&[0x01, 0x80, 0xc2, 0, 0, 0]));
    }

    #[test]
    fn expiry_respects_static_and_clock_skew() {
        let e = FdbEntry { ifindex: 3, flags: 0, last_seen_ns: 1_000, remote: 0, pad: 0 };
        assert!(!e.is_expired(1_000, 10));
        assert!(!e.is_expired(1_010, 10));
        assert!(e.is_expired(1_011, 10));
        // Seen "after" now: another CPU stamped it a moment later.
        assert!(!e.is_expired(900, 10));
        let s = FdbEntry { flags: FDB_F_STATIC, ..e };
        assert!(!s.is_expired(u64::MAX, 10));
    }

    #[test]
    fn the_segment_is_what_the_mask_says_and_nothing_without_one() {
        let wire = |a: [u8; 4]| u32::from_ne_bytes(a);
        let cfg =
            NatConfig { segment: wire([10, 1, 0, 0]), segment_mask: wire([255, 255, 255, 0]), ..Default::default() };
        assert!(cfg.in_segment(wire([10, 1, 0, 9])) && !cfg.in_segment(wire([10, 2, 0, 9])));
        assert!(!NatConfig::default().in_segment(0) && !NatConfig::default().in_segment(wire([10, 1, 0, 9])));
    }

    #[test]
    fn connection_timeouts_follow_the_state() {
        let e = CtEntry { state: nat::CT_CLOSING, last_seen_ns: 1_000, ..Default::default() };
        assert!(!e.is_expired(1_000 + nat::CT_TIMEOUT_CLOSING_NS));
        assert!(e.is_expired(1_001 + nat::CT_TIMEOUT_CLOSING_NS));
        let est = CtEntry { state: nat::CT_ESTABLISHED, ..e };
        assert!(!est.is_expired(1_001 + nat::CT_TIMEOUT_CLOSING_NS));
        assert!(!e.is_expired(500), "stamped later on another CPU");
        // Not answered yet: the short timeout, whatever the state.
        let unanswered = CtEntry { flags: nat::CT_F_UNREPLIED | nat::CT_F_ANSWER, ..est };
        assert!(!unanswered.is_expired(1_000 + nat::CT_TIMEOUT_UNREPLIED_NS));
        assert!(unanswered.is_expired(1_001 + nat::CT_TIMEOUT_UNREPLIED_NS));
    }

    #[test]
    fn stats_accumulate_sums_every_field() {
        let one = PortStats {
            rx_packets: 1,
            rx_bytes: 2,
            tx_packets: 3,
            tx_bytes: 4,
            flooded_packets: 5,
            dropped_packets: 6,
            malformed_packets: 7,
            tx_errors: 8,
            spoofed_mac: 9,
            spoofed_ip: 10,
            spoofed_arp: 11,
            mac_limit: 12,
            tagged: 13,
            spoofed_nd: 14,
            router_guard: 15,
        };
        let mut sum = PortStats::default();
        sum.accumulate(&one);
        sum.accumulate(&one);
        assert_eq!(sum.rx_packets, 2);
        assert_eq!(sum.tx_errors, 16);
        assert_eq!(sum.malformed_packets, 14);
        assert_eq!((sum.spoofed_mac, sum.spoofed_ip, sum.spoofed_arp, sum.mac_limit), (18, 20, 22, 24));
        assert_eq!((sum.tagged, sum.spoofed_nd, sum.router_guard), (26, 28, 30));
    }

    #[test]
    fn link_local_is_the_kernels_eui64() {
        // `ip -6 addr` of an interface with MAC 02:00:00:66:00:01 shows fe80::ff:fe66:1.
        let ll = ipv6::link_local([0x02, 0, 0, 0x66, 0, 0x01]);
        assert_eq!(ll, [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xfe, 0x66, 0, 0x01]);
        let own = PortAddrs6 { ip: [0; 4], link_local: ipv6::words(ll) };
        assert!(own.owns(&ipv6::words(ll)));
        assert!(!own.owns(&[0; 4]), "the unspecified address is nobody's, even unset");
        assert!(!PortAddrs6::default().owns(&[0; 4]));
    }
}
