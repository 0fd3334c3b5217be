//! The one iptables rule a network needs where Docker runs with its iptables on (its
//! default): dockerd sets the filter FORWARD policy to DROP, which would drop what the
//! containers send out through the host (the gateway routes it to the uplinks, masqueraded in
//! eBPF there). Forwards from outside, hairpin and the answers of outbound connections are
//! switched in eBPF and never reach FORWARD; only this direction does. So, as Docker does for
//! its own bridges, one rule accepts what comes in on the network's gateway: appended to
//! FORWARD (after Docker's DOCKER-USER jump, so users' own rules there still apply), marked
//! with the network's ID, added idempotently and removed with the network.
use tokio::process::Command;

use super::DriverError;
use crate::names::gateway_ifnames;

/// The rule of the network whose switch is `switch`, without the command (`-A`, `-C`, `-D`).
fn rule(switch: &str) -> Vec<String> {
    let (gateway_if, _) = gateway_ifnames(switch);
    let comment = format!("switch docker-plugin: network {switch}");
    ["FORWARD", "-i", &gateway_if, "-m", "comment", "--comment", &comment, "-j", "ACCEPT"].map(str::to_owned).to_vec()
}

/// Runs `iptables -w OP RULE`; `Ok(None)` if there is no iptables at all (then no Docker
/// firewall either), `Ok(Some(success))` otherwise.
async fn iptables(op: &str, switch: &str) -> Result<Option<(bool, String)>, DriverError> {
    let out = match Command::new("iptables").arg("-w").arg(op).args(rule(switch)).output().await {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(DriverError(format!("running iptables: {e}"))),
        Ok(o) => o,
    };
    Ok(Some((out.status.success(), String::from_utf8_lossy(&out.stderr).trim().to_owned())))
}

/// Accepts what the network's gateway forwards (idempotent).
pub(super) async fn allow(switch: &str) -> Result<(), DriverError> {
    if matches!(iptables("-C", switch).await?, None | Some((true, _))) {
        return Ok(());
    }
    match iptables("-A", switch).await? {
        Some((false, err)) => {
            Err(DriverError(format!("accepting the forwarded traffic of {switch} in iptables: {err}")))
        }
        _ => Ok(()),
    }
}

/// Removes the rule (every copy; none is fine).
pub(super) async fn revoke(switch: &str) -> Result<(), DriverError> {
    while let Some((true, _)) = iptables("-C", switch).await? {
        if let Some((false, err)) = iptables("-D", switch).await? {
            return Err(DriverError(format!("removing the iptables rule of {switch}: {err}")));
        }
    }
    Ok(())
}
