//! `switch forward add|del|list`.
use anyhow::Result;
use serde_json::json;
use switch::controller::forward;

use crate::cli::{
    args::ForwardCommand,
    output::{self, Reply},
};

/// Adds, removes or lists port forwards.
pub async fn do_forward(c: ForwardCommand) -> Result<Reply> {
    match c {
        ForwardCommand::Add { proto, host_port, to, switch } => {
            let ports = to.ports;
            let f =
                forward::add(forward::AddOptions { switch, proto, host: host_port, ns: to.ns, to: to.ports }).await?;
            let text = format!(
                "forwarding {}/{host_port} on the uplinks of switch '{}' to namespace '{}' port {ports}",
                f.proto, f.switch, f.ns
            );
            Ok(Reply::new(&f, text))
        }
        ForwardCommand::Del { proto, host_port, switch } => {
            forward::del(&switch, proto, host_port).await?;
            let value =
                json!({ "switch": switch, "proto": proto, "host_ports": host_port.to_string(), "removed": true });
            Ok(Reply::new(&value, format!("forward {proto}/{host_port} removed from switch '{switch}'")))
        }
        ForwardCommand::List { switch } => {
            let rows = forward::list(switch.as_deref()).await?;
            Ok(Reply::new(&rows, output::forwards(&rows)))
        }
    }
}
