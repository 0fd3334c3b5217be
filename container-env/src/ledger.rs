//! What an environment made on the host outside its directory, listed in the directory (a
//! file per kind, a name a line), written before the thing is made: a tear-down, or the next
//! run after a killed one, removes what is listed.
use std::{fs, path::Path, process::Command};

use crate::{Error, Result, command::quiet, iptables};

/// A kind of host object an environment owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owned {
    /// A host interface (a network's bridge, an uplink veth).
    Link,
    /// A network namespace in /run/netns.
    Netns,
    /// A switch a switch-cni network brought up (it stays up after its last container).
    Switch,
    /// A CNI network whose reference plugins name it in their iptables rules.
    Network,
}

impl Owned {
    fn file(self) -> &'static str {
        match self {
            Owned::Link => "host-links",
            Owned::Netns => "host-netns",
            Owned::Switch => "host-switches",
            Owned::Network => "host-networks",
        }
    }
}

/// Records that the environment in `dir` owns `name` of kind `kind`.
pub fn own(dir: &Path, kind: Owned, name: &str) -> Result<()> {
    let path = dir.join(kind.file());
    let mut s = fs::read_to_string(&path).unwrap_or_default();
    s.push_str(name);
    s.push('\n');
    fs::write(&path, s).map_err(Error::io(format!("recording {name} in {}", path.display())))
}

/// What the environment in `dir` owns of kind `kind`, in the order it was recorded.
pub fn owned(dir: &Path, kind: Owned) -> Vec<String> {
    fs::read_to_string(dir.join(kind.file())).unwrap_or_default().lines().map(str::to_owned).collect()
}

/// Removes what the environment in `dir` owns, after its containers are gone: its networks'
/// iptables rules (but not the chains in `keep_chains`, shared by every network), its switches
/// (`SWITCH down`, which also gives back their sysctls), interfaces and namespaces. Returns
/// what could not be removed.
pub fn remove_owned(dir: &Path, switch_bin: &Path, keep_chains: &[&str]) -> Vec<String> {
    let mut left = vec![];
    for net in owned(dir, Owned::Network) {
        iptables::remove_network_rules(&net, keep_chains);
    }
    for sw in owned(dir, Owned::Switch) {
        match Command::new(switch_bin).args(["down", "--switch", &sw]).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                left.push(format!("switch down --switch {sw} failed: {}", String::from_utf8_lossy(&o.stderr).trim()))
            }
            Err(e) => left.push(format!("running {}: {e}", switch_bin.display())),
        }
    }
    // The bridge plugin never deletes its bridge; with it go its addresses, routes and
    // sysctls (portmap's route_localnet).
    for link in owned(dir, Owned::Link) {
        if Path::new("/sys/class/net").join(&link).exists() && !quiet("ip", &["link", "del", &link]) {
            left.push(format!("interface {link} could not be deleted"));
        }
    }
    for ns in owned(dir, Owned::Netns) {
        if Path::new("/run/netns").join(&ns).exists() && !quiet("ip", &["netns", "del", &ns]) {
            left.push(format!("network namespace {ns} could not be deleted"));
        }
    }
    left
}
