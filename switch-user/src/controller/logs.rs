//! `switch logs`: the datapath's log records, live.
//!
//! Logging costs on every frame, so the datapath logs only while a `switch logs` runs (see
//! `readers`).
use super::{
    datapath_of, intent, lock,
    readers::{self, Stream},
};
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
        Stream::Log.readers(state.switches.get_mut(switch).expect("looked up above")).push(me);
        store.save(&state)?;
        dp.require_log()?.set_logging(true).await?;
        dp
    };
    let stop = readers::or_removed(switch, stop);
    let streamed = dp.require_log()?.stream(Box::new(started), Box::pin(stop)).await;
    readers::leave(switch, Stream::Log, dp.as_ref(), me).await?;
    streamed
}
