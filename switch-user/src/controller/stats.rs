//! `switch stats`: per-port counters.
use serde::Serialize;
use switch_common::PortStats;

use super::{blocking, lock};
use crate::{
    datapath::{Pins, maps::SwitchMaps},
    error::Result,
    names::validate_name,
};

/// Counters of one port.
#[derive(Clone, Debug, Serialize)]
pub struct PortRow {
    /// Namespace of the port.
    pub namespace: String,
    /// Host-side interface.
    pub interface: String,
    /// Frames received from the namespace.
    pub rx_packets: u64,
    /// Bytes received from the namespace.
    pub rx_bytes: u64,
    /// Frames sent into the namespace.
    pub tx_packets: u64,
    /// Bytes sent into the namespace.
    pub tx_bytes: u64,
    /// Received frames that were flooded.
    pub flooded: u64,
    /// Received frames that were dropped.
    pub dropped: u64,
    /// Of those, frames too short to parse.
    pub malformed: u64,
    /// Copies or redirects the kernel refused.
    pub tx_errors: u64,
}

impl PortRow {
    fn new(namespace: String, interface: String, s: PortStats) -> Self {
        Self {
            namespace,
            interface,
            rx_packets: s.rx_packets,
            rx_bytes: s.rx_bytes,
            tx_packets: s.tx_packets,
            tx_bytes: s.tx_bytes,
            flooded: s.flooded_packets,
            dropped: s.dropped_packets,
            malformed: s.malformed_packets,
            tx_errors: s.tx_errors,
        }
    }
}

/// Counters of every ready port of `switch`, summed over CPUs.
pub async fn show(switch: &str) -> Result<Vec<PortRow>> {
    validate_name("switch name", switch)?;
    let store = lock().await?;
    let state = store.load()?;
    state.switch(switch)?;
    let ports: Vec<(String, String, u32)> = state
        .ports(switch)
        .filter(|(n, _)| state.namespaces[*n].ready)
        .map(|(n, p)| (n.clone(), p.host_if.clone(), p.slot))
        .collect();
    let pins = Pins::new(switch);
    blocking(move || {
        let maps = SwitchMaps::open(&pins)?;
        ports.into_iter().map(|(ns, ifname, slot)| Ok(PortRow::new(ns, ifname, maps.port_stats(slot)?))).collect()
    })
    .await
}
