//! `switch forward add|del|list`: port forwarding from the uplinks to namespaces, in eBPF
//! (`switch-ebpf/src/nat_uplink.rs`): no iptables rule, no proxy process, the server sees the
//! client's real address, and a port range costs one map entry per port, nothing more.
use std::{collections::HashMap, fs, net::Ipv4Addr};

use serde::Serialize;
use switch_common::nat::MAX_FORWARDS;

use super::{datapath_of, failpoint, intent, lock, port};
use crate::{
    error::{Error, Result},
    names::validate_name,
    state::{ForwardState, PortKind, PortState, Proto, State, Store},
    sys::netlink::Netlink,
};

/// A port or an inclusive port range, as typed: `8080` or `8000-8099`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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

/// A forward's target as typed: `NS:PORT` or `NS:FIRST-LAST`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The namespace.
    pub ns: String,
    /// Its ports.
    pub ports: PortRange,
}

impl std::str::FromStr for Target {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let (ns, ports) = s
            .rsplit_once(':')
            .ok_or_else(|| Error::invalid("target", s, "expected NAMESPACE:PORT or NAMESPACE:FIRST-LAST"))?;
        validate_name("namespace name", ns)?;
        Ok(Self { ns: ns.to_owned(), ports: ports.parse()? })
    }
}

/// Refuses uplink `ifname` unless it is a host interface that is not a port of a switch.
pub(crate) async fn check_uplink(state: &State, ifname: &str) -> Result<()> {
    validate_name("uplink interface", ifname)?;
    if Netlink::new()?.ifindex(ifname).await?.is_none() {
        return Err(Error::invalid("uplink interface", ifname, "no such interface"));
    }
    if state.ports.iter().any(|p| p.host_if == ifname && p.kind != PortKind::Uplink) {
        return Err(Error::invalid("uplink interface", ifname, "is a switch port"));
    }
    Ok(())
}

/// Attaches the forwarding programs to switch `name`'s uplinks and gateway, fills the uplink
/// addresses, and turns IPv4 forwarding on for the uplinks and the gateway's host end (first
/// packets of a connection, and masqueraded ones, are routed by the host between them), each
/// sysctl recorded so that `down` gives it back. Marks the uplink ports ready.
pub(crate) async fn setup_uplinks(store: &Store, state: &mut State, name: &str) -> Result<()> {
    let uplinks: Vec<PortState> = state.ports(name).filter(|p| p.kind == PortKind::Uplink).cloned().collect();
    if uplinks.is_empty() {
        return Ok(());
    }
    let dp = datapath_of(state, name)?;
    let mut made = vec![];
    // Each writes the whole set again (the datapath takes the uplinks as one): idempotent.
    for u in &uplinks {
        made.push(port::make(dp.as_ref(), state, u).await?);
    }
    let gateway_if = state.gateway(name).map(|g| g.peer_if.clone()).expect("making the uplinks needed it");
    // Forwarding only where it is needed, not host-wide through net.ipv4.ip_forward.
    for dev in uplinks.iter().map(|u| &u.host_if).chain([&gateway_if]) {
        intent::set_sysctl(store, state, name, &format!("/proc/sys/net/ipv4/conf/{dev}/forwarding"), "1").await?;
    }
    intent::finish(store, state, uplinks.iter().zip(made).map(|(u, made)| intent::Record::Port(u, made)))
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

/// Host ports in `range` that a host process listens on (TCP) or is bound to (UDP), other than
/// the reservations of the target `owner` itself: a container runtime holds a published port
/// open for its container (rootful podman's conmon, whose command line names the container),
/// and the forward is exactly what that reservation is for.
fn host_listeners(proto: Proto, range: PortRange, owner: &str) -> Vec<u16> {
    let mut own: Option<Vec<u64>> = None;
    let mut out = vec![];
    for (port, inode) in listening_sockets(proto, range) {
        let own = own.get_or_insert_with(|| sockets_of_processes_naming(owner));
        if !own.contains(&inode) {
            out.push(port);
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Inodes of the sockets held by processes whose command line has `word` as one argument.
fn sockets_of_processes_naming(word: &str) -> Vec<u64> {
    let mut inodes = vec![];
    let Ok(procs) = fs::read_dir("/proc") else { return inodes };
    for p in procs.filter_map(|e| e.ok()) {
        let dir = p.path();
        let cmdline = fs::read(dir.join("cmdline")).unwrap_or_default();
        if !cmdline.split(|&b| b == 0).any(|arg| arg == word.as_bytes()) {
            continue;
        }
        for fd in fs::read_dir(dir.join("fd")).into_iter().flatten().filter_map(|e| e.ok()) {
            let link = fs::read_link(fd.path()).unwrap_or_default();
            let link = link.to_string_lossy();
            if let Some(n) = link.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
                inodes.extend(n.parse::<u64>().ok());
            }
        }
    }
    inodes
}

/// (port, socket inode) of every listening TCP or bound UDP socket with a port in `range`.
fn listening_sockets(proto: Proto, range: PortRange) -> Vec<(u16, u64)> {
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
            let inode = cols.get(9).and_then(|i| i.parse().ok()).unwrap_or(0);
            if let Some(p) = port.filter(|p| listening && (range.first..=range.last).contains(p)) {
                out.push((p, inode));
            }
        }
    }
    out
}

fn check(state: &State, o: &AddOptions) -> Result<Ipv4Addr> {
    datapath_of(state, &o.switch)?.require_forwarding()?;
    if state.gateway(&o.switch).is_none() {
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
    if !state.namespaces.contains_key(&o.ns) && state.ns_port(&o.ns).is_none() {
        return Err(Error::UnknownNamespace(o.ns.clone()));
    }
    let port = state.ns_port(&o.ns).filter(|p| p.ready && p.switch == o.switch).ok_or_else(|| {
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
    let busy = host_listeners(o.proto, o.host, &o.ns);
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
    port.ip.map(|c| c.addr).ok_or_else(|| Error::Command(format!("namespace '{}' has no address", o.ns)))
}

/// Forwards `o.host` on the switch's uplinks to `o.ns`'s `o.to`.
pub async fn add(o: AddOptions) -> Result<ForwardState> {
    validate_name("switch name", &o.switch)?;
    let store = lock().await?;
    add_locked(&store, o).await
}

/// Forwards the first host port in `within` that no forward has and no host process holds
/// (`o.host` is ignored) to `o.ns`'s single port `o.to`: a published port without a host
/// port (Docker's `-p 80`). Chosen under the state lock, so concurrent calls never pick the
/// same port.
pub async fn add_free(o: AddOptions, within: PortRange) -> Result<ForwardState> {
    validate_name("switch name", &o.switch)?;
    let store = lock().await?;
    let state = store.load()?;
    let held: Vec<u16> = listening_sockets(o.proto, within).into_iter().map(|(p, _)| p).collect();
    let forwarded =
        |p: u16| state.forwards.iter().any(|f| f.proto == o.proto && (f.host_first..=f.host_last).contains(&p));
    let port = (within.first..=within.last).find(|p| !held.contains(p) && !forwarded(*p)).ok_or_else(|| {
        Error::Command(format!("no free {} host port in {within} to publish {}:{}", o.proto, o.ns, o.to))
    })?;
    add_locked(&store, AddOptions { host: PortRange { first: port, last: port }, ..o }).await
}

async fn add_locked(store: &Store, o: AddOptions) -> Result<ForwardState> {
    let mut state = store.load()?;
    state.switch(&o.switch)?;
    intent::converge(store, &mut state, &o.switch).await?;
    let target_ip = check(&state, &o)?;
    if state.uplinks(&o.switch).is_empty() {
        // No --uplink given: traffic from outside arrives where the default route leaves.
        let dev = Netlink::new()?.default_route_interface().await?.ok_or_else(|| {
            Error::invalid(
                "command",
                "switch forward add",
                "the host has no default route; give the switch an --uplink",
            )
        })?;
        check_uplink(&state, &dev).await?;
        state.ports.push(port::uplink(&o.switch, &dev));
        store.save(&state)?;
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
        ready: false,
    };
    // Refresh the uplink addresses: they may have changed since `up`.
    let made = async {
        setup_uplinks(store, &mut state, &o.switch).await?;
        // Intent first: a killed command leaves a record the next one rolls back.
        state.forwards.push(fwd.clone());
        store.save(&state)?;
        let dp = datapath_of(&state, &o.switch)?;
        dp.require_forwarding()?.write(&fwd, target_ip, || failpoint("forward-add:map")).await
    }
    .await;
    if let Err(e) = made {
        // Take back what was written and the records not finished (an uplink adopted above).
        let _ = intent::converge(store, &mut state, &o.switch).await;
        return Err(e);
    }
    intent::finish(store, &mut state, [intent::Record::Forward(&fwd)])?;
    Ok(ForwardState { ready: true, ..fwd })
}

/// Removes the forward of `proto` `host` (exactly as added). New connections stop at once;
/// established ones finish.
pub async fn del(switch: &str, proto: Proto, host: PortRange) -> Result<()> {
    validate_name("switch name", switch)?;
    let store = lock().await?;
    let mut state = store.load()?;
    state.switch(switch)?;
    intent::converge(&store, &mut state, switch).await?;
    let i = state
        .forwards
        .iter()
        .position(|f| f.switch == switch && f.proto == proto && f.host_first == host.first && f.host_last == host.last)
        .ok_or_else(|| {
            Error::invalid("port", format!("{proto}/{host}"), format!("not forwarded on switch '{switch}'"))
        })?;
    let f = state.forwards.remove(i);
    if let Some(fw) = datapath_of(&state, switch)?.forwarding() {
        fw.remove(&f).await?;
    }
    store.save(&state)
}

/// Removes the forwards to namespace `ns` (it is going away).
pub(crate) async fn remove_for_namespace(state: &mut State, ns: &str) -> Result<()> {
    remove_where(state, |f| f.ns == ns).await
}

/// Removes the forwards of switch `switch` to port `owner` (it is going away; the same
/// owner may have a port on another switch).
pub(crate) async fn remove_for_port(state: &mut State, switch: &str, owner: &str) -> Result<()> {
    remove_where(state, |f| f.ns == owner && f.switch == switch).await
}

async fn remove_where(state: &mut State, doomed: impl Fn(&ForwardState) -> bool) -> Result<()> {
    for f in state.forwards.iter().filter(|f| doomed(f)) {
        if let Some(fw) = state.switches.get(&f.switch).map(|s| s.datapath.open(&f.switch))
            && let Some(fw) = fw.forwarding()
        {
            fw.remove(f).await?;
        }
    }
    state.forwards.retain(|f| !doomed(f));
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
    /// The pod or container a runtime runs behind the target's port (`namespace/name` for a
    /// pod), as `switch ports` shows it.
    pub workload: Option<String>,
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

/// Every forward (of `switch`, if given) with its counters. Changes nothing; a forward a
/// killed command left unfinished is not listed (the next mutating command rolls it back).
pub async fn list(switch: Option<&str>) -> Result<Vec<ForwardRow>> {
    let store = lock().await?;
    read(&store.load()?, switch).await
}

/// The forwards of `switch` (every switch's if `None`) as `state` records them (see
/// `stats::read`).
pub(crate) async fn read(state: &State, switch: Option<&str>) -> Result<Vec<ForwardRow>> {
    let listed: Vec<&ForwardState> =
        state.forwards.iter().filter(|f| f.ready && switch.is_none_or(|s| s == f.switch)).collect();
    let mut switches: Vec<&str> = listed.iter().map(|f| f.switch.as_str()).collect();
    switches.sort_unstable();
    switches.dedup();
    // Per switch, one walk of its connection table serves every rule (a walk is a system call
    // per entry, up to 65 536 of them).
    let mut counters = HashMap::new();
    for sw in switches {
        let rules: Vec<u16> = listed.iter().filter(|f| f.switch == sw).map(|f| f.rule).collect();
        let dp = datapath_of(state, sw)?;
        counters.insert(sw, dp.require_forwarding()?.counters(&rules).await?);
    }
    Ok(listed
        .into_iter()
        .map(|f| {
            let port = state.ns_port(&f.ns);
            let ip = port.and_then(|p| p.ip).map(|c| c.addr.to_string()).unwrap_or_default();
            let c = &counters[f.switch.as_str()];
            let stats = c.per_rule.get(&f.rule).copied().unwrap_or_default();
            let to = PortRange { first: f.ns_first, last: f.ns_first + (f.host_last - f.host_first) };
            ForwardRow {
                switch: f.switch.clone(),
                proto: f.proto,
                host_ports: PortRange { first: f.host_first, last: f.host_last }.to_string(),
                namespace: f.ns.clone(),
                workload: port.and_then(PortState::workload_name),
                to: format!("{ip}:{to}"),
                packets: stats.packets,
                bytes: stats.bytes,
                connections: stats.connections,
                active: c.active.get(&f.rule).copied().unwrap_or(0),
            }
        })
        .collect())
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
        let web80 = Target { ns: "web".into(), ports: PortRange { first: 80, last: 80 } };
        assert_eq!("web:80".parse::<Target>().unwrap(), web80);
        assert!("web".parse::<Target>().is_err());
        assert!("we/b:80".parse::<Target>().is_err());
        assert_eq!("8000-8001".parse::<PortRange>().unwrap().to_string(), "8000-8001");
    }
}
