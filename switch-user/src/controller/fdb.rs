//! `switch fdb`: the learned MAC table, and static entries.
use std::collections::HashMap;

use serde::Serialize;
use switch_common::{FDB_F_STATIC, FdbEntry};

use super::{blocking, lock};
use crate::{
    datapath::{
        Pins,
        maps::{SwitchMaps, now_ns},
    },
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
}

fn ports_by_ifindex(state: &State, switch: &str) -> HashMap<u32, (String, String)> {
    state.ports(switch).map(|(ns, p)| (p.host_ifindex, (ns.clone(), p.host_if.clone()))).collect()
}

/// The FDB of `switch`. Expired dynamic entries and entries of ports that no longer exist are
/// deleted on the way (the datapath ages lazily; this is its garbage collector).
pub async fn show(switch: &str) -> Result<Vec<FdbRow>> {
    validate_name("switch name", switch)?;
    let store = lock().await?;
    let state = store.load()?;
    state.switch(switch)?;
    let ports = ports_by_ifindex(&state, switch);
    let pins = Pins::new(switch);
    blocking(move || {
        let mut maps = SwitchMaps::open(&pins)?;
        let ageing = maps.ageing()?.as_nanos() as u64;
        let now = now_ns();
        maps.flush_fdb(|e| e.is_expired(now, ageing) || !ports.contains_key(&e.ifindex))?;
        let mut rows: Vec<FdbRow> = maps
            .fdb_entries()?
            .into_iter()
            .filter_map(|(k, e)| {
                let (ns, ifname) = ports.get(&e.ifindex)?;
                Some(FdbRow {
                    mac: Mac(k.addr).to_string(),
                    namespace: ns.clone(),
                    interface: ifname.clone(),
                    kind: if e.is_static() { "static" } else { "dynamic" },
                    age_secs: (!e.is_static()).then(|| now.saturating_sub(e.last_seen_ns) as f64 / 1e9),
                })
            })
            .collect();
        rows.sort_by(|a, b| (&a.namespace, &a.mac).cmp(&(&b.namespace, &b.mac)));
        Ok(rows)
    })
    .await
}

/// Adds a static entry: `mac` is behind namespace `ns`'s port. Replaces a learned entry.
pub async fn add_static(mac: Mac, ns: &str) -> Result<()> {
    mac.validate_station()?;
    let store = lock().await?;
    let state = store.load()?;
    let port = state
        .namespaces
        .get(ns)
        .and_then(|s| s.port.clone().filter(|_| s.ready))
        .ok_or_else(|| Error::UnknownNamespace(ns.to_owned()))?;
    blocking(move || {
        let entry = FdbEntry { ifindex: port.host_ifindex, flags: FDB_F_STATIC, last_seen_ns: now_ns() };
        SwitchMaps::open(&Pins::new(&port.switch))?.fdb_insert(mac.0, entry)
    })
    .await
}

/// Deletes the entry of `mac` (static or learned) from `switch`.
pub async fn del(mac: Mac, switch: &str) -> Result<()> {
    validate_name("switch name", switch)?;
    let store = lock().await?;
    store.load()?.switch(switch)?;
    let sw = switch.to_owned();
    let existed = blocking(move || SwitchMaps::open(&Pins::new(&sw))?.fdb_remove(mac.0)).await?;
    if !existed {
        return Err(Error::invalid("MAC address", mac.to_string(), format!("not in the FDB of switch '{switch}'")));
    }
    Ok(())
}
