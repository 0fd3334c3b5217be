//! The host-facing half of the control plane: namespaces, links and addresses (rtnetlink),
//! sysctls and the ephemeral port range, the cgroup v2 root, private files under /run/switch,
//! the host the controller works for (the machine or a "host" network namespace), process
//! identity, the programs' clock, the checks run before anything is changed, and `blocking`
//! (how all of these run off the async workers).
pub mod cgroup;
pub mod clock;
pub mod ethtool;
pub mod files;
pub mod host;
pub mod nat_tables;
pub mod netlink;
pub mod netns;
pub mod preflight;
pub mod process;
pub mod sysctl;

use crate::error::{Error, Result};

/// Runs blocking `f` (file locks, bpf syscalls, /proc writes) off the async workers.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Command(format!("internal task failed: {e}")))?
}
