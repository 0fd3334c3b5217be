//! `switch fdb [add|del]`.
use anyhow::Result;
use serde_json::json;
use switch::controller::fdb;

use crate::cli::{
    args::{FdbArgs, FdbCommand},
    output::{self, Reply},
};

/// Shows the MAC table, or adds or deletes an entry.
pub async fn do_fdb(a: FdbArgs) -> Result<Reply> {
    match a.command {
        Some(FdbCommand::Add { mac, ns }) => {
            fdb::add_static(mac, &ns).await?;
            let value = json!({ "mac": mac.to_string(), "namespace": ns, "type": "static" });
            Ok(Reply::new(&value, format!("static entry {mac} -> namespace '{ns}' added")))
        }
        Some(FdbCommand::Del { mac, switch }) => {
            fdb::del(mac, &switch).await?;
            let value = json!({ "mac": mac.to_string(), "switch": switch, "removed": true });
            Ok(Reply::new(&value, format!("entry {mac} deleted from switch '{switch}'")))
        }
        None => {
            let rows = fdb::show(&a.show.switch).await?;
            Ok(Reply::new(&rows, output::fdb(&rows)))
        }
    }
}
