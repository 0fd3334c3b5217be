//! `switch forward add|del|list`: port forwarding from the uplinks to namespaces, in eBPF
//! (`switch-ebpf/src/nat_uplink.rs`): no iptables rule, no proxy process, the server sees the
//! client's real address, and a port range costs one map entry per port, nothing more.
use std::{
    collections::{HashMap, HashSet},
    fs,
    net::Ipv4Addr,
};

use serde::Serialize;
use switch_common::{FwdStats, FwdTarget, NAT_F_MASQUERADE, NatConfig, nat::MAX_FORWARDS};

use super::{blocking, ebpf_switch, failpoint, lock};
use crate::{
    datapath::ebpf::{
        Pins,
        nat::{NatMaps, wire},
    },
    error::{Context as _, Error, Result},
    names::validate_name,
    state::{ForwardState, Proto, State, SwitchState},
    sys::netlink::Netlink,
};

/// A port or an inclusive port range, as typed: `8080` or `8000-8099`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port.
    pub last: u16,
}

impl std::str::FromStr for PortRange {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::invalid("port", s, why);
        let port = |p: &str| -> Result<u16> {
            match p.trim().parse::<u32>() {
                Ok(0) => Err(bad("port 0 cannot be forwarded")),
                Ok(n) if n > 65_535 => Err(bad("ports go up to 65535")),
                Ok(n) => Ok(n as u16),
                Err(_) => Err(bad("expected PORT or FIRST-LAST")),
            }
        };
        let (first, last) = match s.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(s)?, port(s)?),
        };
        if first > last {
            return Err(bad("the range ends before it starts"));
        }
        Ok(Self { first, last })
    }
}

impl PortRange {
    fn len(self) -> u32 {
        u32::from(self.last - self.first) + 1
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.first == self.last { write!(f, "{}", self.first) } else { write!(f, "{}-{}", self.first, self.last) }
    }
}

/// `--to NS:PORT[-PORT]`.
pub fn parse_target(s: &str) -> Result<(String, PortRange)> {
    let (ns, ports) = s
        .rsplit_once(':')
        .ok_or_else(|| Error::invalid("target", s, "expected NAMESPACE:PORT or NAMESPACE:FIRST-LAST"))?;
    validate_name("namespace name", ns)?;
    Ok((ns.to_owned(), ports.parse()?))
}

/// Attaches the forwarding programs to the switch's uplinks, fills the uplink addresses and
/// turns IPv4 forwarding on for the uplinks and the gateway (first packets of a connection,
/// and masqueraded ones, are routed by the host between them).
pub(crate) async fn attach_uplinks(name: &str, sw: &SwitchState, state: &State) -> Result<()> {
    if sw.uplinks.is_empty() {
        return Ok(());
    }
    let nl = Netlink::new()?;
    let mut addrs = vec![];
    let mut sources = vec![];
    for u in &sw.uplinks {
        let idx =
            nl.ifindex(u).await?.ok_or_else(|| Error::invalid("uplink interface", u.clone(), "no such interface"))?;
        let taken = state.namespaces.values().filter_map(|n| n.port.as_ref()).any(|p| &p.host_if == u);
        if taken {
            return Err(Error::invalid("uplink interface", u.clone(), "is a switch port"));
        }
        let a = nl.ipv4_addrs(idx).await?;
        if let Some(first) = a.first() {
            sources.push((idx, *first));
        }
        addrs.extend(a);
    }
    let gateway =
        sw.gateway.as_ref().map(|g| g.cidr).ok_or_else(|| Error::Command("port forwarding needs a gateway".into()))?;
    let mask = if gateway.prefix == 0 { 0 } else { u32::MAX << (32 - gateway.prefix) };
    let cfg = NatConfig {
        host_netns_cookie: crate::sys::netns::cookie_here()?,
        segment: wire(Ipv4Addr::from(u32::from(gateway.addr) & mask)),
        segment_mask: wire(Ipv4Addr::from(mask)),
        flags: if sw.masquerade { NAT_F_MASQUERADE } else { 0 },
        gateway_ifindex: match &sw.gateway {
            Some(g) => nl.ifindex(&g.host_if).await?.unwrap_or(0),
            None => 0,
        },
    };
    let gateway_if = sw.gateway.as_ref().map(|g| g.host_if.clone());
    let (pins, uplinks) = (Pins::new(name), sw.uplinks.clone());
    blocking(move || {
        let mut maps = NatMaps::open(&pins)?;
        maps.set_config(cfg)?;
        maps.set_uplink_addrs(&addrs)?;
        for (idx, addr) in &sources {
            maps.set_uplink_source(*idx, *addr)?;
        }
        for u in &uplinks {
            pins.attach_uplink(u)?;
        }
        pins.attach_sock_hooks(&cgroup2_root()?)?;
        if let Some(g) = &gateway_if {
            pins.attach_gateway_nat(g)?;
        }
        // Forwarding only where it is needed (packets arriving on the uplinks and on the
        // gateway's host end), not host-wide through net.ipv4.ip_forward.
        for dev in uplinks.iter().chain(&gateway_if) {
            let path = format!("/proc/sys/net/ipv4/conf/{dev}/forwarding");
            fs::write(&path, b"1").context(format!("turning on IPv4 forwarding on {dev}"))?;
        }
        Ok(())
    })
    .await
}

/// Where the cgroup v2 hierarchy is mounted (its root holds every process).
fn cgroup2_root() -> Result<std::path::PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| std::path::PathBuf::from(f[1]))
        })
        .ok_or_else(|| {
            Error::Command("no cgroup v2 hierarchy is mounted (needed for host-local port forwarding)".into())
        })
}

/// Options of `forward add`.
#[derive(Clone, Debug)]
pub struct AddOptions {
    /// Switch whose uplinks answer.
    pub switch: String,
    /// Protocol.
    pub proto: Proto,
    /// Host ports.
    pub host: PortRange,
    /// Target namespace.
    pub ns: String,
    /// Target ports (same count as `host`).
    pub to: PortRange,
}

/// Host ports in `range` that a host process listens on (TCP) or is bound to (UDP).
fn host_listeners(proto: Proto, range: PortRange) -> Vec<u16> {
    let files: &[&str] = match proto {
        Proto::Tcp => &["/proc/net/tcp", "/proc/net/tcp6"],
        Proto::Udp => &["/proc/net/udp", "/proc/net/udp6"],
    };
    let mut out = vec![];
    for f in files {
        for line in fs::read_to_string(f).unwrap_or_default().lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // local_address is "HEXADDR:HEXPORT"; state 0A is LISTEN (TCP), 07 is UNCONN (UDP).
            let (Some(local), Some(st)) = (cols.get(1), cols.get(3)) else { continue };
            let listening = match proto {
                Proto::Tcp => *st == "0A",
                Proto::Udp => *st == "07",
            };
            let port = local.rsplit_once(':').and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if let Some(p) = port.filter(|p| listening && (range.first..=range.last).contains(p)) {
                out.push(p);
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

fn check(state: &State, o: &AddOptions) -> Result<(SwitchState, Ipv4Addr)> {
    let sw = ebpf_switch(state, &o.switch, "switch forward add", "port forwarding (it runs in eBPF)")?.clone();
    if sw.gateway.is_none() {
        return Err(Error::invalid(
            "command",
            "switch forward add",
            format!("switch '{}' has no uplink: make it with --gateway CIDR [--uplink IFACE]", o.switch),
        ));
    }
    if o.host.len() != o.to.len() {
        return Err(Error::invalid(
            "port range",
            format!("{} -> {}", o.host, o.to),
            format!("{} host ports but {} target ports", o.host.len(), o.to.len()),
        ));
    }
    let ns = state.namespaces.get(&o.ns).ok_or_else(|| Error::UnknownNamespace(o.ns.clone()))?;
    let port = ns.port.as_ref().filter(|p| ns.ready && p.switch == o.switch).ok_or_else(|| {
        Error::invalid("target", o.ns.clone(), format!("namespace '{}' is not a port of switch '{}'", o.ns, o.switch))
    })?;
    // Host ports are host-wide: 127.0.0.1:PORT on the host can only mean one target.
    for f in state.forwards.iter().filter(|f| f.proto == o.proto) {
        if f.host_first <= o.host.last && o.host.first <= f.host_last {
            let range = PortRange { first: f.host_first, last: f.host_last };
            return Err(Error::invalid(
                "port",
                format!("{}/{}", o.proto, o.host),
                format!("{}/{range} is already forwarded to {} (switch '{}')", f.proto, f.ns, f.switch),
            ));
        }
    }
    let busy = host_listeners(o.proto, o.host);
    if !busy.is_empty() {
        return Err(Error::invalid(
            "port",
            format!("{}/{}", o.proto, o.host),
            format!(
                "a host process listens on {}/{busy:?}; forwarding would hide it from outside (pick other ports)",
                o.proto
            ),
        ));
    }
    Ok((sw, port.ip.addr))
}

/// Forwards `o.host` on the switch's uplinks to `o.ns`'s `o.to`.
pub async fn add(o: AddOptions) -> Result<ForwardState> {
    validate_name("switch name", &o.switch)?;
    let store = lock().await?;
    let mut state = store.load()?;
    let (mut sw, target_ip) = check(&state, &o)?;
    if sw.uplinks.is_empty() {
        // No --uplink given: traffic from outside arrives where the default route leaves.
        let dev = Netlink::new()?.default_route_interface().await?.ok_or_else(|| {
            Error::invalid(
                "command",
                "switch forward add",
                "the host has no default route; give the switch an --uplink",
            )
        })?;
        sw.uplinks = vec![dev];
        state.switches.get_mut(&o.switch).expect("checked").uplinks = sw.uplinks.clone();
    }
    let used: Vec<u16> = state.forwards.iter().filter(|f| f.switch == o.switch).map(|f| f.rule).collect();
    let rule = (0..MAX_FORWARDS as u16)
        .find(|r| !used.contains(r))
        .ok_or_else(|| Error::Command(format!("switch '{}' has {MAX_FORWARDS} forwards already", o.switch)))?;
    let fwd = ForwardState {
        switch: o.switch.clone(),
        proto: o.proto,
        host_first: o.host.first,
        host_last: o.host.last,
        ns: o.ns.clone(),
        ns_first: o.to.first,
        rule,
    };
    // Refresh the uplink addresses: they may have changed since `up`.
    attach_uplinks(&o.switch, &sw, &state).await?;
    reconcile(&state, &o.switch).await?;
    let f = fwd.clone();
    let written = blocking(move || {
        let mut maps = NatMaps::open(&Pins::new(&f.switch))?;
        maps.reset_stats(f.rule)?;
        for (i, host) in (f.host_first..=f.host_last).enumerate() {
            let target = FwdTarget { addr: wire(target_ip), port: f.ns_first + i as u16, rule: f.rule };
            maps.add(f.proto.number(), host, target)?;
            failpoint("forward-add:map")?;
        }
        Ok(())
    })
    .await;
    if let Err(e) = written {
        // Take back the part of the range that was written: the state never names it.
        let _ = reconcile(&state, &o.switch).await;
        return Err(e);
    }
    state.forwards.push(fwd.clone());
    store.save(&state)?;
    Ok(fwd)
}

/// Removes the forward of `proto` `host` (exactly as added). New connections stop at once;
/// established ones finish.
pub async fn del(switch: &str, proto: Proto, host: PortRange) -> Result<()> {
    validate_name("switch name", switch)?;
    let store = lock().await?;
    let mut state = store.load()?;
    state.switch(switch)?;
    let i = state
        .forwards
        .iter()
        .position(|f| f.switch == switch && f.proto == proto && f.host_first == host.first && f.host_last == host.last)
        .ok_or_else(|| {
            Error::invalid("port", format!("{proto}/{host}"), format!("not forwarded on switch '{switch}'"))
        })?;
    let f = state.forwards[i].clone();
    remove_entries(&f).await?;
    state.forwards.remove(i);
    store.save(&state)?;
    reconcile(&state, switch).await
}

/// Makes the switch's FORWARDS map hold exactly the forwards the state records. The state is
/// saved only once a forward's entries are all written, so a `forward add` killed half-way
/// leaves entries nobody lists; the next forward command on the switch takes them out.
async fn reconcile(state: &State, switch: &str) -> Result<()> {
    let known: HashSet<(u8, u16)> = state
        .forwards
        .iter()
        .filter(|f| f.switch == switch)
        .flat_map(|f| (f.host_first..=f.host_last).map(move |p| (f.proto.number(), p)))
        .collect();
    let switch = switch.to_owned();
    blocking(move || {
        let pins = Pins::new(&switch);
        if !pins.complete() {
            return Ok(());
        }
        let removed = NatMaps::open(&pins)?.retain_forwards(|k| known.contains(&(k.proto, k.port)))?;
        if removed > 0 {
            tracing::info!("removed {removed} forward entries no command finished (switch '{switch}')");
        }
        Ok(())
    })
    .await
}

async fn remove_entries(f: &ForwardState) -> Result<()> {
    let f = f.clone();
    blocking(move || {
        let pins = Pins::new(&f.switch);
        if !pins.complete() {
            return Ok(());
        }
        let mut maps = NatMaps::open(&pins)?;
        for host in f.host_first..=f.host_last {
            maps.remove(f.proto.number(), host)?;
        }
        Ok(())
    })
    .await
}

/// Removes the forwards to namespace `ns` (it is going away).
pub(crate) async fn remove_for_namespace(state: &mut State, ns: &str) -> Result<()> {
    for f in state.forwards.iter().filter(|f| f.ns == ns) {
        remove_entries(f).await?;
    }
    state.forwards.retain(|f| f.ns != ns);
    Ok(())
}

/// One row of `forward list`.
#[derive(Clone, Debug, Serialize)]
pub struct ForwardRow {
    /// Switch.
    pub switch: String,
    /// Protocol.
    pub proto: Proto,
    /// Host ports.
    pub host_ports: String,
    /// Target namespace.
    pub namespace: String,
    /// Target address and ports.
    pub to: String,
    /// Packets translated.
    pub packets: u64,
    /// Bytes translated.
    pub bytes: u64,
    /// Connections made through the rule.
    pub connections: u64,
    /// Connections in the table now.
    pub active: u64,
}

/// Every forward (of `switch`, if given) with its counters.
pub async fn list(switch: Option<&str>) -> Result<Vec<ForwardRow>> {
    let store = lock().await?;
    let state = store.load()?;
    for (name, _) in state.switches.iter().filter(|(n, sw)| sw.datapath.is_ebpf() && switch.is_none_or(|s| s == *n)) {
        reconcile(&state, name).await?;
    }
    let listed: Vec<ForwardState> =
        state.forwards.iter().filter(|f| switch.is_none_or(|s| s == f.switch)).cloned().collect();
    // Per switch, one walk of its connection table serves every rule (a walk is a system call
    // per entry, up to 65 536 of them).
    let mut switches: Vec<String> = listed.iter().map(|f| f.switch.clone()).collect();
    switches.sort_unstable();
    switches.dedup();
    let mut active: HashMap<(String, u16), u64> = HashMap::new();
    let mut stats: HashMap<(String, u16), FwdStats> = HashMap::new();
    for sw in switches {
        let rules: Vec<u16> = listed.iter().filter(|f| f.switch == sw).map(|f| f.rule).collect();
        let (sw, per_rule, live) = blocking(move || {
            let mut maps = NatMaps::open(&Pins::new(&sw))?;
            let per_rule = rules.iter().map(|&r| Ok((r, maps.stats(r)?))).collect::<Result<Vec<_>>>()?;
            let live = maps.connections()?.by_rule;
            Ok((sw, per_rule, live))
        })
        .await?;
        for (rule, s) in per_rule {
            stats.insert((sw.clone(), rule), s);
            active.insert((sw.clone(), rule), live.get(&rule).copied().unwrap_or(0));
        }
    }
    let mut rows = vec![];
    for f in &listed {
        let ip = state
            .namespaces
            .get(&f.ns)
            .and_then(|n| n.port.as_ref())
            .map(|p| p.ip.addr.to_string())
            .unwrap_or_default();
        let key = (f.switch.clone(), f.rule);
        let (stats, active) = (stats[&key], active[&key]);
        let to = PortRange { first: f.ns_first, last: f.ns_first + (f.host_last - f.host_first) };
        rows.push(ForwardRow {
            switch: f.switch.clone(),
            proto: f.proto,
            host_ports: PortRange { first: f.host_first, last: f.host_last }.to_string(),
            namespace: f.ns.clone(),
            to: format!("{ip}:{to}"),
            packets: stats.packets,
            bytes: stats.bytes,
            connections: stats.connections,
            active,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_targets() {
        assert_eq!("8080".parse::<PortRange>().unwrap(), PortRange { first: 8080, last: 8080 });
        assert_eq!("8000-8099".parse::<PortRange>().unwrap().len(), 100);
        for bad in ["0", "65536", "x", "10-5", "1-0", ""] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
        assert_eq!(parse_target("web:80").unwrap(), ("web".into(), PortRange { first: 80, last: 80 }));
        assert!(parse_target("web").is_err());
        assert!(parse_target("we/b:80").is_err());
        assert_eq!("8000-8001".parse::<PortRange>().unwrap().to_string(), "8000-8001");
    }
}
