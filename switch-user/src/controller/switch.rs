//! `switch up` and `switch down`.
use serde::Serialize;
use switch_common::{CFG_F_REDIRECT_PEER, DEFAULT_AGEING_SECS, SwitchConfig};

use super::{blocking, failpoint, lock, port};
use crate::{
    datapath::{Pins, maps::SwitchMaps},
    error::{Error, Result},
    names::validate_name,
    state::{Redirect, SwitchState},
};

/// Options of `switch up`. `None` means "default for a new switch, don't care for an
/// existing one".
#[derive(Clone, Debug, Default)]
pub struct UpOptions {
    /// Switch name.
    pub name: String,
    /// FDB ageing time in seconds.
    pub ageing_secs: Option<u64>,
    /// How known unicast is redirected.
    pub redirect: Option<Redirect>,
}

/// What `up` did.
#[derive(Clone, Debug, Serialize)]
pub struct UpReport {
    /// Switch name.
    pub name: String,
    /// False if it was already up.
    pub created: bool,
    /// FDB ageing time in seconds.
    pub ageing_secs: u64,
    /// Unicast redirect mode.
    pub redirect: Redirect,
    /// Where the datapath is pinned.
    pub pins: String,
}

/// Creates switch `opts.name`, or checks that it is up with compatible settings.
pub async fn up(opts: UpOptions) -> Result<UpReport> {
    validate_name("switch name", &opts.name)?;
    if opts.ageing_secs == Some(0) {
        return Err(Error::invalid("ageing time", "0", "must be at least 1 second"));
    }
    let store = lock().await?;
    let mut state = store.load()?;
    let pins = Pins::new(&opts.name);
    let report = |s: &SwitchState, created| UpReport {
        name: opts.name.clone(),
        created,
        ageing_secs: s.ageing_secs,
        redirect: s.redirect,
        pins: pins.dir().display().to_string(),
    };

    if let Some(existing) = state.switches.get(&opts.name) {
        if existing.ready && pins.complete() {
            let mut diffs = vec![];
            if let Some(a) = opts.ageing_secs.filter(|&a| a != existing.ageing_secs) {
                diffs.push(format!("ageing {}s (asked for {a}s)", existing.ageing_secs));
            }
            if let Some(r) = opts.redirect.filter(|&r| r != existing.redirect) {
                diffs.push(format!("redirect {} (asked for {r})", existing.redirect));
            }
            if !diffs.is_empty() {
                return Err(Error::Conflict { name: opts.name.clone(), detail: diffs.join(", ") });
            }
            return Ok(report(existing, false));
        }
        if existing.ready {
            return Err(Error::Command(format!(
                "switch '{}' is recorded as up but its pins under {} are missing; run 'switch down --name {}' and create it again",
                opts.name,
                pins.dir().display(),
                opts.name
            )));
        }
        // A previous `up` was interrupted: start over.
        tracing::info!(switch = %opts.name, "cleaning up an interrupted 'switch up'");
    }

    let new = SwitchState {
        ageing_secs: opts.ageing_secs.unwrap_or(DEFAULT_AGEING_SECS),
        redirect: opts.redirect.unwrap_or(Redirect::Peer),
        ready: false,
    };
    state.switches.insert(opts.name.clone(), new.clone());
    store.save(&state)?;

    let p = pins.clone();
    let cfg = SwitchConfig {
        ageing_ns: new.ageing_secs.saturating_mul(1_000_000_000),
        flags: if new.redirect == Redirect::Peer { CFG_F_REDIRECT_PEER } else { 0 },
        slot_limit: 0,
    };
    let made = blocking(move || {
        p.remove()?;
        p.create()?;
        SwitchMaps::open(&p)?.set_config(cfg)?;
        failpoint("up:pinned")
    })
    .await;
    if let Err(e) = made {
        let p = pins.clone();
        let _ = blocking(move || p.remove()).await;
        state.switches.remove(&opts.name);
        store.save(&state)?;
        return Err(e);
    }
    let s = state.switches.get_mut(&opts.name).expect("inserted above");
    s.ready = true;
    let out = report(s, true);
    store.save(&state)?;
    Ok(out)
}

/// What `down` did.
#[derive(Clone, Debug, Serialize)]
pub struct DownReport {
    /// Switch name.
    pub name: String,
    /// False if there was nothing to remove.
    pub existed: bool,
    /// Namespaces removed with their ports.
    pub removed_namespaces: Vec<String>,
}

/// Removes switch `name`, its ports and their namespaces. Converges whatever state an
/// interrupted command left; a switch that does not exist is not an error.
pub async fn down(name: &str) -> Result<DownReport> {
    validate_name("switch name", name)?;
    let store = lock().await?;
    let mut state = store.load()?;
    let pins = Pins::new(name);
    let existed = state.switches.contains_key(name) || pins.exists();
    let ports: Vec<String> = state.ports(name).map(|(n, _)| n.clone()).collect();
    let mut removed = vec![];
    for ns in ports {
        let entry = state.namespaces.get(&ns).cloned().expect("listed above");
        port::teardown(&ns, &entry).await?;
        state.namespaces.remove(&ns);
        store.save(&state)?;
        removed.push(ns);
    }
    let p = pins.clone();
    blocking(move || {
        p.remove()?;
        // The shared root goes once the last switch is gone; busy is fine.
        let _ = std::fs::remove_dir(crate::datapath::loader::PIN_ROOT);
        Ok(())
    })
    .await?;
    state.switches.remove(name);
    store.save(&state)?;
    Ok(DownReport { name: name.to_owned(), existed, removed_namespaces: removed })
}

/// Names of every switch with its state.
pub async fn list() -> Result<Vec<(String, SwitchState, usize)>> {
    let store = lock().await?;
    let state = store.load()?;
    Ok(state.switches.iter().map(|(n, s)| (n.clone(), s.clone(), state.ports(n).count())).collect())
}
