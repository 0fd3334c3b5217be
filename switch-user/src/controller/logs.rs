//! `switch logs`: the datapath's log records, live.
//!
//! Logging costs on every frame, so the datapath only logs while this command runs (see
//! `DatapathLog::follow`).
use super::{datapath_of, lock};
use crate::{error::Result, names::validate_name};

/// Streams `switch`'s datapath log until `stop` resolves; `started` is called once the
/// switch is known to have a log.
pub async fn follow(
    switch: &str,
    started: impl FnOnce() + Send + 'static,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    validate_name("switch name", switch)?;
    let dp = {
        // Hold the lock only to look the switch up: streaming must not block other commands.
        let store = lock().await?;
        datapath_of(&store.load()?, switch)?
    };
    dp.require_log()?.follow(Box::new(started), Box::pin(stop)).await
}
