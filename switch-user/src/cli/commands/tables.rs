//! `switch tables`.
use anyhow::Result;
use switch::controller::tables;

use crate::cli::{
    args::SwitchArgs,
    output::{self, Reply},
};

/// Fill levels and evictions of the datapath's tables.
pub async fn do_tables(a: SwitchArgs) -> Result<Reply> {
    let rows = tables::show(&a.switch).await?;
    Ok(Reply::new(&rows, output::tables(&rows)))
}
