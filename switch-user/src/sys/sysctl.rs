//! Per-interface sysctls. `/proc/sys/net` shows the network namespace of the thread that opens
//! it, so inside a namespace these must run on the namespace's thread (see `netns::run_in`).
use std::fs;

use crate::error::{Context as _, Result};

/// Has the kernel announce `ifname`'s IPv4 addresses (a gratuitous ARP request each) whenever
/// the interface comes up (`arp_notify`).
///
/// An address given to a new namespace (a container restarted, `ns del` then `ns add`) often
/// had another MAC before. The host and the other namespaces still hold the old one in their
/// neighbour tables and keep sending to it: the kernel re-checks a stale entry only after
/// about 5 s and then probes the old MAC three times, so the new holder is unreachable for
/// seconds (8 s per container start measured under podman). An ARP request for its own
/// address from the new port makes every neighbour table with an entry for the address take
/// the new MAC at once (one without an entry is not filled: the default `arp_accept`). The
/// Linux bridge CNI plugin sends the same from a packet socket; closing one waits out an RCU
/// grace period (about 10 ms here), the kernel's own announcement costs nothing.
pub fn announce_on_up(ifname: &str) -> Result<()> {
    let path = format!("/proc/sys/net/ipv4/conf/{ifname}/arp_notify");
    fs::write(&path, b"1").context(format!("writing {path}"))
}

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

/// Turns IPv4 forwarding on for `ifname`, a VXLAN device of the switch's: the datapath's FIB
/// lookups for the packets it encapsulates itself are made as if they arrived there, and
/// the kernel answers those only for an interface that forwards. Nothing the device receives
/// reaches the host's stack (its program switches or drops every frame), so nothing is
/// routed from it; the setting goes with the device.
pub fn forward_on_tunnel(ifname: &str) -> Result<()> {
    let path = format!("/proc/sys/net/ipv4/conf/{ifname}/forwarding");
    fs::write(&path, b"1").context(format!("writing {path}"))
}
