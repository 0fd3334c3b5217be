//! `switch ns add|del|attach|detach|list` (`ns exec` replaces the process: see `main::exec`).
use anyhow::Result;
use serde_json::json;
use switch::{
    controller::ns,
    names::{self, Cidr, Cidr6, IpCidr},
};

use crate::cli::{
    args::NsCommand,
    output::{self, Reply},
};

/// Adds, removes or lists namespaces.
pub async fn do_ns(c: NsCommand) -> Result<Reply> {
    match c {
        NsCommand::Add(a) => {
            let (ip, ip6) = addresses(&a.ips)?;
            let r = ns::add(ns::AddOptions {
                ns: a.ns,
                ip,
                ip6,
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
            let (ip, ip6) = addresses(&a.ips)?;
            let r = ns::attach(ns::AttachOptions {
                name: a.name,
                netns: a.netns.clone(),
                ifname: a.ifname,
                ip,
                ip6,
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

/// The IPv4 address `--ip` must give, and the IPv6 one it may.
fn addresses(ips: &[IpCidr]) -> Result<(Cidr, Option<Cidr6>)> {
    match names::by_family("--ip", ips)? {
        (Some(v4), v6) => Ok((v4, v6)),
        (None, _) => Err(switch::error::Error::invalid(
            "option",
            format!("--ip {}", ips.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(" --ip ")),
            "an IPv4 address is required (IPv6-only namespaces are not supported yet)",
        )
        .into()),
    }
}

/// "WHO VERB switch 'S': eth0 10.0.0.1/24[ fd00::1/64] mac M (host port P)".
fn port_line(who: &str, verb: &str, i: &ns::NsInfo) -> String {
    let v6 = i.ip6.as_deref().map(|a| format!(" {a}")).unwrap_or_default();
    format!(
        "{who} {verb} switch '{}': {} {}{v6} mac {} (host port {})",
        i.attached_to,
        i.interface,
        i.ip,
        i.mac.as_deref().unwrap_or_default(),
        i.host_interface.as_deref().unwrap_or_default()
    )
}
