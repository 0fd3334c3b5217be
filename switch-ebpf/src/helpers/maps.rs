//! Every map of a switch. The controller pins them under `/sys/fs/bpf/switch/NAME/` so they
//! outlive the process that loaded them; each switch loads its own copy of the program, so two
//! switches never share a map and stay isolated.
use aya_ebpf::{
    macros::map,
    maps::{Array, DevMapHash, HashMap, LruHashMap, PerCpuArray},
};
use switch_common::{FDB_CAPACITY, FdbEntry, MAX_PORTS, MacKey, Port, PortStats, SwitchConfig};

/// MAC -> port. LRU so that a full table evicts the coldest station instead of refusing to
/// learn new ones.
#[map(name = "FDB")]
pub static FDB: LruHashMap<MacKey, FdbEntry> = LruHashMap::with_max_entries(FDB_CAPACITY, 0);

/// Slot -> port; the flood list. An array so the flood loop is a bounded walk over indices.
#[map(name = "PORTS")]
pub static PORTS: Array<Port> = Array::with_max_entries(MAX_PORTS, 0);

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
