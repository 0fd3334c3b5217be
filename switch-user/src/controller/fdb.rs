//! `switch fdb`: the MAC table, and static entries.
use std::collections::HashMap;

use serde::Serialize;

use super::{datapath_of, intent, lock};
use crate::sys::netlink::Netlink;
use crate::{
    error::{Error, Result},
    names::{Mac, validate_name},
    state::State,
};

/// One FDB entry as shown to users.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FdbRow {
    /// Station MAC.
    pub mac: String,
    /// Namespace of the port.
    pub namespace: String,
    /// Host-side interface of the port.
    pub interface: String,
    /// "static" or "dynamic".
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Seconds since the station was last seen (dynamic entries).
    pub age_secs: Option<f64>,
    /// A station behind the tunnel port: the peer (remote VTEP) it is at.
    pub peer: Option<String>,
}

/// A port as the FDB shows it.
struct PortView {
    namespace: String,
    host_if: String,
    /// MAC of the host end (the bridge lists it as a local entry, to be skipped).
    host_mac: Option<Mac>,
}

/// Ready switched ports of `switch` by host ifindex, labelled by their owner (a namespace, or
/// `host` for the gateway). One netlink dump of the host's links gives every index and MAC.
async fn ports(state: &State, switch: &str) -> Result<HashMap<u32, PortView>> {
    let links = Netlink::new()?.links().await?;
    Ok(state
        .switched_ports(switch)
        .filter_map(|p| {
            let (index, host_mac) = *links.get(&p.host_if)?;
            Some((index, PortView { namespace: p.owner.clone(), host_if: p.host_if.clone(), host_mac }))
        })
        .collect())
}

/// The FDB of `switch`: live entries only. Changes nothing.
pub async fn show(switch: &str) -> Result<Vec<FdbRow>> {
    validate_name("switch name", switch)?;
    let store = lock().await?;
    let state = store.load()?;
    let dp = datapath_of(&state, switch)?;
    let ports = ports(&state, switch).await?;
    // The bridge lists each port's own (host end) address; it is told which ones to skip.
    let host_macs = ports.iter().map(|(i, p)| (*i, p.host_mac.unwrap_or(Mac([0; 6])))).collect();
    let mut rows: Vec<FdbRow> = dp
        .fdb(host_macs)
        .await?
        .into_iter()
        .filter_map(|e| {
            let p = ports.get(&e.ifindex)?;
            Some(FdbRow {
                mac: e.mac.to_string(),
                namespace: p.namespace.clone(),
                interface: p.host_if.clone(),
                kind: if e.is_static { "static" } else { "dynamic" },
                age_secs: e.age.map(|a| a.as_secs_f64()),
                peer: e.remote.map(|r| r.to_string()),
            })
        })
        .collect();
    rows.sort_by(|a, b| (&a.namespace, &a.mac).cmp(&(&b.namespace, &b.mac)));
    Ok(rows)
}

/// Adds a static entry: `mac` is behind namespace `ns`'s port. Replaces a learned entry.
pub async fn add_static(mac: Mac, ns: &str) -> Result<()> {
    mac.validate_station()?;
    validate_name("namespace name", ns)?;
    let store = lock().await?;
    let mut state = store.load()?;
    let switch = state.ns_port(ns).map(|p| p.switch.clone()).ok_or_else(|| Error::UnknownNamespace(ns.to_owned()))?;
    intent::converge(&store, &mut state, &switch).await?;
    let port = state.ns_port(ns).filter(|p| p.ready).ok_or_else(|| Error::UnknownNamespace(ns.to_owned()))?;
    datapath_of(&state, &switch)?.fdb_add(mac, port.host_ifindex).await
}

/// Deletes the entry of `mac` (static or learned) from `switch`.
pub async fn del(mac: Mac, switch: &str) -> Result<()> {
    validate_name("switch name", switch)?;
    let store = lock().await?;
    let mut state = store.load()?;
    state.switch(switch)?;
    intent::converge(&store, &mut state, switch).await?;
    let ports: Vec<u32> = ports(&state, switch).await?.into_keys().collect();
    if !datapath_of(&state, switch)?.fdb_del(mac, &ports).await? {
        return Err(Error::invalid("MAC address", mac.to_string(), format!("not in the FDB of switch '{switch}'")));
    }
    Ok(())
}
