//! `switch tables`.
use anyhow::Result;
use switch::controller::tables;

use crate::cli::{
    args::SwitchArgs,
    output::{self, Reply},
};

/// Fill levels, evictions and memory of the datapath's tables, and the switch's kernel memory
/// (text only: `--json` keeps its rows of tables).
pub async fn do_tables(a: SwitchArgs) -> Result<Reply> {
    let rows = tables::show(&a.switch).await?;
    let memory = tables::memory(&a.switch).await?;
    let text = format!("{}\n{}", output::tables(&rows), output::kernel_memory(memory));
    Ok(Reply::new(&rows, text))
}
