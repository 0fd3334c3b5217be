//! `switch up`, `switch down`, `switch list` and `switch run`.
use serde::Serialize;
use switch_common::{DEFAULT_AGEING_SECS, DEFAULT_MAX_LEARNED};

use super::{failpoint, forward, intent, lock, port};
use crate::{
    datapath::{
        self,
        settings::Settings,
        userspace::{engine::Config as EngineConfig, runner},
    },
    error::{Error, Result},
    kind::{Capability, DatapathKind},
    names::{Cidr, Cidr6, validate_name},
    state::{PortKind, PortState, Redirect, State, Store, SwitchState, TunnelState, VXLAN_OVERHEAD},
    sys::netlink::Netlink,
};

/// Options of `switch up`. `None` means "default for a new switch, don't care for an
/// existing one".
#[derive(Clone, Debug, Default)]
pub struct UpOptions {
    /// Switch name.
    pub name: String,
    /// FDB ageing time in seconds.
    pub ageing_secs: Option<u64>,
    /// How known unicast is redirected (tc only).
    pub redirect: Option<Redirect>,
    /// How frames are moved.
    pub datapath: Option<DatapathKind>,
    /// The host's address on the segment (namespaces get a default route via it).
    pub gateway: Option<Cidr>,
    /// The host's IPv6 address on the segment (needs `gateway`; namespaces with an IPv6
    /// address get a default IPv6 route via it).
    pub gateway6: Option<Cidr6>,
    /// Host interfaces where forwarded traffic arrives (needs a gateway and an eBPF datapath).
    pub uplinks: Vec<String>,
    /// Do not masquerade namespaces' outbound traffic on the uplinks.
    pub no_masquerade: bool,
    /// Let the host route into and out of the segment from and to anywhere.
    pub routable: bool,
    /// New stations a port without a bound MAC may learn per ageing period (0: no limit).
    pub max_learned: Option<u32>,
    /// A tunnel port to the switches of other hosts (VXLAN).
    pub vxlan: Option<VxlanOptions>,
    /// Microseconds a userspace switch's lanes keep polling for frames before they sleep.
    pub busy_poll_us: Option<u32>,
}

/// The tunnel port `up --vxlan VNI --underlay IFACE [--vxlan-port PORT]` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanOptions {
    /// VXLAN network identifier (1..=16777215).
    pub vni: u32,
    /// Host interface the encapsulated traffic goes over; its address is the local VTEP's.
    pub underlay: String,
    /// UDP port of the VXLAN traffic.
    pub port: u16,
}

/// Shortest prefix of a gateway (`up --gateway`): the segment is routed to the switch, so a
/// shorter one would take over the host's routes to a large part of the address space.
pub const MIN_GATEWAY_PREFIX: u8 = 8;

/// Shortest prefix of an IPv6 gateway: as `MIN_GATEWAY_PREFIX`, for IPv6's address space.
pub const MIN_GATEWAY_PREFIX6: u8 = 16;

/// The IANA port of VXLAN.
pub const VXLAN_PORT: u16 = 4789;

/// What `up` did.
#[derive(Clone, Debug, Serialize)]
pub struct UpReport {
    /// Switch name.
    pub name: String,
    /// False if it was already up.
    pub created: bool,
    /// DatapathKind.
    pub datapath: DatapathKind,
    /// FDB ageing time in seconds.
    pub ageing_secs: u64,
    /// Unicast redirect mode (tc datapath).
    pub redirect: Redirect,
    /// Where the datapath is pinned (eBPF datapaths).
    pub pins: Option<String>,
    /// The host's address on the segment.
    pub gateway: Option<Cidr>,
    /// The host's IPv6 address on the segment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<Cidr6>,
    /// Uplinks carrying port forwards.
    pub uplinks: Vec<String>,
    /// Outbound traffic leaves the uplinks with the uplink's address.
    pub masquerade: bool,
    /// The host routes into and out of the segment freely.
    pub routable: bool,
    /// Learning limit of ports without a bound MAC (0: none).
    pub max_learned: u32,
    /// Busy polling of the userspace datapath's lanes, in microseconds (0: none).
    pub busy_poll_us: u32,
    /// The tunnel port: VNI, underlay, local VTEP address, MTU, peers.
    pub vxlan: Option<TunnelState>,
}

impl UpReport {
    fn new(name: &str, state: &State, created: bool) -> Self {
        let s = &state.switches[name];
        Self {
            name: name.to_owned(),
            created,
            datapath: s.datapath,
            ageing_secs: s.ageing_secs,
            redirect: s.redirect,
            pins: s.datapath.open(name).location(),
            gateway: state.gateway_cidr(name),
            gateway6: state.gateway_cidr6(name),
            uplinks: state.uplinks(name),
            masquerade: s.masquerade,
            routable: s.routable,
            max_learned: s.max_learned,
            busy_poll_us: s.busy_poll_us,
            vxlan: state.tunnel(name).and_then(|p| p.tunnel.clone()),
        }
    }
}

fn validate(opts: &UpOptions) -> Result<()> {
    validate_name("switch name", &opts.name)?;
    if opts.ageing_secs == Some(0) {
        return Err(Error::invalid("ageing time", "0", "must be at least 1 second"));
    }
    let chosen = opts.datapath.map(|d| d.open(&opts.name));
    Settings { redirect: opts.redirect, busy_poll_us: opts.busy_poll_us }.check(chosen.as_deref(), true)?;
    if let Some(g) = opts.gateway.filter(|g| g.prefix < MIN_GATEWAY_PREFIX) {
        // The host routes the whole prefix into the segment: a /1 would take half the
        // internet (and the host's own networks) away from its other interfaces.
        return Err(Error::invalid(
            "gateway",
            g.to_string(),
            format!("a segment shorter than /{MIN_GATEWAY_PREFIX} would route too much of the address space into it"),
        ));
    }
    if let Some(g) = opts.gateway6 {
        if opts.gateway.is_none() {
            return Err(Error::invalid(
                "gateway",
                g.to_string(),
                "an IPv6 gateway needs an IPv4 one beside it (--gateway twice)",
            ));
        }
        if g.prefix < MIN_GATEWAY_PREFIX6 || g.prefix > 126 {
            return Err(Error::invalid(
                "gateway",
                g.to_string(),
                format!("an IPv6 segment is /{MIN_GATEWAY_PREFIX6} to /126 (a /64 is usual)"),
            ));
        }
    }
    if !opts.uplinks.is_empty() {
        let joined = opts.uplinks.join(",");
        if opts.gateway.is_none() {
            return Err(Error::invalid("option", format!("--uplink {joined}"), "port forwarding also needs --gateway"));
        }
        if let Some(d) = opts.datapath.filter(|d| !d.open(&opts.name).has(Capability::PortForwarding)) {
            return Err(Error::invalid(
                "option",
                format!("--uplink {joined}"),
                format!("the {d} datapath has no port forwarding (it runs in eBPF: tc or xdp)"),
            ));
        }
        for u in &opts.uplinks {
            validate_name("uplink interface", u)?;
        }
    }
    if let Some(v) = &opts.vxlan {
        if !(1..=0x00ff_ffff).contains(&v.vni) {
            return Err(Error::invalid("VNI", v.vni.to_string(), "must be between 1 and 16777215"));
        }
        if v.port == 0 {
            return Err(Error::invalid("VXLAN port", "0", "must be between 1 and 65535"));
        }
        crate::names::validate_ifname(&v.underlay)?;
        if let Some(d) = opts.datapath.filter(|d| !d.open(&opts.name).has(Capability::Tunnel)) {
            return Err(Error::invalid(
                "option",
                format!("--vxlan {}", v.vni),
                format!("the {d} datapath has no tunnel ports (VXLAN needs the tc datapath)"),
            ));
        }
    }
    Ok(())
}

/// Compares a running switch with what is asked for.
fn conflicts(state: &State, existing: &SwitchState, opts: &UpOptions) -> Result<()> {
    let (gateway, uplinks) = (state.gateway_cidr(&opts.name), state.uplinks(&opts.name));
    let mut diffs = vec![];
    if let Some(d) = opts.datapath.filter(|&d| d != existing.datapath) {
        diffs.push(format!(
            "datapath {} (asked for {d}; switching a running switch's datapath is not supported)",
            existing.datapath
        ));
    }
    if let Some(a) = opts.ageing_secs.filter(|&a| a != existing.ageing_secs) {
        diffs.push(format!("ageing {}s (asked for {a}s)", existing.ageing_secs));
    }
    if opts.no_masquerade && existing.masquerade {
        diffs.push("masquerade (asked for --no-masquerade)".into());
    }
    if opts.routable && !existing.routable {
        diffs.push("an isolated segment (asked for --routable)".into());
    }
    if let Some(m) = opts.max_learned.filter(|&m| m != existing.max_learned) {
        diffs.push(format!("max-learned {} (asked for {m})", existing.max_learned));
    }
    if let Some(us) = opts.busy_poll_us.filter(|&us| us != existing.busy_poll_us) {
        diffs.push(format!("busy-poll {} us (asked for {us} us)", existing.busy_poll_us));
    }
    if let Some(r) = opts.redirect.filter(|&r| r != existing.redirect) {
        diffs.push(format!("redirect {} (asked for {r})", existing.redirect));
    }
    if let Some(g) = opts.gateway.filter(|g| gateway != Some(*g)) {
        let has = gateway.map_or("no gateway".into(), |e| format!("gateway {e}"));
        diffs.push(format!("{has} (asked for gateway {g})"));
    }
    let gateway6 = state.gateway_cidr6(&opts.name);
    if let Some(g) = opts.gateway6.filter(|g| gateway6 != Some(*g)) {
        let has = gateway6.map_or("no IPv6 gateway".into(), |e| format!("gateway {e}"));
        diffs.push(format!("{has} (asked for gateway {g})"));
    }
    if !opts.uplinks.is_empty() && opts.uplinks != uplinks {
        diffs.push(format!("uplinks [{}] (asked for [{}])", uplinks.join(","), opts.uplinks.join(",")));
    }
    if let Some(v) = &opts.vxlan {
        let has = state.tunnel(&opts.name).and_then(|p| p.tunnel.as_ref());
        if has.is_none_or(|t| t.vni != v.vni || t.underlay != v.underlay || t.udp_port != v.port) {
            let has =
                has.map_or("no tunnel".into(), |t| format!("vxlan {} over {} port {}", t.vni, t.underlay, t.udp_port));
            diffs.push(format!("{has} (asked for vxlan {} over {} port {})", v.vni, v.underlay, v.port));
        }
    }
    if diffs.is_empty() { Ok(()) } else { Err(Error::Conflict { name: opts.name.clone(), detail: diffs.join(", ") }) }
}

/// Records switch `opts.name` as being made, with its gateway and uplink ports, and returns
/// its settings; `Ok(None)` if it is already up and healthy as asked.
async fn begin(store: &Store, state: &mut State, opts: &UpOptions) -> Result<Option<SwitchState>> {
    if let Some(existing) = state.switches.get(&opts.name).cloned()
        && up_as_asked(store, state, &existing, opts).await?
    {
        return Ok(None);
    }
    check_segment(state, opts)?;
    for u in &opts.uplinks {
        forward::check_uplink(state, u).await?;
    }
    let tunnel = match (&opts.vxlan, state.tunnel(&opts.name)) {
        (Some(v), None) => Some(tunnel_settings(state, &opts.name, v).await?),
        _ => None,
    };
    let new = new_state(opts, state.switches.get(&opts.name));
    // `--busy-poll` without `--datapath`: the default datapath may not take it. (A redirect
    // asked of a switch that exists was compared by `conflicts`.)
    let settings = Settings { redirect: None, busy_poll_us: Some(new.busy_poll_us) };
    settings.check(Some(new.datapath.open(&opts.name).as_ref()), opts.datapath.is_some())?;
    state.switches.insert(opts.name.clone(), new.clone());
    record_ports(state, opts, tunnel)?;
    store.save(state)?;
    Ok(Some(new))
}

/// Whether the recorded switch `existing` is up and healthy as `opts` asks (refused if it
/// contradicts them). An interrupted `up`, or a userspace switch whose process died, is not:
/// it is to be made again.
async fn up_as_asked(store: &Store, state: &mut State, existing: &SwitchState, opts: &UpOptions) -> Result<bool> {
    conflicts(state, existing, opts)?;
    intent::converge(store, state, &opts.name).await?;
    let dp = existing.datapath.open(&opts.name);
    if existing.ready && dp.healthy().await? {
        return Ok(true);
    }
    if existing.ready && !dp.remakeable() {
        return Err(Error::Command(format!(
            "switch '{}' is recorded as up but its {} datapath is gone; run 'switch down --switch {}' and create it again",
            opts.name, existing.datapath, opts.name
        )));
    }
    tracing::info!(switch = %opts.name, "re-making the switch object");
    Ok(false)
}

/// Refuses a gateway whose segment overlaps another switch's: two segments with overlapping
/// subnets on one host would fight over the routes.
fn check_segment(state: &State, opts: &UpOptions) -> Result<()> {
    for (other, _) in state.switches.iter().filter(|(n, _)| **n != opts.name) {
        let overlap = match (opts.gateway, state.gateway_cidr(other)) {
            (Some(g), Some(o)) if o.contains(g.addr) || g.contains(o.addr) => Some((g.to_string(), o.to_string())),
            _ => None,
        };
        let overlap6 = match (opts.gateway6, state.gateway_cidr6(other)) {
            (Some(g), Some(o)) if o.contains(g.addr) || g.contains(o.addr) => Some((g.to_string(), o.to_string())),
            _ => None,
        };
        if let Some((g, o)) = overlap.or(overlap6) {
            return Err(Error::invalid("gateway", g, format!("overlaps switch '{other}''s segment {o}")));
        }
    }
    Ok(())
}

/// The settings of switch `opts.name`, not made yet: as asked, and where nothing is asked,
/// as `existing` has them (a switch made again; `conflicts` refused any contradiction
/// already) or the defaults.
fn new_state(opts: &UpOptions, existing: Option<&SwitchState>) -> SwitchState {
    SwitchState {
        ageing_secs: opts.ageing_secs.or(existing.map(|e| e.ageing_secs)).unwrap_or(DEFAULT_AGEING_SECS),
        redirect: opts.redirect.or(existing.map(|e| e.redirect)).unwrap_or(Redirect::Peer),
        datapath: opts.datapath.or(existing.map(|e| e.datapath)).unwrap_or_default(),
        // Effective once the switch has uplinks (given here, or adopted by `forward add`).
        masquerade: !opts.no_masquerade && existing.is_none_or(|e| e.masquerade),
        routable: opts.routable || existing.is_some_and(|e| e.routable),
        max_learned: opts.max_learned.or(existing.map(|e| e.max_learned)).unwrap_or(DEFAULT_MAX_LEARNED),
        busy_poll_us: opts.busy_poll_us.or(existing.map(|e| e.busy_poll_us)).unwrap_or(0),
        sysctls: existing.map(|e| e.sysctls.clone()).unwrap_or_default(),
        log_followers: existing.map(|e| e.log_followers.clone()).unwrap_or_default(),
        monitors: existing.map(|e| e.monitors.clone()).unwrap_or_default(),
        captures: existing.map(|e| e.captures.clone()).unwrap_or_default(),
        ready: false,
    }
}

/// Records the ports of switch `opts.name` that `opts` asks for and it does not have yet:
/// the gateway, the uplinks, the tunnel (with its settings `tunnel`).
fn record_ports(state: &mut State, opts: &UpOptions, tunnel: Option<TunnelState>) -> Result<()> {
    let name = &opts.name;
    if let Some(cidr) = opts.gateway.filter(|_| state.gateway(name).is_none()) {
        let slot = state.free_slot(name).ok_or_else(|| Error::SwitchFull(name.clone()))?;
        // Behind a tunnel, the host's packets into the segment must fit it too.
        let mtu = tunnel.as_ref().map(|t| t.mtu);
        state.ports.push(port::gateway(name, cidr, opts.gateway6, slot, mtu));
    }
    for u in &opts.uplinks {
        if state.port(name, PortKind::Uplink, u).is_none() {
            state.ports.push(port::uplink(name, u));
        }
    }
    if let Some(t) = tunnel {
        let slot = state.free_slot(name).ok_or_else(|| Error::SwitchFull(name.clone()))?;
        state.ports.push(port::tunnel(name, t, slot));
    }
    Ok(())
}

/// The settings of the tunnel `v` asks for on this host: the underlay's address (the local
/// VTEP's) and MTU (less the VXLAN overhead: the tunnel's and the namespaces' MTU). The VNI
/// must be no other switch's here (the kernel would refuse the second device's filter too).
async fn tunnel_settings(state: &State, name: &str, v: &VxlanOptions) -> Result<TunnelState> {
    let other =
        state.ports.iter().filter(|p| p.switch != name).find_map(|p| {
            p.tunnel.as_ref().filter(|t| t.vni == v.vni && t.udp_port == v.port).map(|_| p.switch.clone())
        });
    if let Some(other) = other {
        return Err(Error::invalid("VNI", v.vni.to_string(), format!("switch '{other}' of this host has it already")));
    }
    let nl = Netlink::new()?;
    let index = nl
        .ifindex(&v.underlay)
        .await?
        .ok_or_else(|| Error::invalid("underlay interface", v.underlay.clone(), "no such interface"))?;
    let local = *nl.ipv4_addrs(index).await?.first().ok_or_else(|| {
        Error::invalid(
            "underlay interface",
            v.underlay.clone(),
            "has no IPv4 address (the local VTEP address is the underlay's)",
        )
    })?;
    let underlay_mtu = nl.mtu(&v.underlay).await?.unwrap_or(1500);
    let mtu = underlay_mtu.saturating_sub(VXLAN_OVERHEAD);
    if mtu < 576 {
        return Err(Error::invalid(
            "underlay interface",
            v.underlay.clone(),
            format!("its MTU {underlay_mtu} leaves less than 576 bytes inside the tunnel"),
        ));
    }
    Ok(TunnelState { vni: v.vni, udp_port: v.port, underlay: v.underlay.clone(), local, mtu, peers: vec![] })
}

/// Makes the switch object and every port of it that is not made: the gateway, the uplinks,
/// and (for a userspace process started again) the namespace ports it must take over.
async fn make(store: &Store, state: &mut State, name: &str) -> Result<()> {
    let sw = state.switches[name].clone();
    let dp = sw.datapath.open(name);
    dp.create(&sw).await?;
    // The gateway made again with the switch object (a restarted userspace process takes it
    // afresh), the tunnel once.
    let ports: Vec<PortState> =
        [state.gateway(name), state.tunnel(name).filter(|t| !t.ready)].into_iter().flatten().cloned().collect();
    for p in ports {
        let made = port::make(dp.as_ref(), state, &p).await?;
        intent::made(state, intent::Record::Port(&p, made));
    }
    forward::setup_uplinks(store, state, name).await?;
    failpoint("up:made")?;
    // Ports a restarted userspace process must take over again.
    let again =
        |p: &&PortState| p.ready && p.kind.is_switched() && !matches!(p.kind, PortKind::Gateway | PortKind::Tunnel);
    for p in state.ports(name).filter(again) {
        dp.attach_port(p).await?;
    }
    Ok(())
}

/// Creates switch `opts.name`, or checks that it is up with compatible settings. A
/// userspace switch whose process died is restarted with its ports.
pub async fn up(opts: UpOptions) -> Result<UpReport> {
    validate(&opts)?;
    let store = lock().await?;
    let mut state = store.load()?;
    if begin(&store, &mut state, &opts).await?.is_none() {
        return Ok(UpReport::new(&opts.name, &state, false));
    }
    // The ports this `up` makes (the gateway, the tunnel): `make` marks each ready as it is
    // made, but until the switch is, a failure takes them out again.
    let making: Vec<(PortKind, String)> =
        state.ports(&opts.name).filter(|p| !p.ready).map(|p| (p.kind, p.owner.clone())).collect();
    if let Err(e) = make(&store, &mut state, &opts.name).await {
        for (kind, owner) in &making {
            if let Some(p) = state.port_mut(&opts.name, *kind, owner) {
                p.ready = false;
            }
        }
        // Roll back what this `up` made: its ports (not ready), the switch object, and the
        // record unless older ports still hang on it.
        let undone = intent::converge(&store, &mut state, &opts.name).await;
        let _ = state.switches[&opts.name].datapath.open(&opts.name).destroy().await;
        if undone.is_ok() && state.ports(&opts.name).next().is_none() {
            intent::restore_sysctls(&state, &opts.name).await?;
            state.switches.remove(&opts.name);
        }
        store.save(&state)?;
        return Err(e);
    }
    intent::finish(&store, &mut state, [intent::Record::Switch(&opts.name)])?;
    Ok(UpReport::new(&opts.name, &state, true))
}

/// What `down` did.
#[derive(Clone, Debug, Serialize)]
pub struct DownReport {
    /// Switch name.
    pub name: String,
    /// False if there was nothing to remove.
    pub existed: bool,
    /// Namespaces removed with their ports.
    pub removed_namespaces: Vec<String>,
}

/// Removes switch `name`, its ports and their namespaces. Converges whatever state an
/// interrupted command left; a switch that does not exist is not an error.
pub async fn down(name: &str) -> Result<DownReport> {
    validate_name("switch name", name)?;
    let store = lock().await?;
    down_locked(&store, name).await
}

async fn down_locked(store: &Store, name: &str) -> Result<DownReport> {
    let mut state = store.load()?;
    let existed = state.switches.contains_key(name) || datapath::exists_any(name).await?;
    let removed = match intent::remove_records(store, &mut state, name, intent::Which::All).await {
        Ok(removed) => removed,
        Err(e) => {
            // Tables this binary cannot use (a switch made by an older one, whose maps have
            // other value sizes), or a datapath broken some other way: the whole switch goes,
            // so the datapath goes first and the records after it, which then find no table
            // to take their ports out of. `down` must work on whatever is there.
            tracing::warn!(switch = name, error = %e, "removing the datapath before the ports");
            datapath::destroy_any(name).await?;
            intent::remove_records(store, &mut state, name, intent::Which::All).await?
        }
    };
    // Whatever datapath it had: after a crash the record saying which may be gone.
    datapath::destroy_any(name).await?;
    intent::restore_sysctls(&state, name).await?;
    state.switches.remove(name);
    store.save(&state)?;
    Ok(DownReport { name: name.to_owned(), existed, removed_namespaces: removed })
}

/// One row of `switch list`.
#[derive(Clone, Debug, Serialize)]
pub struct SwitchInfo {
    /// Switch name.
    pub name: String,
    /// DatapathKind.
    pub datapath: DatapathKind,
    /// FDB ageing time in seconds.
    pub ageing_secs: u64,
    /// Unicast redirect mode (tc).
    pub redirect: Redirect,
    /// False while being made or after an interrupted `up`.
    pub ready: bool,
    /// Number of ports.
    pub ports: usize,
    /// The host's address on the segment.
    pub gateway: Option<Cidr>,
    /// The host's IPv6 address on the segment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<Cidr6>,
}

/// Every switch.
pub async fn list() -> Result<Vec<SwitchInfo>> {
    let store = lock().await?;
    let state = store.load()?;
    Ok(state
        .switches
        .iter()
        .map(|(n, s)| SwitchInfo {
            name: n.clone(),
            datapath: s.datapath,
            ageing_secs: s.ageing_secs,
            redirect: s.redirect,
            ready: s.ready,
            ports: state.ports(n).filter(|p| p.namespace().is_some()).count(),
            gateway: state.gateway_cidr(n),
            gateway6: state.gateway_cidr6(n),
        })
        .collect())
}

/// `switch run`: a userspace switch in the foreground. Records the switch, runs it until
/// `stop` (Ctrl-C or SIGTERM), then tears everything down as `switch down` would.
pub async fn run_foreground(
    name: &str,
    ageing_secs: Option<u64>,
    busy_poll_us: Option<u32>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let opts = UpOptions {
        name: name.to_owned(),
        ageing_secs,
        busy_poll_us,
        redirect: None,
        datapath: Some(DatapathKind::Userspace),
        gateway: None,
        uplinks: vec![],
        ..Default::default()
    };
    validate(&opts)?;
    let new = {
        let store = lock().await?;
        let mut state = store.load()?;
        if state.switches.contains_key(name) {
            return Err(Error::Conflict {
                name: name.to_owned(),
                detail: "a switch of that name (switch run makes its own; pick another --switch)".into(),
            });
        }
        begin(&store, &mut state, &opts).await?.expect("not recorded before")
    };
    let served = runner::foreground(name, EngineConfig::of(&new), mark_ready(name), stop).await;
    let store = lock().await?;
    let down = down_locked(&store, name).await;
    served.and(down.map(|_| ()))
}

/// Marks switch `name` ready (its process answers).
async fn mark_ready(name: &str) -> Result<()> {
    let store = lock().await?;
    let mut state = store.load()?;
    intent::finish(&store, &mut state, [intent::Record::Switch(name)])
}
