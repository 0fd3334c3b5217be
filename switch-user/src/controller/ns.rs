//! `switch ns add|del|list|attach|detach`: namespaces as switch ports, made by the switch
//! (`add`) or by someone else (`attach`: a container runtime's, any `/proc/PID/ns/net`).
use serde::Serialize;

use std::path::PathBuf;

use super::{
    datapath_of, intent, lock,
    port::{self, NsEnd},
};
use crate::{
    error::{Error, Result},
    names::{self, Cidr, Cidr6, Mac, validate_name},
    state::{Attachment, ForwardState, NsState, PortKind, PortState, State, Store, Workload},
    sys::{netlink::Netlink, netns},
};

/// Options of `switch ns add`.
#[derive(Clone, Debug)]
pub struct AddOptions {
    /// Namespace to create.
    pub ns: String,
    /// Its address.
    pub ip: Cidr,
    /// Its IPv6 address, if any (IPv6 stays off inside without one).
    pub ip6: Option<Cidr6>,
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
    /// "port" (a namespace switch made), "attached" (one it did not) or "link".
    pub kind: &'static str,
    /// Switch (ports) or peer namespace (links).
    pub attached_to: String,
    /// Interface inside the namespace.
    pub interface: String,
    /// Its address.
    pub ip: String,
    /// Its IPv6 address, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip6: Option<String>,
    /// Its MAC, if known.
    pub mac: Option<String>,
    /// Host-side interface (ports only).
    pub host_interface: Option<String>,
    /// Port security (ports only).
    pub port_security: Option<bool>,
    /// The namespace file of an attached namespace.
    pub netns: Option<String>,
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
        kind: if p.kind == PortKind::Adopted { "attached" } else { "port" },
        attached_to: p.switch.clone(),
        interface: p.peer_if.clone(),
        ip: p.ip.map(|c| c.to_string()).unwrap_or_default(),
        ip6: p.ip6.map(|c| c.to_string()),
        mac: p.mac.map(|m| m.to_string()),
        host_interface: Some(p.host_if.clone()),
        port_security: Some(p.port_security),
        netns: p.netns_path.clone(),
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
            ip6: None,
            mac: None,
            host_interface: None,
            port_security: None,
            netns: None,
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
    ready_switch(state, &opts.switch)?;
    if let Some(p) = state.ns_port(&opts.ns) {
        if p.switch == opts.switch
            && p.ip == Some(opts.ip)
            && p.ip6 == opts.ip6
            && (opts.mac.is_none() || opts.mac == p.mac)
            && p.port_security == opts.port_security
        {
            return Ok(Some(port_info(p)));
        }
        return Err(Error::NamespaceExists {
            name: opts.ns.clone(),
            detail: format!(" (port of switch '{}' with {})", p.switch, p.addresses()),
        });
    }
    if state.namespaces.contains_key(&opts.ns) {
        return Err(Error::NamespaceExists { name: opts.ns.clone(), detail: " (made by 'switch link')".into() });
    }
    if netns::exists(&opts.ns) {
        return Err(Error::NamespaceExists { name: opts.ns.clone(), detail: " (not made by switch)".into() });
    }
    check_segment(state, opts)?;
    Ok(None)
}

/// `switch` exists and was made completely.
fn ready_switch(state: &State, switch: &str) -> Result<()> {
    if !state.switch(switch)?.ready {
        return Err(Error::Command(format!(
            "switch '{switch}' was not fully created; run 'switch up --switch {switch}' again"
        )));
    }
    Ok(())
}

/// The address fits the switch's segment (not the gateway's) and neither it nor the MAC is
/// another port's.
fn check_segment(state: &State, opts: &AddOptions) -> Result<()> {
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
    if let Some(ip6) = opts.ip6 {
        check_segment6(state, &opts.switch, ip6)?;
    }
    for p in state.ports(&opts.switch).filter(|p| p.namespace().is_some()) {
        let taken = match (p.ip, p.ip6, opts.ip6) {
            (Some(c), _, _) if c.addr == opts.ip.addr => Some(c.addr.to_string()),
            (_, Some(c), Some(asked)) if c.addr == asked.addr => Some(c.addr.to_string()),
            _ => None,
        };
        if let Some(ip) = taken {
            return Err(Error::DuplicateIp { ip, ns: p.owner.clone(), switch: opts.switch.clone() });
        }
    }
    match opts.mac {
        Some(mac) => check_mac(state, &opts.switch, mac),
        None => Ok(()),
    }
}

/// The IPv6 address `ip6` fits the switch's IPv6 segment, if its gateway has one (the same
/// prefix, not the gateway's address).
fn check_segment6(state: &State, switch: &str, ip6: Cidr6) -> Result<()> {
    let Some(g) = state.gateway_cidr6(switch) else { return Ok(()) };
    if !g.contains(ip6.addr) || g.prefix != ip6.prefix {
        return Err(Error::invalid("CIDR", ip6.to_string(), format!("not on switch '{switch}''s segment {g}")));
    }
    if g.addr == ip6.addr {
        return Err(Error::invalid("CIDR", ip6.to_string(), "is the switch's gateway address"));
    }
    Ok(())
}

/// `mac` is no port's of `switch` (a namespace's, an adopted one's, the gateway's) and no
/// other switch's gateway's: a port given a MAC in use would take its holder's frames (the
/// host's, for a gateway's). The datapath refuses a bound MAC twice as well (its table of
/// reserved MACs is only ever added to where absent); this says who holds it, before anything
/// is made.
pub(crate) fn check_mac(state: &State, switch: &str, mac: Mac) -> Result<()> {
    let holder = state.ports.iter().filter(|p| p.mac == Some(mac)).find_map(|p| match (p.kind, p.switch == switch) {
        (PortKind::Gateway, _) => Some(format!("the gateway of switch '{}'", p.switch)),
        (PortKind::Namespace | PortKind::Adopted, true) => {
            Some(format!("namespace '{}' on switch '{}'", p.owner, p.switch))
        }
        (_, true) => Some(format!("the {} port '{}' of switch '{}'", p.kind, p.owner, p.switch)),
        _ => None,
    });
    match holder {
        Some(holder) => Err(Error::DuplicateMac { mac: mac.to_string(), holder }),
        None => Ok(()),
    }
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
    // Behind a tunnel, frames must fit the underlay once encapsulated.
    let end = NsEnd {
        ip: opts.ip,
        ip6: opts.ip6,
        mac: opts.mac,
        mtu: tunnel_mtu(&state, &opts.switch),
        port_security: opts.port_security,
    };
    let port = port::namespace(&opts.switch, &opts.ns, host_if, slot, end);
    // Intent first: a crash from here on leaves a record that the next command rolls back.
    state.namespaces.insert(opts.ns.clone(), NsState { links: vec![], ready: false });
    state.ports.push(port.clone());
    store.save(&state)?;

    make_recorded(&store, &mut state, port).await
}

/// Options of `switch ns attach`: a namespace the switch did not make (a container runtime's,
/// or any `/proc/PID/ns/net`) plugged into a switch. The switch makes only the veth pair, and
/// leaves the namespace alone when the port goes.
#[derive(Clone, Debug)]
pub struct AttachOptions {
    /// The port's name (its owner in listings): a container ID, or what the user calls it.
    pub name: String,
    /// The namespace file.
    pub netns: PathBuf,
    /// The interface to make inside it.
    pub ifname: String,
    /// Its address.
    pub ip: Cidr,
    /// Its IPv6 address, if any.
    pub ip6: Option<Cidr6>,
    /// Switch to plug it into.
    pub switch: String,
    /// MAC of the interface; the kernel picks a random one if `None`.
    pub mac: Option<Mac>,
    /// MTU of the veth pair (the kernel's default if `None`).
    pub mtu: Option<u32>,
    /// Port security.
    pub port_security: bool,
    /// The CNI attachment the port is (`switch-cni`'s ports), recorded with it.
    pub attachment: Option<Attachment>,
    /// The pod or container behind it, as the runtime named it (a label for listings).
    pub workload: Option<Workload>,
}

/// Checks `opts` against `state`. `Some(info)` when the port exists exactly as asked.
fn check_attach(state: &State, opts: &AttachOptions, handed_over: bool) -> Result<Option<NsInfo>> {
    if let Some(p) = state.ns_port(&opts.name) {
        let same = p.kind == PortKind::Adopted
            && p.handed_over == handed_over
            && p.switch == opts.switch
            && p.ip == Some(opts.ip)
            && p.ip6 == opts.ip6
            && p.peer_if == opts.ifname
            && p.netns_file().as_deref() == Some(opts.netns.as_path())
            && (opts.mac.is_none() || opts.mac == p.mac)
            && p.port_security == opts.port_security
            && p.attachment == opts.attachment;
        if same && p.ready {
            return Ok(Some(port_info(p)));
        }
        return Err(Error::NamespaceExists {
            name: opts.name.clone(),
            detail: format!(" (a port of switch '{}' as {})", p.switch, p.netns_file().unwrap_or_default().display()),
        });
    }
    if state.namespaces.contains_key(&opts.name) {
        return Err(Error::NamespaceExists { name: opts.name.clone(), detail: " (made by switch)".into() });
    }
    // The same address and MAC rules as for a namespace the switch makes.
    let as_add = AddOptions {
        ns: opts.name.clone(),
        ip: opts.ip,
        ip6: opts.ip6,
        switch: opts.switch.clone(),
        mac: opts.mac,
        port_security: opts.port_security,
    };
    check_segment(state, &as_add)?;
    Ok(None)
}

/// Plugs the namespace at `opts.netns` into switch `opts.switch` as port `opts.name`: a veth
/// pair with `opts.ifname` inside, its address and a default route via the gateway.
/// Idempotent; rolls back what it made on failure. Never deletes the namespace.
pub async fn attach(opts: AttachOptions) -> Result<AddReport> {
    attach_port(opts, false).await
}

/// `attach` for a runtime that moves the namespace's end into `opts.netns` itself (Docker's
/// Join): the veth pair is made on the host, its far end named `opts.ifname` there, with the
/// port's MAC and MTU and nothing else (the runtime gives it its address and routes).
pub async fn attach_handed_over(opts: AttachOptions) -> Result<AddReport> {
    attach_port(opts, true).await
}

async fn attach_port(opts: AttachOptions, handed_over: bool) -> Result<AddReport> {
    validate_name("port name", &opts.name)?;
    validate_name("switch name", &opts.switch)?;
    names::validate_ifname(&opts.ifname)?;
    if let Some(m) = opts.mac {
        m.validate_station()?;
    }
    if let Some(mtu) = opts.mtu.filter(|m| !(68..=65_535).contains(m)) {
        return Err(Error::invalid("MTU", mtu.to_string(), "must be between 68 and 65535"));
    }
    // A namespace file that is not one is refused before anything is recorded (a runtime that
    // moves the far end itself may make its namespace afterwards).
    if !handed_over {
        drop(netns::open_path(&opts.netns)?);
    }
    let store = lock().await?;
    let mut state = store.load()?;
    ready_switch(&state, &opts.switch)?;
    intent::converge(&store, &mut state, &opts.switch).await?;
    if let Some(same) = check_attach(&state, &opts, handed_over)? {
        return Ok(AddReport { created: false, info: same });
    }
    let slot = state.free_slot(&opts.switch).ok_or_else(|| Error::SwitchFull(opts.switch.clone()))?;
    let host_if = free_host_ifname(&state, &opts.switch, &opts.name).await?;
    let mtu = opts.mtu.or_else(|| tunnel_mtu(&state, &opts.switch));
    let end = NsEnd { ip: opts.ip, ip6: opts.ip6, mac: opts.mac, mtu, port_security: opts.port_security };
    let port = PortState {
        attachment: opts.attachment.clone(),
        workload: opts.workload.clone(),
        handed_over,
        ..port::adopted(&opts.switch, &opts.name, host_if, slot, &opts.netns, &opts.ifname, end)
    };
    state.ports.push(port.clone());
    store.save(&state)?;
    make_recorded(&store, &mut state, port).await
}

/// Learns the namespace of the handed-over port `name` of `switch` once its runtime made it
/// (Docker makes a container's namespace when it starts, after Join): its cookie is recorded,
/// and its sockets may reach forwards directly (hairpin), as a namespace attached whole may.
/// `Ok(true)` when learned (or known already), `Ok(false)` while the namespace is not there
/// yet or when the port is gone.
pub async fn learn_namespace(name: &str, switch: &str) -> Result<bool> {
    let store = lock().await?;
    let mut state = store.load()?;
    let Some(p) = adopted(&state, name, Some(switch)).filter(|p| p.ready).cloned() else { return Ok(false) };
    if p.netns_cookie != 0 {
        return Ok(true);
    }
    let dp = datapath_of(&state, switch)?;
    let Some(cookie) = port::learn_namespace(dp.as_ref(), &p).await? else { return Ok(false) };
    if let Some(r) = state.port_mut(switch, PortKind::Adopted, name) {
        r.netns_cookie = cookie;
    }
    store.save(&state)?;
    Ok(true)
}

/// Labels the adopted port `name` of `switch` with the workload a runtime runs behind it, when
/// the runtime tells it only after the port was made (Docker: the container's name is not in
/// Join). `Ok(false)` if there is no such port.
pub async fn label(name: &str, switch: &str, workload: Workload) -> Result<bool> {
    let store = lock().await?;
    let mut state = store.load()?;
    let Some(p) = state.port_mut(switch, PortKind::Adopted, name) else { return Ok(false) };
    p.workload = Some(workload);
    store.save(&state)?;
    Ok(true)
}

/// The MTU the ports of `switch` get when it has a tunnel: the underlay's minus the VXLAN
/// overhead, so an encapsulated frame is never too big for the underlay.
fn tunnel_mtu(state: &State, switch: &str) -> Option<u32> {
    state.tunnel(switch).and_then(|p| p.tunnel.as_ref()).map(|t| t.mtu)
}

/// Makes the recorded, unfinished port `port` (a namespace's or an adopted one) and marks
/// it ready; on failure the one rollback every command uses takes the record out again.
async fn make_recorded(store: &Store, state: &mut State, port: PortState) -> Result<AddReport> {
    let dp = datapath_of(state, &port.switch)?;
    match port::make(dp.as_ref(), state, &port).await {
        Ok(made) => {
            let records = [intent::Record::Port(&port, made), intent::Record::Namespace(&port.owner)];
            intent::finish(store, state, records)?;
            let p = state.port(&port.switch, port.kind, &port.owner).expect("recorded by the caller");
            Ok(AddReport { created: true, info: port_info(p) })
        }
        Err(e) => {
            // The record is still unfinished: the one rollback every command uses takes it
            // out (if that fails too, the next command of the switch tries again).
            if let Err(undo) = intent::remove_records(store, state, &port.switch, intent::Which::Unfinished).await {
                tracing::warn!("rolling back port '{}' failed too: {undo}", port.owner);
            }
            Err(e)
        }
    }
}

/// Every port of `switch`, as recorded (none if there is no such switch). Changes nothing.
pub async fn ports_of(switch: &str) -> Result<Vec<PortState>> {
    let store = lock().await?;
    Ok(store.load()?.ports(switch).cloned().collect())
}

/// The attached port `name` (of `switch`, if given) and the forwards to it, as recorded.
/// Changes nothing.
pub async fn attached(name: &str, switch: Option<&str>) -> Result<Option<(PortState, Vec<ForwardState>)>> {
    let store = lock().await?;
    let state = store.load()?;
    let Some(p) = adopted(&state, name, switch) else { return Ok(None) };
    let forwards = state.forwards.iter().filter(|f| f.ns == name && f.switch == p.switch).cloned().collect();
    Ok(Some((p.clone(), forwards)))
}

fn adopted<'a>(state: &'a State, name: &str, switch: Option<&str>) -> Option<&'a PortState> {
    state.ports.iter().find(|p| p.kind == PortKind::Adopted && p.owner == name && switch.is_none_or(|s| s == p.switch))
}

/// Takes the adopted port `name` (of `switch`, if given) out of its switch: its forwards,
/// its veth pair, its connections and its record go; the namespace stays. `Ok(false)` if
/// there is no such port (already detached).
pub async fn detach(name: &str, switch: Option<&str>) -> Result<bool> {
    validate_name("port name", name)?;
    let store = lock().await?;
    let mut state = store.load()?;
    let Some(p) = adopted(&state, name, switch).cloned() else {
        if state.ns_port(name).is_some() || state.namespaces.contains_key(name) {
            return Err(Error::invalid(
                "namespace",
                name,
                "was made by switch, not attached: remove it with 'switch ns del'",
            ));
        }
        return Ok(false);
    };
    intent::converge(&store, &mut state, &p.switch).await?;
    super::failpoint("ns-detach:start")?;
    super::forward::remove_for_port(&mut state, &p.switch, name).await?;
    let dp = state.switches.get(&p.switch).map(|s| s.datapath.open(&p.switch));
    port::teardown(&state, dp.as_deref(), &p).await?;
    port::forget_connections(dp.as_deref(), &p).await?;
    state.remove_port(&p.switch, p.kind, name);
    store.save(&state)?;
    Ok(true)
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
        port::forget_connections(dp.as_deref(), p).await?;
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
