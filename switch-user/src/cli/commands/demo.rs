//! `switch demo`: the classic two-namespace setup, with an eBPF switch instead of a bridge.
use std::process::Stdio;

use anyhow::{Context as _, Result, bail};
use switch::{
    controller::{fdb, ns as nsc, stats, switch as sw},
    sys::netns,
};

use crate::cli::{
    output::{self, Reply},
    signal,
};

const SWITCH: &str = "demo";
const NAMESPACES: [(&str, &str); 2] = [("red", "192.168.15.1/24"), ("blue", "192.168.15.2/24")];

/// Runs the demo, printing as it goes; everything it made is removed at the end, also on
/// failure, Ctrl-C or SIGTERM.
pub async fn do_demo() -> Result<Reply> {
    for (ns, _) in NAMESPACES {
        if netns::exists(ns) {
            bail!(
                "namespace '{ns}' exists already; the demo makes its own red and blue (remove yours with: ip netns del {ns})"
            );
        }
    }
    let outcome = tokio::select! {
        r = steps() => r,
        _ = signal::shutdown() => Err(anyhow::anyhow!("interrupted")),
    };
    println!("\n== tearing down");
    let down = sw::down(SWITCH).await.context("removing the demo switch");
    match (&outcome, &down) {
        (_, Ok(r)) => println!("removed switch '{SWITCH}' and namespaces {}", r.removed_namespaces.join(", ")),
        (_, Err(e)) => eprintln!("error: {e:#}"),
    }
    outcome.and(down.map(|_| Reply::done()))
}

async fn steps() -> Result<()> {
    println!("== switch up --switch {SWITCH}");
    let up = sw::up(sw::UpOptions { name: SWITCH.into(), ..Default::default() }).await?;
    println!("datapath pinned at {} (unicast redirect: {})", up.pins.unwrap_or_default(), up.redirect);
    for (ns, ip) in NAMESPACES {
        println!("== switch ns add {ns} --ip {ip} --switch {SWITCH}");
        let r = nsc::add(nsc::AddOptions {
            ns: ns.into(),
            ip: ip.parse()?,
            ip6: None,
            switch: SWITCH.into(),
            mac: None,
            port_security: true,
        })
        .await?;
        println!(
            "{ns}: eth0 {} mac {} <-> host port {}",
            r.info.ip,
            r.info.mac.unwrap_or_default(),
            r.info.host_interface.unwrap_or_default()
        );
    }
    ping("red", "192.168.15.2").await?;
    ping("blue", "192.168.15.1").await?;

    println!("\n== switch fdb --switch {SWITCH}");
    let rows = fdb::show(SWITCH).await?;
    print!("{}", output::fdb(&rows));
    println!("\n== switch stats --switch {SWITCH}");
    print!("{}", output::stats(&stats::show(SWITCH).await?));
    Ok(())
}

async fn ping(from: &str, to: &str) -> Result<()> {
    println!("\n== switch ns exec {from} -- ping -c 3 -i 0.2 {to}");
    let mut cmd = netns::command(from, "ping", false)?;
    cmd.args(["-c", "3", "-i", "0.2", "-W", "1", to]).stdout(Stdio::inherit()).stderr(Stdio::inherit());
    let status = tokio::process::Command::from(cmd)
        .status()
        .await
        .context("running ping (install iputils-ping, or run 'cargo xtask demo' which does)")?;
    if !status.success() {
        bail!("ping from {from} to {to} failed ({status})");
    }
    Ok(())
}
