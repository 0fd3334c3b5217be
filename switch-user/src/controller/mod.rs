//! What each CLI command does, as library calls: the controller.
//!
//! One convergence rule for every mutating command (switches, ports of every kind, forwards):
//! 1. validate everything it can without touching the system (bad input changes nothing);
//! 2. take the state lock and converge the switch (`intent::converge`): records a killed
//!    command left `ready: false` are rolled back;
//! 3. record the intent (`ready: false`) and save it;
//! 4. make the kernel objects;
//! 5. on failure, tear down whatever step 4 made and drop the record; on success, mark the
//!    record ready and save it (`intent::finish`).
//!
//! Teardown is idempotent and works from the record alone, so it doubles as crash recovery.
//! Read-only commands (`list`, `ns list`, `fdb`, `stats`, `tables`, `forward list`,
//! `peer list`, `metrics`) change nothing, neither the state nor the datapath's tables.
//!
//! The datapath is only reached through [`crate::datapath::Datapath`]; no command knows which
//! datapath it drives.
pub mod capture;
pub mod fdb;
pub mod forward;
pub mod intent;
pub mod link;
pub mod logs;
pub mod metrics;
pub mod monitor;
pub mod ns;
pub mod peer;
pub mod port;
mod readers;
pub mod stats;
pub mod switch;
pub mod tables;

use crate::{
    datapath::Datapath,
    error::{Error, Result},
    state::{State, Store},
    sys::{blocking, host, preflight},
};

/// Fault injection for the crash and rollback tests. With `SWITCH_FAILPOINT=NAME` the process
/// aborts at point NAME, as if killed with SIGKILL there; with `SWITCH_FAILPOINT=NAME:error`
/// the step fails with an error instead, exercising the rollback path. Points: `up:made`,
/// `ns-add:veth`, `ns-add:attached`, `forward-add:map` (after each port of a range is written).
pub(crate) fn failpoint(name: &str) -> Result<()> {
    let Ok(v) = std::env::var("SWITCH_FAILPOINT") else { return Ok(()) };
    if v == name {
        std::process::abort();
    }
    if v.strip_suffix(":error") == Some(name) {
        return Err(Error::Command(format!("failpoint {name} triggered")));
    }
    Ok(())
}

/// A stall for the tests: with `SWITCH_FAILPOINT=NAME:stall` the step stops as if stuck,
/// after saying `failpoint NAME stalled` on stderr, until the file named by
/// `SWITCH_FAILPOINT_RELEASE` exists (at most a minute), so a test can hold the step in
/// flight and check what it does not hold back. Points: `metrics-scrape` (a scrape with the
/// state copied, where it reads the tables).
pub(crate) async fn stall_point(name: &str) {
    if std::env::var("SWITCH_FAILPOINT").ok().and_then(|v| v.strip_suffix(":stall").map(|p| p == name)) != Some(true) {
        return;
    }
    eprintln!("failpoint {name} stalled");
    let release = std::env::var_os("SWITCH_FAILPOINT_RELEASE").map(std::path::PathBuf::from);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline && !release.as_ref().is_some_and(|r| r.exists()) {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The datapath of switch `name`, as recorded.
pub(crate) fn datapath_of(state: &State, name: &str) -> Result<Box<dyn Datapath>> {
    Ok(state.switch(name)?.datapath.open(name))
}

/// Runs the preflight checks and takes the state lock.
pub(crate) async fn lock() -> Result<Store> {
    blocking(|| {
        preflight::check()?;
        Store::open(host::state_dir())
    })
    .await
}
