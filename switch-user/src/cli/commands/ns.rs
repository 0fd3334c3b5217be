//! `switch ns add|del|attach|detach|list` (`ns exec` replaces the process: see `main::exec`).
use anyhow::Result;
use serde_json::json;
use switch::controller::ns;

use crate::cli::{
    args::NsCommand,
    output::{self, Reply},
};

/// Adds, removes or lists namespaces.
pub async fn do_ns(c: NsCommand) -> Result<Reply> {
    match c {
        NsCommand::Add(a) => {
            let r = ns::add(ns::AddOptions {
                ns: a.ns,
                ip: a.ip,
                switch: a.switch,
                mac: a.mac,
                port_security: !a.no_port_security,
            })
            .await?;
            let verb = if r.created { "added to" } else { "is already on" };
            let text = port_line(&format!("namespace '{}'", r.info.namespace), verb, &r.info);
            Ok(Reply::new(&r, text))
        }
        NsCommand::Attach(a) => {
            let r = ns::attach(ns::AttachOptions {
                name: a.name,
                netns: a.netns.clone(),
                ifname: a.ifname,
                ip: a.ip,
                switch: a.switch,
                mac: a.mac,
                mtu: a.mtu,
                port_security: !a.no_port_security,
                attachment: None,
                workload: None,
            })
            .await?;
            let verb = if r.created { "attached to" } else { "is already on" };
            let text = port_line(&format!("'{}' ({})", r.info.namespace, a.netns.display()), verb, &r.info);
            Ok(Reply::new(&r, text))
        }
        NsCommand::Detach { name } => {
            let removed = ns::detach(&name, None).await?;
            let text = if removed {
                format!("'{name}' detached (its namespace stays)")
            } else {
                format!("'{name}' is not attached")
            };
            Ok(Reply::new(&json!({ "name": name, "removed": removed }), text))
        }
        NsCommand::Del { ns: name } => {
            ns::del(&name).await?;
            Ok(Reply::new(&json!({ "namespace": name, "removed": true }), format!("namespace '{name}' removed")))
        }
        NsCommand::List => {
            let rows = ns::list().await?;
            Ok(Reply::new(&rows, output::namespaces(&rows)))
        }
        NsCommand::Exec { .. } => unreachable!("handled before the runtime starts"),
    }
}

/// "WHO VERB switch 'S': eth0 10.0.0.1/24 mac M (host port P)".
fn port_line(who: &str, verb: &str, i: &ns::NsInfo) -> String {
    format!(
        "{who} {verb} switch '{}': {} {} mac {} (host port {})",
        i.attached_to,
        i.interface,
        i.ip,
        i.mac.as_deref().unwrap_or_default(),
        i.host_interface.as_deref().unwrap_or_default()
    )
}
