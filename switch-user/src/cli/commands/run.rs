//! `switch run`: a userspace switch in the foreground (or, with the hidden `--daemon`, the
//! background process `up --datapath userspace` starts).
use std::time::Duration;

use anyhow::Result;
use switch::{
    controller::switch as sw,
    datapath::userspace::{engine::Config as EngineConfig, runner},
};

use crate::cli::{args::RunArgs, output::Reply, signal};

/// Serves until Ctrl-C or SIGTERM, then removes the switch (foreground) or just stops
/// (daemon: the switch record belongs to the CLI).
pub async fn do_run(a: RunArgs) -> Result<Reply> {
    if a.daemon {
        let config = EngineConfig {
            ageing: Duration::from_secs(a.ageing.unwrap_or(switch_common::DEFAULT_AGEING_SECS)),
            max_learned: a.max_learned.unwrap_or(switch_common::DEFAULT_MAX_LEARNED),
            busy_poll: Duration::from_micros(u64::from(a.busy_poll.unwrap_or(0))),
        };
        runner::daemon(&a.switch, config, signal::shutdown()).await?;
    } else {
        sw::run_foreground(&a.switch, a.ageing, a.busy_poll, signal::shutdown()).await?;
    }
    Ok(Reply::done())
}
