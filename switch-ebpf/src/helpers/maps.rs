//! Every map of a switch. The controller pins them under `/sys/fs/bpf/switch/NAME/` so they
//! outlive the process that loaded them; each switch loads its own copy of the program, so two
//! switches never share a map and stay isolated.
use aya_ebpf::{
    macros::map,
    maps::{Array, DevMapHash, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use switch_common::{
    CtEntry, CtKey, FDB_CAPACITY, FdbEntry, FwdKey, FwdStats, FwdTarget, HOST_FLOWS_CAPACITY, HostFlow, LearnWindow,
    MAX_PEERS, MAX_PORTS, MacKey, NatConfig, Peer, Port, PortAddrs6, PortStats, SockOrig, SwitchConfig, TableStats,
    TunnelConfig,
    capture::{self, Filter as CaptureFilter, Record as CaptureRecord},
    events::{EventRate, RING_BYTES},
    nat::{CT_CAPACITY, CT_UNREPLIED_CAPACITY, MAX_FORWARDS, MAX_UPLINK_ADDRS},
};

/// MAC -> port. LRU so that a full table evicts the coldest station instead of refusing to
/// learn new ones.
#[map(name = "FDB")]
pub static FDB: LruHashMap<MacKey, FdbEntry> = LruHashMap::with_max_entries(FDB_CAPACITY, 0);

/// MAC -> slot of the port it is bound to (see `switch_common::maps::BOUND`).
#[map(name = "BOUND")]
pub static BOUND: HashMap<MacKey, u32> = HashMap::with_max_entries(MAX_PORTS, 0);

/// Slot -> the port's learning window (the MAC limit of ports without a bound MAC). Shared
/// by the CPUs, not per CPU: the limit is the port's, and a lost increment when two CPUs
/// learn at once only lets one station more through.
#[map(name = "LEARNED")]
pub static LEARNED: Array<LearnWindow> = Array::with_max_entries(MAX_PORTS, 0);

/// Slot -> port; the flood list. An array so the flood loop is a bounded walk over indices.
#[map(name = "PORTS")]
pub static PORTS: Array<Port> = Array::with_max_entries(MAX_PORTS, 0);

/// Slot -> the IPv6 addresses the port is bound to (port security of IPv6 frames only: the
/// IPv4 path never reads it).
#[map(name = "PORT_ADDRS6")]
pub static PORT_ADDRS6: Array<PortAddrs6> = Array::with_max_entries(MAX_PORTS, 0);

/// IPv6 address -> slot of the port bound to it (see `switch_common::maps::BOUND_IP6`).
#[map(name = "BOUND_IP6")]
pub static BOUND_IP6: HashMap<[u32; 4], u32> = HashMap::with_max_entries(2 * MAX_PORTS, 0);

/// Each CPU's IPv6 parse under way (`ipv6::check`): its state would not fit the stack.
#[map(name = "IPV6_SCRATCH")]
pub static IPV6_SCRATCH: PerCpuArray<super::ipv6::Sender> = PerCpuArray::with_max_entries(1, 0);

/// ifindex -> slot, for the ingress port and for the egress port of a known unicast frame.
#[map(name = "PORT_SLOTS")]
pub static PORT_SLOTS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_PORTS, 0);

/// Slot -> counters. Per CPU: no atomics and no shared cache lines on the hot path.
#[map(name = "STATS")]
pub static STATS: PerCpuArray<PortStats> = PerCpuArray::with_max_entries(MAX_PORTS, 0);

/// Switch-wide settings, one entry.
#[map(name = "CONFIG")]
pub static CONFIG: Array<SwitchConfig> = Array::with_max_entries(1, 0);

/// ifindex -> port, for the XDP datapath's redirects and broadcast flood (unused by TC).
#[map(name = "PORT_DEVMAP")]
pub static PORT_DEVMAP: DevMapHash = DevMapHash::with_max_entries(MAX_PORTS, 0);

/// Forwarded ports of the switch.
#[map(name = "FORWARDS")]
pub static FORWARDS: HashMap<FwdKey, FwdTarget> = HashMap::with_max_entries(MAX_FORWARDS, 0);

/// The uplinks' IPv4 addresses: forwards answer on every one of them.
#[map(name = "UPLINK_ADDRS")]
pub static UPLINK_ADDRS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_UPLINK_ADDRS, 0);

/// Both directions of every answered connection. LRU: a full table evicts the coldest.
#[map(name = "CONNTRACK")]
pub static CONNTRACK: LruHashMap<CtKey, CtEntry> = LruHashMap::with_max_entries(CT_CAPACITY, 0);

/// Both directions of connections not answered yet, until their first answer moves them to
/// CONNTRACK: a budget of their own, so a flood of them evicts only its like.
#[map(name = "CT_UNREPLIED")]
pub static CT_UNREPLIED: LruHashMap<CtKey, CtEntry> = LruHashMap::with_max_entries(CT_UNREPLIED_CAPACITY, 0);

/// Flows the host translated into the segment (`helpers/host_flows.rs`): both directions of
/// each under one key, the value naming the end whose answers go back through the host.
#[map(name = "HOST_FLOWS")]
pub static HOST_FLOWS: LruHashMap<CtKey, HostFlow> = LruHashMap::with_max_entries(HOST_FLOWS_CAPACITY, 0);

/// One entry, 1 once `HOST_FLOWS` got its first flow: until then no switched frame looks there.
#[map(name = "HOST_FLOWS_ON")]
pub static HOST_FLOWS_ON: Array<u32> = Array::with_max_entries(1, 0);

/// Per-rule counters.
#[map(name = "FWD_STATS")]
pub static FWD_STATS: PerCpuArray<FwdStats> = PerCpuArray::with_max_entries(MAX_FORWARDS, 0);

/// Switch-wide NAT settings.
#[map(name = "NAT_CONFIG")]
pub static NAT_CONFIG: Array<NatConfig> = Array::with_max_entries(1, 0);

/// Uplink ifindex -> address: the source masqueraded traffic gets on that uplink.
#[map(name = "UPLINK_BY_IFINDEX")]
pub static UPLINK_BY_IFINDEX: HashMap<u32, u32> = HashMap::with_max_entries(MAX_UPLINK_ADDRS, 0);

/// The switch's namespaces, by network namespace cookie.
#[map(name = "NAT_NETNS")]
pub static NAT_NETNS: HashMap<u64, u32> = HashMap::with_max_entries(MAX_PORTS, 0);

/// UDP sockets of host processes talking to a forwarded port: what they sent to.
#[map(name = "SOCK_ORIG")]
pub static SOCK_ORIG: LruHashMap<u64, SockOrig> = LruHashMap::with_max_entries(4096, 0);

/// Entries added to and removed from FDB and CONNTRACK (`TableStats`); the controller derives
/// evictions from them. Index 0 is the programs', index 1 the controller's.
#[map(name = "TABLE_STATS")]
pub static TABLE_STATS: PerCpuArray<TableStats> = PerCpuArray::with_max_entries(2, 0);

/// Events for `switch monitor` (`helpers/events.rs`), written only while CFG_F_EVENTS is set.
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

/// Each CPU's rate-limit window for the events. Per CPU: no shared cache line, and no race
/// between two CPUs counting the same window.
#[map(name = "EVENT_RATE")]
pub static EVENT_RATE: PerCpuArray<EventRate> = PerCpuArray::with_max_entries(1, 0);

/// Captured frames for `switch capture` (`helpers/capture.rs`), written only while
/// CFG_F_CAPTURE is set. A ring of its own: a capture's volume must not crowd out events.
#[map(name = "CAPTURE")]
pub static CAPTURE: RingBuf = RingBuf::with_byte_size(capture::RING_BYTES, 0);

/// Which frames the running capture wants (one entry).
#[map(name = "CAPTURE_FILTER")]
pub static CAPTURE_FILTER: Array<CaptureFilter> = Array::with_max_entries(1, 0);

/// Each CPU's record under assembly. A ring buffer reservation needs a size known when the
/// program is verified; a record's size depends on the frame, so it is built here and copied
/// into the ring with `bpf_ringbuf_output`, which takes a bounded variable size.
#[map(name = "CAPTURE_SCRATCH")]
pub static CAPTURE_SCRATCH: PerCpuArray<CaptureRecord> = PerCpuArray::with_max_entries(1, 0);

/// The tunnel port (VNI, VXLAN device, peer count), one entry; all zero without a tunnel.
#[map(name = "TUNNEL")]
pub static TUNNEL: Array<TunnelConfig> = Array::with_max_entries(1, 0);

/// Slot -> peer (remote VTEP); the head-end replication list. An array, as PORTS, so the
/// replication loop is a bounded walk over indices.
#[map(name = "PEERS")]
pub static PEERS: Array<Peer> = Array::with_max_entries(MAX_PEERS, 0);

/// Peer address (network order) -> slot: what the tunnel takes frames from.
#[map(name = "PEER_SLOTS")]
pub static PEER_SLOTS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_PEERS, 0);

/// Address -> slot of the port bound to it (see `switch_common::maps::BOUND_IP`): what no
/// frame from the tunnel may claim. Only frames from the tunnel look here.
#[map(name = "BOUND_IP")]
pub static BOUND_IP: HashMap<u32, u32> = HashMap::with_max_entries(MAX_PORTS, 0);

/// Peer address -> its learning window (the tunnel port's MAC limit, one per peer). A hash
/// keyed by address rather than an array by peer slot: `peer del` moves the peers after it
/// to other slots, and a window must stay with its peer. Written by the controller as peers
/// come and go; a peer without one falls back on the tunnel port's window in `LEARNED`.
#[map(name = "PEER_LEARNED")]
pub static PEER_LEARNED: HashMap<u32, LearnWindow> = HashMap::with_max_entries(MAX_PEERS, 0);
