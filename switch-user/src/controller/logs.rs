//! `switch logs`: the datapath's log records, live.
//!
//! Logging costs on every frame, so the datapath logs only while a `switch logs` runs (see
//! `readers`).
use super::readers::{self, Reader, Stream};
use crate::{error::Result, names::validate_name};

/// Streams `switch`'s datapath log until `stop` resolves; `started` is called once the
/// switch is known to have a log and logging is on.
pub async fn follow(
    switch: &str,
    started: impl FnOnce() + Send + 'static,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    validate_name("switch name", switch)?;
    let (reader, _) =
        Reader::join(switch, Stream::Log, |_| Ok(()), async |dp, ()| dp.require_log()?.set_logging(true).await).await?;
    let stop = readers::or_removed(switch, stop);
    let streamed = reader.dp.require_log()?.stream(Box::new(started), Box::pin(stop)).await;
    reader.leave().await?;
    streamed
}
