//! `switch ns add|del|list`: namespaces as switch ports.
use serde::Serialize;

use super::{datapath_of, intent, lock, port};
use crate::{
    error::{Error, Result},
    names::{self, Cidr, Mac, NS_IFNAME, validate_name},
    state::{NsState, PortKind, PortState, State},
    sys::{netlink::Netlink, netns},
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
    /// Port security (on unless the port carries other stations).
    pub port_security: bool,
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
    /// Port security (ports only).
    pub port_security: Option<bool>,
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

fn port_info(p: &PortState) -> NsInfo {
    NsInfo {
        namespace: p.owner.clone(),
        kind: "port",
        attached_to: p.switch.clone(),
        interface: p.peer_if.clone(),
        ip: p.ip.map(|c| c.to_string()).unwrap_or_default(),
        mac: p.mac.map(|m| m.to_string()),
        host_interface: Some(p.host_if.clone()),
        port_security: Some(p.port_security),
        ready: p.ready,
    }
}

/// The rows of namespace `ns`: its port (if any), then its direct links.
fn info(state: &State, ns: &str) -> Vec<NsInfo> {
    let mut out: Vec<NsInfo> = state.ns_port(ns).map(port_info).into_iter().collect();
    if let Some(s) = state.namespaces.get(ns) {
        out.extend(s.links.iter().map(|l| NsInfo {
            namespace: ns.to_owned(),
            kind: "link",
            attached_to: l.peer.clone(),
            interface: l.ifname.clone(),
            ip: l.ip.to_string(),
            mac: None,
            host_interface: None,
            port_security: None,
            ready: s.ready,
        }));
    }
    out
}

/// Every namespace this tool manages.
pub async fn list() -> Result<Vec<NsInfo>> {
    let store = lock().await?;
    let state = store.load()?;
    let mut names: Vec<&String> = state.namespaces.keys().collect();
    names.extend(state.ports.iter().filter(|p| p.kind == PortKind::Adopted).map(|p| &p.owner));
    names.sort();
    names.dedup();
    Ok(names.into_iter().flat_map(|n| info(&state, n)).collect())
}

/// Checks that `opts` fit into `state` without conflicts. Returns `Some(info)` when the
/// namespace is already on the switch exactly as asked (the command is then a no-op).
fn check(state: &State, opts: &AddOptions) -> Result<Option<NsInfo>> {
    let sw = state.switch(&opts.switch)?;
    if !sw.ready {
        return Err(Error::Command(format!(
            "switch '{}' was not fully created; run 'switch up --switch {}' again",
            opts.switch, opts.switch
        )));
    }
    if let Some(p) = state.ns_port(&opts.ns) {
        if p.switch == opts.switch
            && p.ip == Some(opts.ip)
            && (opts.mac.is_none() || opts.mac == p.mac)
            && p.port_security == opts.port_security
        {
            return Ok(Some(port_info(p)));
        }
        return Err(Error::NamespaceExists {
            name: opts.ns.clone(),
            detail: format!(
                " (port of switch '{}' with {})",
                p.switch,
                p.ip.map(|c| c.to_string()).unwrap_or_default()
            ),
        });
    }
    if state.namespaces.contains_key(&opts.ns) {
        return Err(Error::NamespaceExists { name: opts.ns.clone(), detail: " (made by 'switch link')".into() });
    }
    if netns::exists(&opts.ns) {
        return Err(Error::NamespaceExists { name: opts.ns.clone(), detail: " (not made by switch)".into() });
    }
    if let Some(g) = state.gateway_cidr(&opts.switch) {
        if !g.contains(opts.ip.addr) || g.prefix != opts.ip.prefix {
            return Err(Error::invalid(
                "CIDR",
                opts.ip.to_string(),
                format!("not on switch '{}''s segment {}", opts.switch, g),
            ));
        }
        if g.addr == opts.ip.addr {
            return Err(Error::invalid("CIDR", opts.ip.to_string(), "is the switch's gateway address"));
        }
    }
    for p in state.ports(&opts.switch).filter(|p| p.namespace().is_some()) {
        if p.ip.map(|c| c.addr) == Some(opts.ip.addr) {
            return Err(Error::DuplicateIp {
                ip: opts.ip.addr.to_string(),
                ns: p.owner.clone(),
                switch: opts.switch.clone(),
            });
        }
        if let Some(mac) = opts.mac.filter(|&m| p.mac == Some(m)) {
            return Err(Error::DuplicateMac { mac: mac.to_string(), ns: p.owner.clone(), switch: opts.switch.clone() });
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
    state.switch(&opts.switch)?;
    intent::converge(&store, &mut state, &opts.switch).await?;
    if let Some(same) = check(&state, &opts)? {
        return Ok(AddReport { created: false, info: same });
    }

    let slot = state.free_slot(&opts.switch).ok_or_else(|| Error::SwitchFull(opts.switch.clone()))?;
    let host_if = free_host_ifname(&state, &opts.switch, &opts.ns).await?;
    let port = PortState {
        switch: opts.switch.clone(),
        kind: PortKind::Namespace,
        owner: opts.ns.clone(),
        host_if,
        host_ifindex: 0,
        peer_if: NS_IFNAME.to_owned(),
        slot: Some(slot),
        ip: Some(opts.ip),
        mac: opts.mac,
        netns_cookie: 0,
        port_security: opts.port_security,
        ready: false,
    };
    // Intent first: a crash from here on leaves a record that the next command rolls back.
    state.namespaces.insert(opts.ns.clone(), NsState { links: vec![], ready: false });
    state.ports.push(port.clone());
    store.save(&state)?;

    let dp = datapath_of(&state, &opts.switch)?;
    let gateway = state.gateway_cidr(&opts.switch).map(|g| g.addr);
    match port::make_namespace_port(dp.as_ref(), &port, gateway).await {
        Ok(made) => {
            let p = state.port_mut(&opts.switch, PortKind::Namespace, &opts.ns).expect("recorded above");
            p.host_ifindex = made.ifindex;
            p.mac = Some(made.mac);
            p.netns_cookie = made.cookie;
            p.ready = true;
            let out = port_info(p);
            state.namespaces.get_mut(&opts.ns).expect("recorded above").ready = true;
            store.save(&state)?;
            Ok(AddReport { created: true, info: out })
        }
        Err(e) => {
            // The record is still unfinished: the one rollback every command uses takes it
            // out (if that fails too, the next command of the switch tries again).
            if let Err(undo) = intent::remove_records(&store, &mut state, &opts.switch, intent::Which::Unfinished).await
            {
                tracing::warn!("rolling back namespace '{}' failed too: {undo}", opts.ns);
            }
            Err(e)
        }
    }
}

/// First derived host interface name that neither exists nor is recorded.
async fn free_host_ifname(state: &State, switch: &str, ns: &str) -> Result<String> {
    let nl = Netlink::new()?;
    for attempt in 0..64 {
        let name = names::host_ifname(switch, ns, attempt);
        let recorded = state.ports.iter().any(|p| p.host_if == name);
        if !recorded && nl.ifindex(&name).await?.is_none() {
            return Ok(name);
        }
    }
    Err(Error::Command(format!("no free interface name for namespace '{ns}'")))
}

/// Removes namespace `ns` (a port or a directly linked namespace) and everything made for it.
pub async fn del(ns: &str) -> Result<()> {
    validate_name("namespace name", ns)?;
    let store = lock().await?;
    let mut state = store.load()?;
    let port = state.ns_port(ns).cloned();
    if port.is_none() && !state.namespaces.contains_key(ns) {
        return Err(Error::UnknownNamespace(ns.to_owned()));
    }
    if let Some(p) = &port {
        intent::converge(&store, &mut state, &p.switch).await?;
        super::forward::remove_for_namespace(&mut state, ns).await?;
        let dp = state.switches.get(&p.switch).map(|s| s.datapath.open(&p.switch));
        port::teardown(&state, dp.as_deref(), p).await?;
        state.remove_port(&p.switch, p.kind, ns);
    } else {
        let links = state.namespaces[ns].links.iter().map(|l| l.ifname.clone()).collect();
        port::delete_namespace(ns, links).await?;
    }
    state.namespaces.remove(ns);
    // Peers of direct links lost their end of the veth with this namespace.
    for other in state.namespaces.values_mut() {
        other.links.retain(|l| l.peer != ns);
    }
    store.save(&state)
}
