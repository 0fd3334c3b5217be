//! The iptables rules a network needs where Docker runs with its iptables on (its default):
//! dockerd sets the filter FORWARD policy to DROP, which would drop what the host routes
//! into and out of the segment: the containers' outbound traffic (the gateway routes it to
//! the uplinks, masqueraded in eBPF there), and the first packets of a forward from outside
//! whose container the host has no neighbour entry for yet (the eBPF redirect needs one: the
//! host resolves it while it forwards the packet). Hairpin, known forwards and the answers of
//! outbound connections are switched in eBPF and never reach FORWARD; what the host routes
//! into the segment is still checked by the switch's own guard on the gateway (only forwards
//! and answers pass). So, as Docker does for its own bridges, rules accept what comes in on
//! and goes out of the network's gateway (and what its Linux bridge forwards, on the `bridge`
//! datapath): appended to FORWARD (after Docker's DOCKER-USER
//! jump, so users' own rules there still apply), marked with the network's switch, added
//! idempotently and removed with the network.
use tokio::process::Command;

use super::DriverError;
use crate::names::{bridge_ifname, gateway_ifnames};

/// The rules of the network whose switch is `switch`, without the command (`-A`, `-C`, `-D`):
/// into and out of its gateway, and through its Linux bridge, which only the `bridge`
/// datapath has (the kernel's br_netfilter, when on, passes bridged frames through FORWARD;
/// the rule names an interface that does not exist on the other datapaths).
fn rules(switch: &str) -> [Vec<String>; 3] {
    let (gateway_if, _) = gateway_ifnames(switch);
    let bridge = bridge_ifname(switch);
    let comment = format!("switch docker-plugin: network {switch}");
    let rule = |matches: &[&str]| {
        let mut r = vec!["FORWARD"];
        r.extend_from_slice(matches);
        r.extend(["-m", "comment", "--comment", &comment, "-j", "ACCEPT"]);
        r.into_iter().map(str::to_owned).collect()
    };
    [rule(&["-i", &gateway_if]), rule(&["-o", &gateway_if]), rule(&["-i", &bridge, "-o", &bridge])]
}

/// Runs `iptables -w OP RULE`; `Ok(None)` if there is no iptables at all (then no Docker
/// firewall either), `Ok(Some((success, stderr)))` otherwise.
async fn iptables(op: &str, rule: &[String]) -> Result<Option<(bool, String)>, DriverError> {
    let out = match Command::new("iptables").arg("-w").arg(op).args(rule).output().await {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(DriverError(format!("running iptables: {e}"))),
        Ok(o) => o,
    };
    Ok(Some((out.status.success(), String::from_utf8_lossy(&out.stderr).trim().to_owned())))
}

/// Accepts what the network's gateway forwards, both ways (idempotent).
pub(super) async fn allow(switch: &str) -> Result<(), DriverError> {
    for rule in rules(switch) {
        if matches!(iptables("-C", &rule).await?, None | Some((true, _))) {
            continue;
        }
        if let Some((false, err)) = iptables("-A", &rule).await? {
            return Err(DriverError(format!("accepting the forwarded traffic of {switch} in iptables: {err}")));
        }
    }
    Ok(())
}

/// Removes the rules (every copy; none is fine).
pub(super) async fn revoke(switch: &str) -> Result<(), DriverError> {
    for rule in rules(switch) {
        while let Some((true, _)) = iptables("-C", &rule).await? {
            if let Some((false, err)) = iptables("-D", &rule).await? {
                return Err(DriverError(format!("removing the iptables rules of {switch}: {err}")));
            }
        }
    }
    Ok(())
}
