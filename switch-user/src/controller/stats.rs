//! `switch stats`: per-port counters, and the switch-wide drops that belong to no port.
use serde::Serialize;

use super::{datapath_of, lock};
use crate::{
    datapath::SwitchDrops,
    error::Result,
    names::validate_name,
    state::{PortKind, PortState, State},
};

/// Counters of one port. Counters a datapath does not keep are `None` (the bridge's come from
/// the host veth's interface counters: no flooding or drop reasons).
#[derive(Clone, Debug, Serialize)]
pub struct PortRow {
    /// Namespace of the port.
    pub namespace: String,
    /// Host-side interface.
    pub interface: String,
    /// The pod or container a runtime runs behind the port (`namespace/name` for a pod), as
    /// `switch ports` shows it.
    pub workload: Option<String>,
    /// Frames received from the namespace.
    pub rx_packets: u64,
    /// Bytes received from the namespace.
    pub rx_bytes: u64,
    /// Frames sent into the namespace.
    pub tx_packets: u64,
    /// Bytes sent into the namespace.
    pub tx_bytes: u64,
    /// Received frames that were flooded.
    pub flooded: Option<u64>,
    /// Received frames that were dropped.
    pub dropped: Option<u64>,
    /// Of those, frames too short to parse.
    pub malformed: Option<u64>,
    /// Copies or redirects that could not be sent.
    pub tx_errors: Option<u64>,
    /// Dropped by port security: another station's MAC.
    pub spoofed_mac: Option<u64>,
    /// Dropped by port security: IPv4 from another address.
    pub spoofed_ip: Option<u64>,
    /// Dropped by port security: ARP claiming another MAC or address.
    pub spoofed_arp: Option<u64>,
    /// Dropped: a new station from a port that reached its learning limit (`up --max-learned`).
    pub mac_limit: Option<u64>,
    /// Dropped by port security: a VLAN-tagged frame.
    pub tagged: Option<u64>,
    /// Dropped by port security: IPv6 neighbour discovery claiming another MAC or address.
    pub spoofed_nd: Option<u64>,
    /// Dropped by port security: an IPv6 router advertisement or redirect (RA guard).
    pub router_guard: Option<u64>,
}

/// `switch stats`: every port's counters and the switch-wide drops.
#[derive(Clone, Debug, Serialize)]
pub struct StatsReport {
    /// Switched ports (the gateway shows as `host`).
    pub ports: Vec<PortRow>,
    /// Drops that belong to no port (`None`: the datapath keeps none).
    pub switch: Option<SwitchDrops>,
}

/// Counters of every ready switched port of `switch` (the gateway shows as `host`), summed
/// over CPUs, and the switch-wide drops.
pub async fn show(switch: &str) -> Result<StatsReport> {
    validate_name("switch name", switch)?;
    let store = lock().await?;
    read(&store.load()?, switch).await
}

/// The counters of `switch`'s ports as `state` records them (`show` under the lock; metrics
/// from a copy of the state, with the lock released).
pub(crate) async fn read(state: &State, switch: &str) -> Result<StatsReport> {
    let dp = datapath_of(state, switch)?;
    let mut ports: Vec<PortState> = state.switched_ports(switch).cloned().collect();
    // The host first, as it always was; then namespaces by name.
    ports.sort_by_key(|p| (p.kind != PortKind::Gateway, p.owner.clone()));
    let counters = dp.stats(&ports).await?;
    let mut rows = vec![];
    for (p, c) in ports.iter().zip(counters) {
        let s = c.stats;
        let d = |v: u64| c.detailed.then_some(v);
        rows.push(PortRow {
            namespace: p.owner.clone(),
            interface: p.host_if.clone(),
            workload: p.workload_name(),
            rx_packets: s.rx_packets,
            rx_bytes: s.rx_bytes,
            tx_packets: s.tx_packets,
            tx_bytes: s.tx_bytes,
            flooded: d(s.flooded_packets),
            dropped: d(s.dropped_packets),
            malformed: d(s.malformed_packets),
            tx_errors: d(s.tx_errors),
            spoofed_mac: d(s.spoofed_mac),
            spoofed_ip: d(s.spoofed_ip),
            spoofed_arp: d(s.spoofed_arp),
            mac_limit: d(s.mac_limit),
            tagged: d(s.tagged),
            spoofed_nd: d(s.spoofed_nd),
            router_guard: d(s.router_guard),
        });
    }
    let switch = match dp.tables() {
        Some(t) => Some(t.drops().await?),
        None => None,
    };
    Ok(StatsReport { ports: rows, switch })
}
