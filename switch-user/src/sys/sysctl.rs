//! Per-interface sysctls, and the host's ephemeral port range. `/proc/sys/net` shows the
//! network namespace of the thread that opens it, so inside a namespace these must run on the
//! namespace's thread (see `netns::run_in`).
use std::fs;

use crate::error::{Context as _, Error, Result};

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

/// Turns IPv6 on for `ifname`, an interface given an IPv6 address (a namespace's end, the
/// gateway's host end), before it comes up:
/// - no duplicate address detection (`accept_dad` 0): the switch hands out each address once
///   and port security keeps any other port from claiming it, so the second of waiting that
///   detection costs would only delay the port's readiness;
/// - the link-local address from the MAC (`addr_gen_mode` 0, modified EUI-64), the one port
///   security binds the port to;
/// - its addresses announced when it comes up (`ndisc_notify`, an unsolicited neighbour
///   advertisement each), IPv6's `announce_on_up`.
pub fn enable_ipv6(ifname: &str) -> Result<()> {
    for (key, value) in [("accept_dad", "0"), ("addr_gen_mode", "0"), ("ndisc_notify", "1"), ("disable_ipv6", "0")] {
        let path = format!("/proc/sys/net/ipv6/conf/{ifname}/{key}");
        fs::write(&path, value).context(format!("writing {path}"))?;
    }
    Ok(())
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

/// Fewest masquerade source ports: below this, busy remotes would run out.
const MIN_MASQUERADE_PORTS: u32 = 1024;

/// The source ports masquerade uses: every port above the host's ephemeral range
/// (`net.ipv4.ip_local_port_range`), which the host's own sockets never pick when they
/// connect. A host connection from port P to R:r and a namespace's connection from P to R:r
/// then never share a translated 5-tuple, so the namespace cannot take the host's replies.
/// (Reserving ports with `ip_local_reserved_ports` would change a host-wide setting that
/// several switches share; choosing outside the range changes nothing.)
pub fn masquerade_ports() -> Result<(u16, u16)> {
    let path = "/proc/sys/net/ipv4/ip_local_port_range";
    let text = fs::read_to_string(path).context(format!("reading {path}"))?;
    masquerade_ports_above(&text)
}

/// `masquerade_ports` for the text of `ip_local_port_range` ("32768\t60999").
fn masquerade_ports_above(range: &str) -> Result<(u16, u16)> {
    let last: u32 = range.split_whitespace().nth(1).and_then(|v| v.parse().ok()).ok_or_else(|| {
        Error::Command(format!("cannot read the host's ephemeral port range from '{}'", range.trim()))
    })?;
    let count = 65_535u32.saturating_sub(last);
    if count < MIN_MASQUERADE_PORTS {
        return Err(Error::Command(format!(
            "the host's ephemeral ports (net.ipv4.ip_local_port_range {}) leave only {count} ports above them for \
             masquerade, which needs {MIN_MASQUERADE_PORTS}: lower the range's end (e.g. sysctl -w \
             net.ipv4.ip_local_port_range=\"32768 60999\") or use --no-masquerade",
            range.split_whitespace().collect::<Vec<_>>().join(" ")
        )));
    }
    Ok(((last + 1) as u16, count as u16))
}

#[cfg(test)]
mod tests {
    #[test]
    fn masquerade_ports_lie_above_the_ephemeral_range() {
        assert_eq!(super::masquerade_ports_above("32768\t60999\n").unwrap(), (61000, 4536));
        assert_eq!(super::masquerade_ports_above("1024 64000").unwrap(), (64001, 1535));
        let e = super::masquerade_ports_above("1024\t65000").unwrap_err().to_string();
        assert!(e.contains("only 535 ports") && e.contains("--no-masquerade"), "{e}");
        assert!(super::masquerade_ports_above("garbage").is_err());
    }
}
