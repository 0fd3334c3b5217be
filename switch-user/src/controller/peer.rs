//! `switch peer add|del|list`: the peers of a switch's tunnel port, the other hosts' VTEP
//! addresses. A static list: floods are replicated to every peer, and the tunnel takes frames
//! from peers only. The list lives in the tunnel port's record; the datapath gets the whole
//! list on every change, so a command killed between the two is made good by the next one.
use std::{collections::HashMap, net::Ipv4Addr};

use serde::Serialize;

use super::{datapath_of, intent, lock};
use crate::{
    error::{Error, Result},
    names::{Mac, validate_name},
    state::{PortKind, State, Store},
};

/// One row of `switch peer list`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PeerRow {
    /// The switch.
    pub switch: String,
    /// Its VNI.
    pub vni: u32,
    /// The peer's VTEP address.
    pub peer: Ipv4Addr,
    /// Stations the FDB has at this peer now.
    pub stations: usize,
    /// New stations learned from the peer in the current ageing period: its share of the
    /// learning limit (`--max-learned`) used. `None`: not known (a switch pinned by an older
    /// binary has no window per peer).
    pub learned: Option<u32>,
}

/// What `peer add` or `peer del` did.
#[derive(Clone, Debug, Serialize)]
pub struct PeerReport {
    /// The switch.
    pub switch: String,
    /// The peer.
    pub peer: Ipv4Addr,
    /// Whether the command changed the list (false: it was already as asked).
    pub changed: bool,
    /// `del`: the stations at the peer that were forgotten.
    pub flushed: usize,
}

/// A peer address must be one host's unicast address on the underlay.
fn validate(addr: Ipv4Addr) -> Result<()> {
    if addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() || addr.is_loopback() {
        return Err(Error::invalid("peer address", addr.to_string(), "must be another host's unicast address"));
    }
    Ok(())
}

/// The peers of `switch`'s tunnel, which must be ready.
fn peers_of(state: &State, switch: &str) -> Result<Vec<Ipv4Addr>> {
    state.switch(switch)?;
    let t = state.tunnel(switch).filter(|p| p.ready).and_then(|p| p.tunnel.as_ref()).ok_or_else(|| {
        Error::invalid("switch", switch, "has no tunnel (make one with: switch up --vxlan VNI --underlay IFACE)")
    })?;
    Ok(t.peers.clone())
}

/// Records `peers` as the tunnel's list and hands it to the datapath.
async fn write(store: &Store, state: &mut State, switch: &str, peers: Vec<Ipv4Addr>) -> Result<()> {
    let owner = state.tunnel(switch).map(|p| p.owner.clone()).expect("checked by peers_of");
    let p = state.port_mut(switch, PortKind::Tunnel, &owner).expect("found just above");
    p.tunnel.as_mut().expect("checked by peers_of").peers = peers.clone();
    store.save(state)?;
    datapath_of(state, switch)?.require_tunnel()?.set_peers(&peers).await
}

/// Adds peer `addr` to `switch`'s tunnel. Already a peer: nothing to do.
pub async fn add(switch: &str, addr: Ipv4Addr) -> Result<PeerReport> {
    validate_name("switch name", switch)?;
    validate(addr)?;
    let store = lock().await?;
    let mut state = store.load()?;
    state.switch(switch)?;
    intent::converge(&store, &mut state, switch).await?;
    let mut peers = peers_of(&state, switch)?;
    let local = state.tunnel(switch).and_then(|p| p.tunnel.as_ref()).map(|t| t.local);
    if local == Some(addr) {
        return Err(Error::invalid("peer address", addr.to_string(), "is this host's own VTEP address"));
    }
    let report = |changed| PeerReport { switch: switch.to_owned(), peer: addr, changed, flushed: 0 };
    if peers.contains(&addr) {
        return Ok(report(false));
    }
    if peers.len() >= switch_common::MAX_PEERS as usize {
        return Err(Error::invalid(
            "peer address",
            addr.to_string(),
            format!("switch '{switch}' has {} peers, the most a tunnel has", switch_common::MAX_PEERS),
        ));
    }
    let before = peers.clone();
    peers.push(addr);
    if let Err(e) = write(&store, &mut state, switch, peers).await {
        // Back to the list as it was, in the record and in the datapath.
        let _ = write(&store, &mut state, switch, before).await;
        return Err(e);
    }
    Ok(report(true))
}

/// Removes peer `addr` from `switch`'s tunnel and forgets the stations learned at it. Not a
/// peer: nothing to do.
pub async fn del(switch: &str, addr: Ipv4Addr) -> Result<PeerReport> {
    validate_name("switch name", switch)?;
    let store = lock().await?;
    let mut state = store.load()?;
    state.switch(switch)?;
    intent::converge(&store, &mut state, switch).await?;
    let peers = peers_of(&state, switch)?;
    if !peers.contains(&addr) {
        return Ok(PeerReport { switch: switch.to_owned(), peer: addr, changed: false, flushed: 0 });
    }
    let left: Vec<Ipv4Addr> = peers.into_iter().filter(|p| *p != addr).collect();
    // Out of the list first (no flood reaches it, none of its frames is taken), then its
    // stations: none can be learned again in between.
    write(&store, &mut state, switch, left).await?;
    let flushed = datapath_of(&state, switch)?.require_tunnel()?.forget_peer(addr).await?;
    Ok(PeerReport { switch: switch.to_owned(), peer: addr, changed: true, flushed })
}

/// The peers of `switch` (of every switch with a tunnel if `None`), with the stations at
/// each. Changes nothing.
pub async fn list(switch: Option<&str>) -> Result<Vec<PeerRow>> {
    if let Some(s) = switch {
        validate_name("switch name", s)?;
    }
    let store = lock().await?;
    let state = store.load()?;
    if let Some(s) = switch {
        peers_of(&state, s)?;
    }
    let mut rows = vec![];
    let tunnels: Vec<_> = state
        .ports
        .iter()
        .filter(|p| p.kind == PortKind::Tunnel && p.ready && switch.is_none_or(|s| s == p.switch))
        .collect();
    for p in tunnels {
        let Some(t) = &p.tunnel else { continue };
        let dp = datapath_of(&state, &p.switch)?;
        let entries = dp.fdb(HashMap::from([(p.host_ifindex, Mac([0; 6]))])).await?;
        let learned = dp.require_tunnel()?.learned().await?;
        for peer in &t.peers {
            let stations = entries.iter().filter(|e| e.remote == Some(*peer)).count();
            let learned = learned.get(peer).copied();
            rows.push(PeerRow { switch: p.switch.clone(), vni: t.vni, peer: *peer, stations, learned });
        }
    }
    Ok(rows)
}
