//! Per-interface sysctls. `/proc/sys/net` shows the network namespace of the thread that opens
//! it, so inside a namespace these must run on the namespace's thread (see `netns::run_in`).
use std::fs;

use crate::error::{Context as _, Result};

/// Turns IPv6 off on `ifname`. Switch ports are pure layer-2 ports, and namespace interfaces
/// carry the IPv4 address they were given: without this, router solicitations, MLD reports and
/// duplicate address detection would chatter on every port (as Docker, containers get no IPv6
/// unless asked for).
pub fn disable_ipv6(ifname: &str) -> Result<()> {
    let path = format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6");
    match fs::write(&path, b"1") {
        Ok(()) => Ok(()),
        // Kernel without IPv6: nothing to turn off.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).context(format!("writing {path}")),
    }
}
