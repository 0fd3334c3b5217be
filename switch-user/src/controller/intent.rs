//! The convergence rule: what a killed command left is rolled back by the next mutating
//! command of the same switch, and host settings the switch changed are given back by `down`.
//!
//! Every command holds the state lock from its first read to its last write, so a record seen
//! `ready: false` under the lock belongs to a command that died: nobody is still making it.
use super::port;
use crate::{
    datapath::Datapath,
    error::{Context as _, Result},
    state::{ForwardState, PortKind, PortState, State, Store},
    sys::{blocking, netlink::Netlink},
};

/// A record a command makes under the rule, by what names it.
pub(crate) enum Record<'a> {
    /// A switch.
    Switch(&'a str),
    /// A namespace the switch made (nothing if there is none: an adopted port's).
    Namespace(&'a str),
    /// A port, with what making it found out.
    Port(&'a PortState, port::Made),
    /// A forward.
    Forward(&'a ForwardState),
}

/// Marks `record` ready, in memory: what it stands for is made (step 5 of the rule). A
/// record that is not there is left so.
pub(crate) fn made(state: &mut State, record: Record<'_>) {
    match record {
        Record::Switch(name) => {
            if let Some(s) = state.switches.get_mut(name) {
                s.ready = true;
            }
        }
        Record::Namespace(ns) => {
            if let Some(n) = state.namespaces.get_mut(ns) {
                n.ready = true;
            }
        }
        Record::Port(p, made) => {
            if let Some(r) = state.port_mut(&p.switch, p.kind, &p.owner) {
                r.host_ifindex = made.ifindex;
                r.mac = made.mac.or(r.mac);
                r.netns_cookie = made.cookie;
                r.ready = true;
            }
        }
        Record::Forward(f) => {
            if let Some(r) = state.forwards.iter_mut().find(|r| **r == *f) {
                r.ready = true;
            }
        }
    }
}

/// The last step of a command that made something: marks `records` ready and saves the
/// state. Until the save, a crash leaves them unfinished, for the next command to roll back.
pub(crate) fn finish<'a>(
    store: &Store,
    state: &mut State,
    records: impl IntoIterator<Item = Record<'a>>,
) -> Result<()> {
    for r in records {
        made(state, r);
    }
    store.save(state)
}

/// Which records `remove_records` takes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Which {
    /// Those a killed command left unfinished (`ready: false`).
    Unfinished,
    /// All of the switch's (`down`).
    All,
}

/// Takes out records of switch `switch` and what they stand for: forwards first (they point
/// at ports), then ports of every kind (with the namespaces the switch made and an uplink's
/// sysctls). Each step is saved as it is done, so a crash here converges too. Returns the
/// namespaces removed.
pub(crate) async fn remove_records(
    store: &Store,
    state: &mut State,
    switch: &str,
    which: Which,
) -> Result<Vec<String>> {
    let takes = |ready: bool| which == Which::All || !ready;
    let dp: Option<Box<dyn Datapath>> = state.switches.get(switch).map(|s| s.datapath.open(switch));
    let forwards: Vec<_> = state.forwards.iter().filter(|f| f.switch == switch && takes(f.ready)).cloned().collect();
    for f in forwards {
        tracing::info!(switch, proto = %f.proto, first = f.host_first, last = f.host_last, ready = f.ready, "removing a forward");
        if let Some(fw) = dp.as_deref().and_then(|d| d.forwarding()) {
            fw.remove(&f).await?;
        }
        state.forwards.retain(|x| x != &f);
        store.save(state)?;
    }
    let mut removed = vec![];
    let ports: Vec<_> = state.ports(switch).filter(|p| takes(p.ready)).cloned().collect();
    // The veths of all of them in one kernel batch (see `Netlink::delete_all`): `down` of a
    // switch with hundreds of ports takes a fraction of a second instead of 30 ms a port.
    // What follows finds them gone.
    let veths: Vec<String> = ports.iter().filter(|p| p.kind.is_switched()).map(|p| p.host_if.clone()).collect();
    if veths.len() > 1 {
        Netlink::new()?.delete_all(&veths).await?;
    }
    for p in ports {
        tracing::info!(switch, kind = %p.kind, owner = %p.owner, ready = p.ready, "removing a port");
        port::teardown(state, dp.as_deref(), &p).await?;
        if p.kind == PortKind::Uplink {
            restore_sysctls_of(store, state, switch, &p.host_if).await?;
        }
        state.remove_port(switch, p.kind, &p.owner);
        if p.kind.owns_namespace() {
            state.namespaces.remove(&p.owner);
            removed.push(p.owner.clone());
        }
        store.save(state)?;
    }
    removed.sort();
    Ok(removed)
}

/// Rolls back every record of switch `switch` that a killed command left unfinished, and
/// turns off a datapath stream (log, events, capture) whose readers were all killed.
pub(crate) async fn converge(store: &Store, state: &mut State, switch: &str) -> Result<()> {
    remove_records(store, state, switch, Which::Unfinished).await?;
    let dp: Option<Box<dyn Datapath>> = state.switches.get(switch).map(|s| s.datapath.open(switch));
    let (Some(sw), Some(dp)) = (state.switches.get_mut(switch), dp.as_deref()) else { return Ok(()) };
    if super::readers::forget_killed(sw, dp, switch).await? {
        store.save(state)?;
    }
    Ok(())
}

/// Sets host sysctl `path` to `value` for switch `switch`, recording the value it had first
/// (and saving the record before the write) so that `down` can give it back. A sysctl the
/// switch already changed keeps its first recorded value.
///
/// Switches share some sysctls (the forwarding of an uplink several of them use): each
/// records the host's own value, taken from another switch's record when there is one (the
/// live value is then that switch's write), and only the last switch that needs it writes it
/// back (`restore_sysctls`).
pub(crate) async fn set_sysctl(store: &Store, state: &mut State, switch: &str, path: &str, value: &str) -> Result<()> {
    let previous = match recorded_elsewhere(state, switch, path) {
        Some(v) => v.to_owned(),
        None => {
            let p = path.to_owned();
            blocking(move || std::fs::read_to_string(&p).context(format!("reading {p}"))).await?.trim().to_owned()
        }
    };
    let sw = state.switches.get_mut(switch).expect("the caller holds the switch record");
    if !sw.sysctls.contains_key(path) {
        sw.sysctls.insert(path.to_owned(), previous);
        store.save(state)?;
    }
    let (p, v) = (path.to_owned(), value.to_owned());
    blocking(move || std::fs::write(&p, v.as_bytes()).context(format!("writing {p}"))).await
}

/// The host's own value of sysctl `path` as another switch than `switch` recorded it, if one
/// did: that switch changed it too and still needs it.
fn recorded_elsewhere<'a>(state: &'a State, switch: &str, path: &str) -> Option<&'a str> {
    state
        .switches
        .iter()
        .filter(|(name, _)| name.as_str() != switch)
        .find_map(|(_, s)| s.sysctls.get(path))
        .map(|v| v.as_str())
}

/// Writes back every sysctl switch `switch` changed that no other switch still needs. A
/// sysctl whose interface is gone needs nothing.
pub(crate) async fn restore_sysctls(state: &State, switch: &str) -> Result<()> {
    let Some(sw) = state.switches.get(switch) else { return Ok(()) };
    let mine = sw.sysctls.iter().filter(|(k, _)| recorded_elsewhere(state, switch, k).is_none());
    write_back(mine.map(|(k, v)| (k.clone(), v.clone())).collect()).await
}

/// Writes back and forgets the sysctls switch `switch` changed on interface `ifname` (an
/// uplink that goes while the switch stays).
async fn restore_sysctls_of(store: &Store, state: &mut State, switch: &str, ifname: &str) -> Result<()> {
    let Some(sw) = state.switches.get(switch) else { return Ok(()) };
    let needle = format!("/conf/{ifname}/");
    let mine: Vec<(String, String)> =
        sw.sysctls.iter().filter(|(k, _)| k.contains(&needle)).map(|(k, v)| (k.clone(), v.clone())).collect();
    let only_mine = mine.iter().filter(|(k, _)| recorded_elsewhere(state, switch, k).is_none()).cloned().collect();
    write_back(only_mine).await?;
    let sw = state.switches.get_mut(switch).expect("looked up above");
    for (k, _) in mine {
        sw.sysctls.remove(&k);
    }
    store.save(state)
}

/// Writes each `(path, value)`; a sysctl whose interface is gone needs nothing.
async fn write_back(recorded: Vec<(String, String)>) -> Result<()> {
    blocking(move || {
        for (path, previous) in recorded {
            match std::fs::write(&path, previous.as_bytes()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).context(format!("restoring {path}")),
            }
        }
        Ok(())
    })
    .await
}
