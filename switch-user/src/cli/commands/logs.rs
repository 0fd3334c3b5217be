//! `switch logs`.
use anyhow::Result;
use switch::controller::logs;

use crate::cli::{args::LogsArgs, output::Reply, signal};

/// Streams the datapath log until Ctrl-C or SIGTERM.
pub async fn do_logs(a: LogsArgs) -> Result<Reply> {
    let name = a.switch.clone();
    let started = move || eprintln!("streaming the datapath log of switch '{name}'; Ctrl-C to stop");
    logs::follow(&a.switch, started, signal::shutdown()).await?;
    Ok(Reply::done())
}
