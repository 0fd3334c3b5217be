//! `switch stats`.
use anyhow::Result;
use switch::controller::stats;

use crate::cli::{
    args::SwitchArgs,
    output::{self, Reply},
};

/// Per-port counters.
pub async fn do_stats(a: SwitchArgs) -> Result<Reply> {
    let rows = stats::show(&a.switch).await?;
    Ok(Reply::new(&rows, output::stats(&rows)))
}
