//! What each CLI command does, as library calls: the controller.
//!
//! Every mutating operation follows the same discipline:
//! 1. validate everything it can without touching the system (bad input changes nothing);
//! 2. take the state lock and record the intent (`ready: false`);
//! 3. make the kernel objects;
//! 4. on failure, tear down by name whatever step 3 made and drop the record; on success,
//!    mark the record ready.
//!
//! Teardown is idempotent and works from names alone, so it doubles as crash recovery: a
//! record left `ready: false` by a killed command is torn down by the next command that
//! touches it.
pub mod backend;
pub mod fdb;
pub mod forward;
pub mod link;
pub mod logs;
pub mod port;
pub mod stats;
pub mod switch;
pub mod tables;

use crate::{
    error::{Error, Result},
    state::{STATE_DIR, State, Store, SwitchState},
    sys::preflight,
};

/// Runs blocking `f` (file locks, bpf syscalls, /proc writes) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Command(format!("internal task failed: {e}")))?
}

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

/// The record of switch `name`, refused with one clear line unless it runs an eBPF datapath:
/// `command` needs `what` (e.g. "port forwarding"), which only tc and xdp have.
pub(crate) fn ebpf_switch<'a>(state: &'a State, name: &str, command: &str, what: &str) -> Result<&'a SwitchState> {
    let sw = state.switch(name)?;
    if !sw.datapath.is_ebpf() {
        return Err(Error::invalid(
            "command",
            command,
            format!("switch '{name}' uses the {} datapath; only tc and xdp have {what}", sw.datapath),
        ));
    }
    Ok(sw)
}

/// Runs the preflight checks and takes the state lock.
pub(crate) async fn lock() -> Result<Store> {
    blocking(|| {
        preflight::check()?;
        Store::open(STATE_DIR)
    })
    .await
}
