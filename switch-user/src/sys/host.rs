//! Which host the controller works for: the machine itself, or a "host" network namespace the
//! controller runs inside (`nsenter --net=/run/netns/HOST switch ...`, or `switch
//! --host-netns HOST ...`), so several switch instances share one machine, as simulated hosts
//! of an overlay or in nested setups.
//!
//! ```text
//!   controller runs in          state and lock             pins
//!   the machine's netns         /run/switch/               /sys/fs/bpf/switch/NAME/
//!   /run/netns/HOST             /run/switch/@HOST/         /sys/fs/bpf/switch/@HOST/NAME/
//! ```
//! The host is detected, not configured: the controller compares its own network namespace
//! (device and inode of `/proc/self/ns/net`) with the initial namespace and the namespaces
//! named under `/run/netns`; a named one is a host, anything else (the initial namespace even
//! if named, or a namespace without a name, such as a container's) is the machine, as before
//! hosts existed. Detection cannot be
//! forgotten the way an option can: a plain `nsenter` gets the right state, where a missing
//! option would have let one host's `switch down` tear down another host's records.
//! `--host-netns` only enters the namespace first (what nsenter does), for callers that cannot
//! wrap the command.
//!
//! `@` is not allowed in switch names (`names::validate_name`), so a host's directories never
//! clash with a switch of the machine. Everything else keeps its machine-wide meaning: the
//! namespaces the switch makes are bind mounts under `/run/netns` (their names are unique
//! across hosts, as files are), bpffs is the root mount namespace's (`nsenter --net` keeps the
//! mount namespace; `ip netns exec` would remount /sys and hide it), interfaces and sysctls are
//! the host namespace's own.
use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use crate::{
    error::{Context as _, Error, Result},
    names::validate_name,
    sys::netns,
};

/// Directory of the machine's state file and its lock (a host's is under it).
pub const STATE_DIR: &str = "/run/switch";

/// Root of every switch's pins on the machine.
pub const PIN_ROOT: &str = "/sys/fs/bpf/switch";

/// The host the controller works for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// The machine's own network namespace (PID 1's).
    Machine,
    /// A network namespace named `/run/netns/NAME`.
    Named(String),
}

static HOST: OnceLock<Host> = OnceLock::new();

impl Host {
    /// The host of this process (detected once).
    pub fn current() -> &'static Host {
        HOST.get_or_init(detect)
    }

    /// Where the state file and its lock are.
    pub fn state_dir(&self) -> PathBuf {
        match self {
            Self::Machine => PathBuf::from(STATE_DIR),
            Self::Named(n) => Path::new(STATE_DIR).join(format!("@{n}")),
        }
    }

    /// The directory holding the pin directories of this host's switches.
    pub fn pin_root(&self) -> PathBuf {
        match self {
            Self::Machine => PathBuf::from(PIN_ROOT),
            Self::Named(n) => Path::new(PIN_ROOT).join(format!("@{n}")),
        }
    }

    /// The name of the host for people: `machine` or the namespace's name.
    pub fn label(&self) -> String {
        match self {
            Self::Machine => "machine".into(),
            Self::Named(n) => n.clone(),
        }
    }
}

/// The state directory of this process's host.
pub fn state_dir() -> PathBuf {
    Host::current().state_dir()
}

/// The pin root of this process's host.
pub fn pin_root() -> PathBuf {
    Host::current().pin_root()
}

/// Moves the calling thread into `/run/netns/NAME` and makes it this process's host. Call it
/// from `main` before any other thread exists: threads made later inherit the namespace.
pub fn enter(name: &str) -> Result<()> {
    validate_name("host namespace", name)?;
    let file = netns::open(name)?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).context(format!("entering namespace {name}"))?;
    // The machine's own namespace entered by name is still the machine.
    let host = match detect() {
        Host::Machine => Host::Machine,
        _ => Host::Named(name.to_owned()),
    };
    HOST.set(host).map_err(|_| Error::Command("the host was chosen before --host-netns was read".into()))
}

/// (device, inode) of a namespace file.
fn ns_id(p: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

fn detect() -> Host {
    // /proc/self is the main thread's: namespace threads (`netns::run_in`) do not count.
    let Some(own) = ns_id(Path::new("/proc/self/ns/net")) else { return Host::Machine };
    // The initial namespace is the machine even if someone named it: PID 1's, or where
    // /proc/1 cannot be read (not in every sandbox) kthreadd's, which is always in it.
    let kthreadd = std::fs::read_to_string("/proc/2/comm").is_ok_and(|c| c.trim() == "kthreadd");
    if ns_id(Path::new("/proc/1/ns/net")) == Some(own) || (kthreadd && ns_id(Path::new("/proc/2/ns/net")) == Some(own))
    {
        return Host::Machine;
    }
    let mut names: Vec<String> = std::fs::read_dir(netns::NETNS_RUN_DIR)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| validate_name("host namespace", n).is_ok())
        .collect();
    names.sort();
    names.into_iter().find(|n| ns_id(&netns::path(n)) == Some(own)).map_or(Host::Machine, Host::Named)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_keep_apart_from_the_machine_and_each_other() {
        assert_eq!(Host::Machine.state_dir(), PathBuf::from("/run/switch"));
        assert_eq!(Host::Machine.pin_root(), PathBuf::from("/sys/fs/bpf/switch"));
        let h = Host::Named("h1".into());
        assert_eq!(h.state_dir(), PathBuf::from("/run/switch/@h1"));
        assert_eq!(h.pin_root(), PathBuf::from("/sys/fs/bpf/switch/@h1"));
        // No switch name can be a host's directory.
        assert!(validate_name("switch name", "@h1").is_err());
    }
}
