//! `switch stats`.
use anyhow::Result;
use switch::controller::stats;

use crate::cli::{
    args::SwitchArgs,
    output::{self, Reply},
};

/// Per-port counters and the switch-wide drops.
pub async fn do_stats(a: SwitchArgs) -> Result<Reply> {
    let r = stats::show(&a.switch).await?;
    Ok(Reply::new(&r, output::stats(&r)))
}
