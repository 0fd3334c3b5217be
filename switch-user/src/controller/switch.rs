//! `switch up`, `switch down`, `switch list` and `switch run`.
use std::time::Duration;

use serde::Serialize;
use switch_common::DEFAULT_AGEING_SECS;

use super::{backend, failpoint, lock, port};
use crate::{
    datapath::ebpf::Pins,
    error::{Error, Result},
    names::{Cidr, gateway_ifnames, validate_name},
    state::{Datapath, GatewayState, PortState, Redirect, State, Store, SwitchState},
    sys::{netlink::Netlink, sysctl},
    datapath::userspace::daemon,
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
    pub datapath: Option<Datapath>,
    /// The host's address on the segment (namespaces get a default route via it).
    pub gateway: Option<Cidr>,
    /// Host interfaces where forwarded traffic arrives (needs a gateway and an eBPF datapath).
    pub uplinks: Vec<String>,
    /// Do not masquerade namespaces' outbound traffic on the uplinks.
    pub no_masquerade: bool,
}

/// What `up` did.
#[derive(Clone, Debug, Serialize)]
pub struct UpReport {
    /// Switch name.
    pub name: String,
    /// False if it was already up.
    pub created: bool,
    /// Datapath.
    pub datapath: Datapath,
    /// FDB ageing time in seconds.
    pub ageing_secs: u64,
    /// Unicast redirect mode (tc datapath).
    pub redirect: Redirect,
    /// Where the datapath is pinned (eBPF datapaths).
    pub pins: Option<String>,
    /// The host's address on the segment.
    pub gateway: Option<Cidr>,
    /// Uplinks carrying port forwards.
    pub uplinks: Vec<String>,
}

impl UpReport {
    fn new(name: &str, s: &SwitchState, created: bool) -> Self {
        Self {
            name: name.to_owned(),
            created,
            datapath: s.datapath,
            ageing_secs: s.ageing_secs,
            redirect: s.redirect,
            pins: s.datapath.is_ebpf().then(|| Pins::new(name).dir().display().to_string()),
            gateway: s.gateway.as_ref().map(|g| g.cidr),
            uplinks: s.uplinks.clone(),
        }
    }
}

fn validate(opts: &UpOptions) -> Result<()> {
    validate_name("switch name", &opts.name)?;
    if opts.ageing_secs == Some(0) {
        return Err(Error::invalid("ageing time", "0", "must be at least 1 second"));
    }
    if let (Some(r), Some(d)) = (opts.redirect, opts.datapath)
        && d != Datapath::Tc
    {
        return Err(Error::invalid(
            "option",
            format!("--redirect {r}"),
            format!("only the tc datapath has it, not {d}"),
        ));
    }
    if !opts.uplinks.is_empty() {
        let joined = opts.uplinks.join(",");
        if opts.gateway.is_none() {
            return Err(Error::invalid("option", format!("--uplink {joined}"), "port forwarding also needs --gateway"));
        }
        if opts.datapath.is_some_and(|d| !d.is_ebpf()) {
            return Err(Error::invalid(
                "option",
                format!("--uplink {joined}"),
                "port forwarding runs in eBPF: it needs the tc or xdp datapath",
            ));
        }
        for u in &opts.uplinks {
            validate_name("uplink interface", u)?;
        }
    }
    Ok(())
}

/// Compares a running switch with what is asked for.
fn conflicts(existing: &SwitchState, opts: &UpOptions) -> Result<()> {
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
    if let Some(r) = opts.redirect.filter(|&r| r != existing.redirect) {
        diffs.push(format!("redirect {} (asked for {r})", existing.redirect));
    }
    if let Some(g) = opts.gateway.filter(|g| existing.gateway.as_ref().map(|e| e.cidr) != Some(*g)) {
        let has = existing.gateway.as_ref().map_or("no gateway".into(), |e| format!("gateway {}", e.cidr));
        diffs.push(format!("{has} (asked for gateway {g})"));
    }
    if !opts.uplinks.is_empty() && opts.uplinks != existing.uplinks {
        diffs.push(format!("uplinks [{}] (asked for [{}])", existing.uplinks.join(","), opts.uplinks.join(",")));
    }
    if diffs.is_empty() { Ok(()) } else { Err(Error::Conflict { name: opts.name.clone(), detail: diffs.join(", ") }) }
}

/// Records switch `opts.name` as being made and returns its settings; `Ok(None)` if it is
/// already up and healthy as asked.
async fn begin(store: &Store, state: &mut State, opts: &UpOptions) -> Result<Option<SwitchState>> {
    if let Some(existing) = state.switches.get(&opts.name).cloned() {
        conflicts(&existing, opts)?;
        if existing.ready && backend::healthy(&opts.name, &existing).await? {
            return Ok(None);
        }
        if existing.ready && existing.datapath != Datapath::Userspace {
            return Err(Error::Command(format!(
                "switch '{}' is recorded as up but its {} datapath is gone; run 'switch down --name {}' and create it again",
                opts.name, existing.datapath, opts.name
            )));
        }
        // An interrupted `up`, or a userspace switch whose process died: make it again.
        tracing::info!(switch = %opts.name, "re-making the switch object");
    }
    if let Some(g) = opts.gateway {
        // Two segments with overlapping subnets on one host would fight over the routes.
        for (other, s) in &state.switches {
            if let Some(o) = s
                .gateway
                .as_ref()
                .filter(|o| other != &opts.name && (o.cidr.contains(g.addr) || g.contains(o.cidr.addr)))
            {
                return Err(Error::invalid(
                    "gateway",
                    g.to_string(),
                    format!("overlaps switch '{other}''s segment {}", o.cidr),
                ));
            }
        }
    }
    let gateway = opts.gateway.map(|cidr| {
        let (host_if, port_if) = gateway_ifnames(&opts.name);
        // A new switch has no ports yet; a re-made one keeps its recorded gateway slot.
        let slot = state.switches.get(&opts.name).and_then(|s| s.gateway.as_ref()).map_or(0, |g| g.slot);
        GatewayState { cidr, host_if, port_if, slot }
    });
    let new = SwitchState {
        ageing_secs: opts.ageing_secs.unwrap_or(DEFAULT_AGEING_SECS),
        redirect: opts.redirect.unwrap_or(Redirect::Peer),
        datapath: opts.datapath.unwrap_or_default(),
        gateway,
        uplinks: opts.uplinks.clone(),
        // Effective once the switch has uplinks (given here, or adopted by `forward add`).
        masquerade: !opts.no_masquerade,
        ready: false,
    };
    state.switches.insert(opts.name.clone(), new.clone());
    store.save(state)?;
    Ok(Some(new))
}

/// Creates switch `opts.name`, or checks that it is up with compatible settings. A
/// userspace switch whose process died is restarted with its ports.
pub async fn up(opts: UpOptions) -> Result<UpReport> {
    validate(&opts)?;
    let store = lock().await?;
    let mut state = store.load()?;
    let Some(new) = begin(&store, &mut state, &opts).await? else {
        return Ok(UpReport::new(&opts.name, &state.switches[&opts.name], false));
    };
    let made = async {
        backend::create(&opts.name, &new).await?;
        if let Some(g) = &new.gateway {
            make_gateway(&opts.name, &new, g).await?;
        }
        super::forward::attach_uplinks(&opts.name, &new, &state).await?;
        failpoint("up:made")?;
        // Ports a restarted userspace process must take over again.
        for (_, p) in state.ports(&opts.name).filter(|(_, p)| p.host_ifindex != 0) {
            backend::attach_port(&opts.name, &new, p, p.host_ifindex).await?;
        }
        Ok::<_, Error>(())
    }
    .await;
    if let Err(e) = made {
        let _ = backend::destroy(&opts.name).await;
        if state.ports(&opts.name).next().is_none() {
            state.switches.remove(&opts.name);
        }
        store.save(&state)?;
        return Err(e);
    }
    let s = state.switches.get_mut(&opts.name).expect("recorded above");
    s.ready = true;
    let out = UpReport::new(&opts.name, s, true);
    store.save(&state)?;
    Ok(out)
}

/// The gateway's switch end, as a port record (its "namespace" is the host).
pub(crate) fn gateway_port(name: &str, g: &GatewayState, ifindex: u32) -> PortState {
    PortState {
        switch: name.to_owned(),
        host_if: g.port_if.clone(),
        host_ifindex: ifindex,
        ns_if: g.host_if.clone(),
        slot: g.slot,
        ip: g.cidr,
        mac: None,
        netns_cookie: 0,
    }
}

/// Makes the gateway veth pair: the host end gets the address, the other end becomes a port.
/// Leftovers of an interrupted `up` are replaced.
async fn make_gateway(name: &str, sw: &SwitchState, g: &GatewayState) -> Result<()> {
    let nl = Netlink::new()?;
    nl.delete(&g.host_if).await?;
    let (host_idx, port_idx) = nl.add_veth_pair(&g.host_if, &g.port_if).await?;
    let (a, b, datapath) = (g.host_if.clone(), g.port_if.clone(), sw.datapath);
    super::blocking(move || {
        sysctl::disable_ipv6(&a)?;
        sysctl::disable_ipv6(&b)?;
        // The host end is what a namespace's eth0 is for the other ports.
        backend::prepare_ns_side(datapath, &a)
    })
    .await?;
    backend::attach_port(name, sw, &gateway_port(name, g, port_idx), port_idx).await?;
    nl.add_address(host_idx, g.cidr).await?;
    nl.set_up(host_idx).await?;
    nl.set_up(port_idx).await
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
    let existed = state.switches.contains_key(name) || backend::leftovers(name).await?;
    let ports: Vec<String> = state.ports(name).map(|(n, _)| n.clone()).collect();
    let mut removed = vec![];
    for ns in ports {
        let entry = state.namespaces.get(&ns).cloned().expect("listed above");
        port::teardown(&state, &ns, &entry).await?;
        state.namespaces.remove(&ns);
        store.save(&state)?;
        removed.push(ns);
    }
    if let Some((sw, g)) = state.switches.get(name).and_then(|sw| Some((sw, sw.gateway.as_ref()?))) {
        backend::detach_port(name, Some(sw.datapath), &gateway_port(name, g, 0)).await?;
    }
    backend::destroy(name).await?;
    state.forwards.retain(|f| f.switch != name);
    state.switches.remove(name);
    store.save(&state)?;
    Ok(DownReport { name: name.to_owned(), existed, removed_namespaces: removed })
}

/// One row of `switch list`.
#[derive(Clone, Debug, Serialize)]
pub struct SwitchInfo {
    /// Switch name.
    pub name: String,
    /// Datapath.
    pub datapath: Datapath,
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
            ports: state.ports(n).count(),
            gateway: s.gateway.as_ref().map(|g| g.cidr),
        })
        .collect())
}

/// `switch run --daemon`: the background process `up --datapath userspace` starts. Serves
/// until a shutdown request or SIGTERM; the switch record and ports belong to the CLI.
pub async fn run_daemon(name: &str, ageing_secs: u64, stop: impl std::future::Future<Output = ()>) -> Result<()> {
    validate_name("switch name", name)?;
    daemon::serve(name, Duration::from_secs(ageing_secs), vec![], stop).await
}

/// `switch run`: a userspace switch in the foreground. Makes the switch, serves until `stop`
/// (Ctrl-C or SIGTERM), then tears everything down as `switch down` would.
pub async fn run_foreground(
    name: &str,
    ageing_secs: Option<u64>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let opts = UpOptions {
        name: name.to_owned(),
        ageing_secs,
        redirect: None,
        datapath: Some(Datapath::Userspace),
        gateway: None,
        uplinks: vec![],
        no_masquerade: false,
    };
    validate(&opts)?;
    let new = {
        let store = lock().await?;
        let mut state = store.load()?;
        if state.switches.contains_key(name) {
            return Err(Error::Conflict {
                name: name.to_owned(),
                detail: "a switch of that name (switch run makes its own; pick another --name)".into(),
            });
        }
        begin(&store, &mut state, &opts).await?.expect("not recorded before")
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = daemon::serve(name, Duration::from_secs(new.ageing_secs), vec![], async move {
        let _ = stop_rx.await;
    });
    tokio::pin!(server);
    // Mark the switch ready once its control socket answers, then wait for the stop signal.
    let marked = async {
        for _ in 0..200 {
            if daemon::alive(name).await {
                let store = lock().await?;
                let mut state = store.load()?;
                if let Some(s) = state.switches.get_mut(name) {
                    s.ready = true;
                }
                store.save(&state)?;
                eprintln!("userspace switch '{name}' is up; Ctrl-C or SIGTERM stops it and removes it");
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err(Error::Command(format!("switch '{name}' did not answer on its control socket")))
    };
    let served: Result<()> = tokio::select! {
        r = &mut server => r,
        r = async { marked.await?; stop.await; Ok::<_, Error>(()) } => match r {
            Ok(()) => {
                let _ = stop_tx.send(());
                server.await
            }
            Err(e) => Err(e),
        },
    };
    let store = lock().await?;
    let down = down_locked(&store, name).await;
    served.and(down.map(|_| ()))
}
