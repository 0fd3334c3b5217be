//! `switch logs`: the datapath's log records, live.
//!
//! Logging costs on every frame, so the datapath logs only while a `switch logs` runs. Each
//! one records itself (pid and start time) in the switch record and turns logging on under
//! the state lock; on the way out it takes itself off and turns logging off if it was the
//! last. One killed on the way is noticed by the next mutating command of the switch
//! (`intent::converge`), which turns logging off once no recorded reader lives.
use super::{datapath_of, intent, lock};
use crate::{error::Result, names::validate_name, sys::process::ProcessId};

/// Streams `switch`'s datapath log until `stop` resolves; `started` is called once the
/// switch is known to have a log and logging is on.
pub async fn follow(
    switch: &str,
    started: impl FnOnce() + Send + 'static,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    validate_name("switch name", switch)?;
    let me = ProcessId::current();
    let dp = {
        // The lock only while the record and the flag change: streaming must not hold back
        // other commands.
        let store = lock().await?;
        let mut state = store.load()?;
        let dp = datapath_of(&state, switch)?;
        dp.require_log()?;
        intent::converge(&store, &mut state, switch).await?;
        state.switches.get_mut(switch).expect("looked up above").log_followers.push(me);
        store.save(&state)?;
        dp.require_log()?.set_logging(true).await?;
        dp
    };
    let streamed = dp.require_log()?.stream(Box::new(started), Box::pin(stop)).await;
    let store = lock().await?;
    let mut state = store.load()?;
    if let Some(sw) = state.switches.get_mut(switch) {
        sw.log_followers.retain(|p| *p != me);
        if !sw.log_followers.iter().any(|p| p.is_alive()) {
            dp.require_log()?.set_logging(false).await?;
        }
        store.save(&state)?;
    }
    streamed
}
