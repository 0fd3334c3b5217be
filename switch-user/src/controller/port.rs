//! `switch ns add|del|list`: namespaces as switch ports.
use std::os::fd::AsRawFd as _;

use serde::Serialize;
use switch_common::MAX_PORTS;

use super::{backend, blocking, failpoint, lock};
use crate::{
    error::{Error, Result},
    names::{self, Cidr, Mac, NS_IFNAME, validate_name},
    state::{NsState, PortState, State, SwitchState},
    sys::{netlink::Netlink, netns, sysctl},
};

/// Options of `switch ns add`.
#[derive(Clone, Debug)]
pub struct AddOptions {
    /// Namespace to create.
    pub ns: String,
    /// Its address.
    pub ip: Cidr,
    /// Switch to plug it into.
    pub switch: String,
    /// MAC of its interface; the kernel picks a random one if `None`.
    pub mac: Option<Mac>,
}

/// One row of `switch ns list`.
#[derive(Clone, Debug, Serialize)]
pub struct NsInfo {
    /// Namespace name.
    pub namespace: String,
    /// "port" or "link".
    pub kind: &'static str,
    /// Switch (ports) or peer namespace (links).
    pub attached_to: String,
    /// Interface inside the namespace.
    pub interface: String,
    /// Its address.
    pub ip: String,
    /// Its MAC, if known.
    pub mac: Option<String>,
    /// Host-side interface (ports only).
    pub host_interface: Option<String>,
    /// False while being made, or left half-made by an interrupted command.
    pub ready: bool,
}

/// What `ns add` did.
#[derive(Clone, Debug, Serialize)]
pub struct AddReport {
    /// False if the namespace was already on the switch as asked.
    pub created: bool,
    /// The namespace as it is now.
    pub info: NsInfo,
}

fn info(ns: &str, s: &NsState) -> Vec<NsInfo> {
    let mut out = vec![];
    if let Some(p) = &s.port {
        out.push(NsInfo {
            namespace: ns.to_owned(),
            kind: "port",
            attached_to: p.switch.clone(),
            interface: p.ns_if.clone(),
            ip: p.ip.to_string(),
            mac: p.mac.map(|m| m.to_string()),
            host_interface: Some(p.host_if.clone()),
            ready: s.ready,
        });
    }
    for l in &s.links {
        out.push(NsInfo {
            namespace: ns.to_owned(),
            kind: "link",
            attached_to: l.peer.clone(),
            interface: l.ifname.clone(),
            ip: l.ip.to_string(),
            mac: None,
            host_interface: None,
            ready: s.ready,
        });
    }
    out
}

/// Every namespace this tool manages.
pub async fn list() -> Result<Vec<NsInfo>> {
    let store = lock().await?;
    let state = store.load()?;
    Ok(state.namespaces.iter().flat_map(|(n, s)| info(n, s)).collect())
}

/// Checks that `opts` fit into `state` without conflicts. Returns `Some(info)` when the
/// namespace is already on the switch exactly as asked (the command is then a no-op).
fn check(state: &State, opts: &AddOptions) -> Result<Option<NsInfo>> {
    let sw = state.switch(&opts.switch)?;
    if !sw.ready {
        return Err(Error::Command(format!(
            "switch '{}' was not fully created; run 'switch up --name {}' again",
            opts.switch, opts.switch
        )));
    }
    if let Some(existing) = state.namespaces.get(&opts.ns) {
        if let (true, Some(p)) = (existing.ready, &existing.port) {
            if p.switch == opts.switch && p.ip == opts.ip && (opts.mac.is_none() || opts.mac == p.mac) {
                return Ok(info(&opts.ns, existing).into_iter().next());
            }
            return Err(Error::NamespaceExists {
                name: opts.ns.clone(),
                detail: format!(" (port of switch '{}' with {})", p.switch, p.ip),
            });
        }
        if existing.ready {
            return Err(Error::NamespaceExists { name: opts.ns.clone(), detail: " (made by 'switch link')".into() });
        }
        // Not ready: left by an interrupted command; the caller tears it down first.
    } else if netns::exists(&opts.ns) {
        return Err(Error::NamespaceExists { name: opts.ns.clone(), detail: " (not made by switch)".into() });
    }
    if let Some(g) = &sw.gateway {
        if !g.cidr.contains(opts.ip.addr) || g.cidr.prefix != opts.ip.prefix {
            return Err(Error::invalid(
                "CIDR",
                opts.ip.to_string(),
                format!("not on switch '{}''s segment {}", opts.switch, g.cidr),
            ));
        }
        if g.cidr.addr == opts.ip.addr {
            return Err(Error::invalid("CIDR", opts.ip.to_string(), "is the switch's gateway address"));
        }
    }
    for (other, p) in state.ports(&opts.switch) {
        if other == &opts.ns {
            continue;
        }
        if p.ip.addr == opts.ip.addr {
            return Err(Error::DuplicateIp {
                ip: opts.ip.addr.to_string(),
                ns: other.clone(),
                switch: opts.switch.clone(),
            });
        }
        if let Some(mac) = opts.mac.filter(|&m| p.mac == Some(m)) {
            return Err(Error::DuplicateMac { mac: mac.to_string(), ns: other.clone(), switch: opts.switch.clone() });
        }
    }
    Ok(None)
}

/// Adds namespace `opts.ns` as a port of switch `opts.switch`. Idempotent; rolls back
/// everything it made on failure.
pub async fn add(opts: AddOptions) -> Result<AddReport> {
    validate_name("namespace name", &opts.ns)?;
    validate_name("switch name", &opts.switch)?;
    if let Some(m) = opts.mac {
        m.validate_station()?;
    }
    let store = lock().await?;
    let mut state = store.load()?;
    if let Some(same) = check(&state, &opts)? {
        return Ok(AddReport { created: false, info: same });
    }
    if let Some(left) = state.namespaces.get(&opts.ns).cloned() {
        tracing::info!(ns = %opts.ns, "cleaning up an interrupted command on this namespace");
        teardown(&state, &opts.ns, &left).await?;
        state.namespaces.remove(&opts.ns);
        store.save(&state)?;
    }

    let mut used: Vec<u32> = state.ports(&opts.switch).map(|(_, p)| p.slot).collect();
    used.extend(state.switches[&opts.switch].gateway.as_ref().map(|g| g.slot));
    let slot = (0..MAX_PORTS).find(|s| !used.contains(s)).ok_or_else(|| Error::SwitchFull(opts.switch.clone()))?;
    let nl = Netlink::new()?;
    let host_if = free_host_ifname(&nl, &state, &opts.switch, &opts.ns).await?;
    let port = PortState {
        switch: opts.switch.clone(),
        host_if,
        host_ifindex: 0,
        ns_if: NS_IFNAME.to_owned(),
        slot,
        ip: opts.ip,
        mac: opts.mac,
        netns_cookie: 0,
    };
    // Intent first: a crash from here on leaves a record that the next command cleans up.
    state.namespaces.insert(opts.ns.clone(), NsState { port: Some(port.clone()), links: vec![], ready: false });
    store.save(&state)?;

    let sw = state.switches[&opts.switch].clone();
    match build(&nl, &opts.ns, &sw, &port).await {
        Ok((ifindex, mac, cookie)) => {
            let entry = state.namespaces.get_mut(&opts.ns).expect("inserted above");
            let p = entry.port.as_mut().expect("inserted above");
            p.host_ifindex = ifindex;
            p.mac = Some(mac);
            p.netns_cookie = cookie;
            entry.ready = true;
            let out = info(&opts.ns, entry).remove(0);
            store.save(&state)?;
            Ok(AddReport { created: true, info: out })
        }
        Err(e) => {
            let entry = state.namespaces.remove(&opts.ns).expect("inserted above");
            if let Err(undo) = teardown(&state, &opts.ns, &entry).await {
                tracing::warn!("rolling back namespace '{}' failed too: {undo}", opts.ns);
                state.namespaces.insert(opts.ns.clone(), entry);
            }
            store.save(&state)?;
            Err(e)
        }
    }
}

/// First derived host interface name that neither exists nor is recorded.
async fn free_host_ifname(nl: &Netlink, state: &State, switch: &str, ns: &str) -> Result<String> {
    for attempt in 0..64 {
        let name = names::host_ifname(switch, ns, attempt);
        let recorded = state.namespaces.values().any(|s| s.port.as_ref().is_some_and(|p| p.host_if == name));
        if !recorded && nl.ifindex(&name).await?.is_none() {
            return Ok(name);
        }
    }
    Err(Error::Command(format!("no free interface name for namespace '{ns}'")))
}

/// Makes the namespace, the veth pair, the addresses and the datapath port. Returns the host
/// interface's index and the namespace interface's MAC.
///
/// The program is attached and the port registered before the host end goes up, so no frame
/// from the namespace ever reaches the host stack unswitched.
async fn build(nl: &Netlink, ns: &str, sw: &SwitchState, port: &PortState) -> Result<(u32, Mac, u64)> {
    netns::create(ns).await?;
    let ns_file = netns::open(ns)?;
    let ifindex = nl.add_veth(&port.host_if, &port.ns_if, ns_file.as_raw_fd(), port.mac).await?;
    drop(ns_file);
    failpoint("ns-add:veth")?;

    let host_if = port.host_if.clone();
    blocking(move || sysctl::disable_ipv6(&host_if)).await?;

    let (ns_if, ip, datapath) = (port.ns_if.clone(), port.ip, sw.datapath);
    let gateway = sw.gateway.as_ref().map(|g| g.cidr.addr);
    let mac = netns::run_in(ns, move |h| async move {
        let nl = Netlink::from_handle(h);
        // On this namespace's own thread: /proc/sys/net and ioctl sockets see this namespace.
        sysctl::disable_ipv6(&ns_if)?;
        backend::prepare_ns_side(datapath, &ns_if)?;
        let idx = nl.ifindex(&ns_if).await?.ok_or_else(|| Error::Command(format!("{ns_if} missing in namespace")))?;
        nl.add_address(idx, ip).await?;
        nl.set_up(idx).await?;
        nl.set_up_by_name("lo").await?;
        if let Some(gw) = gateway {
            nl.add_default_route(gw).await?;
        }
        let mac = nl.mac(&ns_if).await?.ok_or_else(|| Error::Command(format!("{ns_if} has no MAC address")))?;
        Ok((mac, netns::cookie_here()?))
    })
    .await?;
    let (mac, cookie) = mac;
    let port = &PortState { netns_cookie: cookie, ..port.clone() };

    backend::attach_port(&port.switch, sw, port, ifindex).await?;
    failpoint("ns-add:attached")?;
    nl.set_up(ifindex).await?;
    Ok((ifindex, mac, cookie))
}

/// Removes everything a namespace record stands for, by name: the datapath port (link pin,
/// map entries), the host veth (its peer goes with it), direct links' peers' records are left
/// to the caller, and the namespace itself. Idempotent.
pub(crate) async fn teardown(state: &State, ns: &str, entry: &NsState) -> Result<()> {
    if let Some(p) = &entry.port {
        let datapath = state.switches.get(&p.switch).map(|s| s.datapath);
        backend::detach_port(&p.switch, datapath, p).await?;
        Netlink::new()?.delete(&p.host_if).await?;
    }
    // Delete direct links explicitly: the kernel would remove them with the namespace, but
    // asynchronously, and the peer namespace must not see a dying interface afterwards.
    if !entry.links.is_empty() && netns::exists(ns) {
        let ifnames: Vec<String> = entry.links.iter().map(|l| l.ifname.clone()).collect();
        netns::run_in(ns, move |h| async move {
            let nl = Netlink::from_handle(h);
            for ifname in ifnames {
                nl.delete(&ifname).await?;
            }
            Ok(())
        })
        .await?;
    }
    let name = ns.to_owned();
    blocking(move || netns::delete(&name)).await
}

/// Removes namespace `ns` (a port or a directly linked namespace) and everything made for it.
pub async fn del(ns: &str) -> Result<()> {
    validate_name("namespace name", ns)?;
    let store = lock().await?;
    let mut state = store.load()?;
    let entry = state.namespaces.get(ns).cloned().ok_or_else(|| Error::UnknownNamespace(ns.to_owned()))?;
    super::forward::remove_for_namespace(&mut state, ns).await?;
    teardown(&state, ns, &entry).await?;
    state.namespaces.remove(ns);
    // Peers of direct links lost their end of the veth with this namespace.
    for other in state.namespaces.values_mut() {
        other.links.retain(|l| l.peer != ns);
    }
    store.save(&state)
}
