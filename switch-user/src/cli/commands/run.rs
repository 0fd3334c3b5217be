//! `switch run`: a userspace switch in the foreground (or, with the hidden `--daemon`, the
//! background process `up --datapath userspace` starts).
use anyhow::Result;
use switch::controller::switch as sw;

use crate::cli::{args::RunArgs, output::Reply, signal};

/// Serves until Ctrl-C or SIGTERM, then removes the switch (foreground) or just stops
/// (daemon: the switch record belongs to the CLI).
pub async fn do_run(a: RunArgs) -> Result<Reply> {
    if a.daemon {
        sw::run_daemon(
            &a.switch,
            a.ageing.unwrap_or(switch_common::DEFAULT_AGEING_SECS),
            a.max_learned.unwrap_or(switch_common::DEFAULT_MAX_LEARNED),
            signal::shutdown(),
        )
        .await?;
    } else {
        sw::run_foreground(&a.switch, a.ageing, signal::shutdown()).await?;
    }
    Ok(Reply::done())
}
