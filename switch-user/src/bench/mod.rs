//! `switch bench`: every contender (bare veth pair, Linux bridge, each datapath of this
//! project) measured in one run, interleaved (A B C A B C ...) so that a noisy neighbour on
//! the shared machine hits them all alike, and reported as medians, min-max and the ratios to
//! each comparison's baselines (the bridge and the bare veth pair; for port forwarding plain
//! routing and iptables DNAT) computed round by round.
pub mod cni;
pub mod forward;
pub mod overlay;
pub mod ovs;
pub mod podman;
pub mod report;
pub mod tools;
pub mod topology;

use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use report::{Machine, MetricReport, Report};
use topology::{ALL, BASELINES, Contender, Kind, PEERS, Topology};

use crate::{
    error::{Error, Result},
    sys::nat_tables,
};

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Rounds of every contender.
    pub rounds: usize,
    /// Seconds per tool run.
    pub secs: u64,
    /// Namespace counts for the bring-up comparison.
    pub bringup: Vec<usize>,
    /// Contenders by name, of either comparison (all if empty). A comparison none of whose
    /// contenders is named is left out, and so is the bring-up comparison (it has none).
    pub only: Vec<String>,
    /// Containers started one after another per network and round (podman comparison).
    pub pod_starts: usize,
    /// Containers started at once per network and round.
    pub pod_parallel: usize,
}

impl Options {
    /// Smoke run: one round of one second each, bring-up of 10, 5 podman starts one after
    /// another and 10 at once (well under 3 minutes).
    pub fn quick() -> Self {
        Self { rounds: 1, secs: 1, bringup: vec![10], only: vec![], pod_starts: 5, pod_parallel: 10 }
    }

    /// Full run: 3 rounds of 5 s, bring-up of 10 and 100, 50 podman starts one after another
    /// and 50 at once (well under 20 minutes).
    pub fn full() -> Self {
        Self { rounds: 3, secs: 5, bringup: vec![10, 100], only: vec![], pod_starts: 50, pod_parallel: 50 }
    }

    fn named(&self, name: &str) -> bool {
        self.only.iter().any(|o| o == name)
    }

    /// The per-packet contenders to measure (none when `only` names none of them), after
    /// checking that `only` names known contenders.
    fn contenders(&self) -> Result<Vec<Contender>> {
        let forwards = forward::contenders();
        let known = || {
            ALL.iter()
                .map(|c| c.name)
                .chain(forwards.iter().map(|f| f.name))
                .chain(CNI_CONTENDERS.iter().copied())
                .chain(podman::CONTENDERS.iter().copied())
                .chain(overlay::CONTENDERS.iter().copied())
                .chain([podman::ALIAS, BRINGUP])
        };
        if let Some(name) = self.only.iter().find(|o| !known().any(|k| k == *o)) {
            let known: Vec<&str> = known().collect();
            return Err(Error::invalid("contender", name.clone(), format!("known: {}", known.join(", "))));
        }
        if !self.only.is_empty() && !ALL.iter().any(|c| self.named(c.name)) {
            return Ok(vec![]);
        }
        // The baselines are always measured: every ratio is against them.
        Ok(ALL
            .iter()
            .copied()
            .filter(|c| self.only.is_empty() || BASELINES.contains(&c.name) || self.named(c.name))
            .collect())
    }

    /// Whether the port-forwarding comparison runs (all its contenders: two of the three are
    /// its baselines).
    fn forwards(&self) -> bool {
        self.only.is_empty() || forward::contenders().iter().any(|c| self.named(c.name))
    }

    /// Whether the CNI comparison runs.
    fn cni(&self) -> bool {
        self.only.is_empty() || CNI_CONTENDERS.iter().any(|c| self.named(c))
    }

    /// Whether the cross-host (VXLAN) comparison runs.
    fn overlay(&self) -> bool {
        self.only.is_empty() || overlay::CONTENDERS.iter().any(|c| self.named(c))
    }

    /// Whether the podman comparison runs (`podman` names both of its contenders).
    fn podman(&self) -> bool {
        self.only.is_empty() || podman::CONTENDERS.iter().chain(&[podman::ALIAS]).any(|c| self.named(c))
    }

    /// The bring-up and removal comparisons to run: in a run of chosen contenders, only if
    /// `bringup` is one of them.
    fn bringup(&self) -> &[usize] {
        if self.only.is_empty() || self.named(BRINGUP) { &self.bringup } else { &[] }
    }
}

/// The machine's one benchmark run: held for a whole run (its interfaces, namespaces and
/// switches have fixed names, so two runs at once would tear down each other's contenders).
pub struct Exclusive {
    _lock: std::fs::File,
}

/// Takes the benchmark lock, or says that another run holds it.
pub fn exclusive() -> Result<Exclusive> {
    use std::os::fd::AsRawFd as _;
    let dir = std::path::Path::new(crate::sys::host::STATE_DIR);
    crate::sys::files::private_dir(dir)?;
    let file = crate::sys::files::open_private(&dir.join("bench.lock"), false)?;
    // SAFETY: flock on a descriptor we own; released when the file closes.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(Error::Command(
            "another 'switch bench' runs on this machine (its contenders have fixed names); wait for it to finish"
                .into(),
        ));
    }
    Ok(Exclusive { _lock: file })
}

/// Removes whatever an interrupted run left: every contender's topology, the forward and CNI
/// contenders and the bring-up namespaces. Nothing there is fine.
pub async fn cleanup() {
    for (i, c) in ALL.iter().enumerate() {
        Topology::new(i, *c).remove().await;
    }
    for c in forward::contenders() {
        c.remove().await;
    }
    for p in cni::contenders().into_iter().flatten() {
        cni::remove(&p).await;
    }
    let _ = crate::controller::switch::down(BRINGUP_SWITCH).await;
    for i in 0..BRINGUP_MAX {
        let _ = run_quiet("ip", &["netns", "del", &format!("benchi{i}")]).await;
    }
    let _ = run_quiet("ip", &["link", "del", "benchbr"]).await;
    podman::remove().await;
    for o in overlay::contenders() {
        o.remove().await;
    }
}

/// Across hosts: a switch with a VXLAN tunnel port on each of two simulated hosts against a
/// Linux bridge with a VXLAN device and static FDB entries (flannel-like), TCP throughput and
/// 64-byte UDP frames from a namespace on one host to a namespace on the other, interleaved
/// per round.
async fn overlays(opts: &Options, bar: &ProgressBar) -> Result<Vec<MetricReport>> {
    let contenders = overlay::contenders();
    let measured = async {
        let mut servers = vec![];
        for c in &contenders {
            bar.set_message(format!("building {}", c.name));
            c.build().await?;
            servers.push(tools::start_servers(&c.server, &c.server_ip)?);
            bar.inc(1);
        }
        let mut tcp = vec![Series::default(); contenders.len()];
        let mut udp = vec![Series::default(); contenders.len()];
        for round in 1..=opts.rounds {
            for (i, c) in contenders.iter().enumerate() {
                if tcp[i].error.is_none() {
                    bar.set_message(format!("round {round}/{}: TCP across hosts via {}", opts.rounds, c.name));
                    let bps = tools::tcp_stream(&c.client, &c.server_ip, 5201, opts.secs).await;
                    tcp[i].record(bps.map(|(bps, _)| bps / 1e9), &format!("TCP across hosts via {}", c.name), bar);
                }
                bar.inc(1);
                if udp[i].error.is_none() {
                    bar.set_message(format!("round {round}/{}: 64-byte UDP across hosts via {}", opts.rounds, c.name));
                    let pps = tools::udp_small_frames(&c.client, &c.server, opts.secs).await;
                    udp[i].record(pps.map(|(pps, _)| pps / 1e3), &format!("64-byte UDP via {}", c.name), bar);
                }
                bar.inc(1);
            }
        }
        drop(servers);
        Ok::<_, Error>((tcp, udp))
    }
    .await;
    for c in &contenders {
        c.remove().await;
    }
    let (tcp, udp) = measured?;
    let rows = |s: Vec<Series>| contenders.iter().map(|c| c.name.to_owned()).zip(s).collect::<Vec<_>>();
    Ok(vec![
        MetricReport::new(
            "vxlan_tcp",
            "TCP stream between namespaces of two hosts over VXLAN (iperf3, 1 stream)",
            "Gbit/s",
            true,
            "",
            &[overlay::BASELINE],
            rows(tcp),
        ),
        MetricReport::new(
            "vxlan_udp64",
            "64-byte UDP frames received across two hosts over VXLAN (trafgen on every CPU)",
            "kframes/s",
            true,
            "",
            &[overlay::BASELINE],
            rows(udp),
        ),
    ])
}

/// Samples of one contender for one metric, with the CPU it cost.
#[derive(Default, Clone)]
pub struct Series {
    pub values: Vec<f64>,
    pub cpu: Vec<f64>,
    /// Set when the tool failed on this contender: the metric is reported as not measured
    /// for it (with this reason) and the rest of the run goes on.
    pub error: Option<String>,
}

impl Series {
    /// Records one run of a tool: its sample, or why it failed. One failure leaves the metric
    /// not measured for this contender (earlier samples dropped, later runs skipped) and the
    /// rest of the run goes on, as in `measure_all`.
    fn record(&mut self, result: Result<f64>, what: &str, bar: &ProgressBar) {
        match result {
            Ok(v) => self.values.push(v),
            Err(e) => {
                bar.println(format!("{what}: not measured: {e}"));
                *self = Series { error: Some(e.to_string()), ..Series::default() };
            }
        }
    }
}

/// The per-packet metrics.
const METRICS: [(&str, &str, &str, bool, &str); 6] = [
    ("tcp", "TCP stream throughput (iperf3, 1 stream)", "Gbit/s", true, "CPU s per GB"),
    ("udp64", "64-byte UDP frames received (trafgen on every CPU)", "kframes/s", true, "CPU ns per frame"),
    ("lat_p50", "Request/response latency p50 (sockperf UDP ping-pong, sleeping sockets, RTT/2)", "us", false, ""),
    ("lat_p99", "Request/response latency p99 (sockperf UDP ping-pong, sleeping sockets, RTT/2)", "us", false, ""),
    ("lat_poll_p50", "Request/response latency p50 (sockperf UDP ping-pong, busy polling, RTT/2)", "us", false, ""),
    ("lat_poll_p99", "Request/response latency p99 (sockperf UDP ping-pong, busy polling, RTT/2)", "us", false, ""),
];

/// The measurements of one round, in order: (first metric, how many metrics it yields, name).
const MEASUREMENTS: [(usize, usize, &str); 4] =
    [(0, 1, "TCP stream"), (1, 1, "64-byte UDP"), (2, 2, "latency"), (4, 2, "busy-polling latency")];

/// Runs the benchmark. `bar` shows progress (hidden for `--json`).
pub async fn run(opts: &Options, bar: &ProgressBar) -> Result<Report> {
    // The classic recipe's forward baseline and the podman contenders add nat rules, and
    // iptables leaves the table it made for them, tracking every connection of the host from
    // then on (sys/nat_tables.rs): given back at the end, whatever the run's outcome.
    let nat_before = tokio::task::spawn_blocking(nat_tables::existing).await.unwrap_or_default();
    let report = run_all(opts, bar).await;
    let given_back = tokio::task::spawn_blocking(move || nat_tables::remove_unused(&nat_before)).await;
    if let Err(e) = given_back.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())) {
        bar.println(format!("the nat table the run made stays: {e}"));
    }
    report
}

async fn run_all(opts: &Options, bar: &ProgressBar) -> Result<Report> {
    let contenders = opts.contenders()?;
    let topologies: Vec<Topology> = contenders.iter().enumerate().map(|(i, c)| Topology::new(i, *c)).collect();
    let forwarded = if opts.forwards() { forward::contenders().len() } else { 0 };
    let plugins = if opts.cni() { CNI_CONTENDERS.len() } else { 0 };
    let steps = (opts.rounds * topologies.len() * MEASUREMENTS.len()
        + opts.rounds * opts.bringup().len() * 2
        + topologies.len()
        + opts.rounds * forwarded * 2
        + forwarded
        + opts.rounds * plugins
        + plugins
        + if opts.podman() { opts.rounds * podman::CONTENDERS.len() * 3 + 2 } else { 0 }
        + if opts.overlay() { (opts.rounds * 2 + 1) * overlay::CONTENDERS.len() } else { 0 }) as u64;
    bar.set_length(steps);

    let measured = measure_all(opts, &topologies, bar).await;
    bar.set_message("tearing down");
    for t in &topologies {
        t.remove().await;
    }
    let series = measured?;
    let forwards = if opts.forwards() { forwards(opts, bar).await? } else { vec![] };
    let bringup = bringup(opts, bar).await?;
    let cni = if opts.cni() { cni(opts, bar).await? } else { vec![] };
    let containers = if opts.podman() { containers(opts, bar).await } else { vec![] };
    let overlays = if opts.overlay() { overlays(opts, bar).await? } else { vec![] };
    bar.finish_and_clear();

    let mut metrics: Vec<MetricReport> = vec![];
    if !topologies.is_empty() {
        // Ratios to the baselines, and to the peers this run measures.
        let peers = PEERS.iter().filter(|p| topologies.iter().any(|t| t.contender.name == **p));
        let baselines: Vec<&str> = BASELINES.iter().chain(peers).copied().collect();
        metrics.extend(METRICS.iter().enumerate().map(|(m, (id, title, unit, higher, cpu_unit))| {
            let rows = topologies
                .iter()
                .enumerate()
                .map(|(c, t)| (t.contender.name.to_owned(), series[m][c].clone()))
                .collect();
            MetricReport::new(id, title, unit, *higher, cpu_unit, &baselines, rows)
        }));
    }
    metrics.extend(forwards);
    metrics.extend(bringup);
    metrics.extend(cni);
    metrics.extend(containers);
    metrics.extend(overlays);
    Ok(Report::new(Machine::read(), opts, metrics))
}

async fn measure_all(opts: &Options, topologies: &[Topology], bar: &ProgressBar) -> Result<Vec<Vec<Series>>> {
    let mut servers = vec![];
    // series[metric][contender]
    let mut series = vec![vec![Series::default(); topologies.len()]; METRICS.len()];
    for (c, t) in topologies.iter().enumerate() {
        bar.set_message(format!("building {}", t.contender.name));
        match t.build().await {
            Ok(()) => servers.push(tools::start_servers(&t.server, &t.server_ip)?),
            // Open vSwitch is another project's and optional: where it is not installed or
            // does not come up, it is not measured (one line saying why) and the run goes on.
            Err(e) if t.contender.kind == Kind::Ovs => {
                bar.println(format!("{}: not measured: {e}", t.contender.name));
                for s in &mut series {
                    s[c] = Series { error: Some(e.to_string()), ..Series::default() };
                }
            }
            Err(e) => return Err(e),
        }
        bar.inc(1);
    }
    for round in 1..=opts.rounds {
        for (metric, sub, name) in MEASUREMENTS {
            for (c, t) in topologies.iter().enumerate() {
                if series[metric][c].error.is_some() {
                    bar.inc(1);
                    continue;
                }
                bar.set_message(format!("round {round}/{}: {name} via {}", opts.rounds, t.contender.name));
                let (busy0, _) = tools::cpu_ticks();
                let result = match metric {
                    0 => tools::tcp_stream(&t.client, &t.server_ip, 5201, opts.secs)
                        .await
                        .map(|(bps, bytes)| (vec![bps / 1e9], bytes / 1e9)),
                    1 => tools::udp_small_frames(&t.client, &t.server, opts.secs)
                        .await
                        .map(|(pps, frames)| (vec![pps / 1e3], frames / 1e9)),
                    2 => tools::latency(&t.client, &t.server_ip, opts.secs, false)
                        .await
                        .map(|(p50, p99)| (vec![p50, p99], 0.0)),
                    _ => tools::latency_polling(&t.client, &t.server, &t.server_ip, opts.secs)
                        .await
                        .map(|(p50, p99)| (vec![p50, p99], 0.0)),
                };
                let (values, work) = match result {
                    Ok(v) => v,
                    Err(e) => {
                        // One tool failing on one contender does not throw away the run: the
                        // metric is reported as not measured for it, with the reason.
                        for s in &mut series[metric..metric + sub] {
                            s[c] = Series { error: Some(e.to_string()), ..Series::default() };
                        }
                        bar.println(format!("{name} via {}: not measured: {e}", t.contender.name));
                        bar.inc(1);
                        continue;
                    }
                };
                let cpu_secs = (tools::cpu_ticks().0 - busy0) as f64 / tools::ticks_per_sec();
                for (k, v) in values.into_iter().enumerate() {
                    let s = &mut series[metric + k][c];
                    s.values.push(v);
                    // CPU per GB (TCP) or per frame in ns (UDP: work is in 1e9 frames).
                    if work > 0.0 {
                        s.cpu.push(cpu_secs / work);
                    }
                }
                bar.inc(1);
            }
        }
    }
    drop(servers);
    Ok(series)
}

/// Port forwarding: TCP throughput and new connections per second from outside through the
/// uplink, eBPF forward against bridge + iptables DNAT and against plain routing,
/// interleaved per round.
async fn forwards(opts: &Options, bar: &ProgressBar) -> Result<Vec<MetricReport>> {
    use forward::CONN_PORT;
    let contenders = forward::contenders();
    let measured = async {
        let mut servers = vec![];
        for c in &contenders {
            bar.set_message(format!("building {}", c.name));
            c.build().await?;
            servers.push((
                tools::start_servers(&c.server, &c.server_ip)?,
                forward::accept_server(&c.server, format!("{}:{CONN_PORT}", c.server_ip).parse().expect("address")),
            ));
            bar.inc(1);
        }
        let mut tcp = vec![Series::default(); contenders.len()];
        let mut conn = vec![Series::default(); contenders.len()];
        for round in 1..=opts.rounds {
            for (i, c) in contenders.iter().enumerate() {
                if tcp[i].error.is_none() {
                    bar.set_message(format!("round {round}/{}: TCP through {}", opts.rounds, c.name));
                    let iperf = c.iperf_target();
                    let bps = tools::tcp_stream(&c.client, &iperf.ip().to_string(), iperf.port(), opts.secs).await;
                    tcp[i].record(bps.map(|(bps, _)| bps / 1e9), &format!("TCP through {}", c.name), bar);
                }
                bar.inc(1);
                if conn[i].error.is_none() {
                    bar.set_message(format!("round {round}/{}: connections through {}", opts.rounds, c.name));
                    let rate = forward::connection_rate(&c.client, c.conn_target(), opts.secs).await;
                    conn[i].record(rate.map(|r| r / 1e3), &format!("connections through {}", c.name), bar);
                }
                bar.inc(1);
            }
        }
        drop(servers);
        Ok::<_, crate::Error>((tcp, conn))
    }
    .await;
    for c in &contenders {
        c.remove().await;
    }
    let (tcp, conn) = measured?;
    let rows = |s: Vec<Series>| contenders.iter().map(|c| c.name.to_owned()).zip(s).collect::<Vec<_>>();
    Ok(vec![
        MetricReport::new(
            "fwd_tcp",
            "TCP stream through a port forward (iperf3, 1 stream; routed: no forward, to the server's address)",
            "Gbit/s",
            true,
            "",
            &forward::BASELINES,
            rows(tcp),
        ),
        MetricReport::new(
            "fwd_conn",
            "New TCP connections through a port forward (32 in flight, a client thread per CPU)",
            "kconn/s",
            true,
            "",
            &forward::BASELINES,
            rows(conn),
        ),
    ])
}

/// The contenders of the CNI comparison (the second is the baseline).
const CNI_CONTENDERS: [&str; 2] = ["switch-cni", "bridge-cni"];

/// CNI plugins: ADD and DEL one after another (median of 10 per round) and 10 ADDs at once
/// (wall time), switch-cni against the bridge plugin, interleaved per round. A plugin that is
/// not installed (the bridge plugin comes with containernetworking-plugins) is not measured.
async fn cni(opts: &Options, bar: &ProgressBar) -> Result<Vec<MetricReport>> {
    let plugins = cni::contenders()?;
    let mut add = vec![Series::default(), Series::default()];
    let mut del = vec![Series::default(), Series::default()];
    let mut parallel = vec![Series::default(), Series::default()];
    for (i, p) in plugins.iter().enumerate() {
        bar.set_message(format!("CNI: bringing up {}'s network", p.name));
        cni::remove(p).await;
        if let Err(e) = cni::warm_up(p).await {
            for s in [&mut add[i], &mut del[i], &mut parallel[i]] {
                s.record(Err(Error::Command(e.to_string())), p.name, bar);
            }
        }
        bar.inc(1);
    }
    for round in 1..=opts.rounds {
        for (i, p) in plugins.iter().enumerate() {
            bar.set_message(format!("round {round}/{}: CNI ADD/DEL of {}", opts.rounds, p.name));
            if add[i].error.is_none() {
                match cni::round(p).await {
                    Ok((a, d, w)) => {
                        add[i].values.push(a);
                        del[i].values.push(d);
                        parallel[i].values.push(w);
                    }
                    Err(e) => {
                        for s in [&mut add[i], &mut del[i], &mut parallel[i]] {
                            s.record(Err(Error::Command(e.to_string())), p.name, bar);
                        }
                    }
                }
            }
            bar.inc(1);
        }
    }
    for p in &plugins {
        cni::remove(p).await;
    }
    let rows = |s: Vec<Series>| plugins.iter().map(|p| p.name.to_owned()).zip(s).collect::<Vec<_>>();
    let baseline = [CNI_CONTENDERS[1]];
    Ok(vec![
        MetricReport::new(
            "cni_add",
            &format!("CNI ADD, one at a time (median of {} per round; host-local IPAM)", cni::ADDS),
            "ms",
            false,
            "",
            &baseline,
            rows(add),
        ),
        MetricReport::new(
            "cni_del",
            "CNI DEL, one at a time (median per round)",
            "ms",
            false,
            "",
            &baseline,
            rows(del),
        ),
        MetricReport::new(
            "cni_add_parallel",
            &format!("{} CNI ADDs at once (wall time)", cni::ADDS),
            "ms",
            false,
            "",
            &baseline,
            rows(parallel),
        ),
    ])
}

/// The podman comparison's metrics: (id, unit, larger is better).
const POD_METRICS: [(&str, &str, bool); 6] = [
    ("pod_start_p50", "ms", false),
    ("pod_start_p99", "ms", false),
    ("pod_parallel", "s", false),
    ("pod_parallel_failed", "starts", false),
    ("pod_port_conn", "kconn/s", true),
    ("pod_port_tcp", "Gbit/s", true),
];

/// Containers under podman on a switch-cni network against podman's own bridge + portmap
/// network, interleaved per round: start to the first answered ping (starts one after
/// another), starts at once (wall time and failures), and a published port reached from
/// outside through an uplink. What fails is reported as not measured; the environment is
/// removed and the host given back at the end, also after a failure.
async fn containers(opts: &Options, bar: &ProgressBar) -> Vec<MetricReport> {
    let nets = podman::nets();
    bar.set_message("podman: setting up its environment");
    let measured = async {
        // series[metric][network], in POD_METRICS order.
        let mut s = vec![vec![Series::default(); nets.len()]; POD_METRICS.len()];
        let env = podman::Env::setup().await?;
        bar.inc(1);
        let mut served = vec![];
        for net in &nets {
            bar.set_message(format!("podman: bringing up {}", net.name));
            env.warm_up(net).await?;
            served.push(env.serve(net).await?);
        }
        for round in 1..=opts.rounds {
            for (i, net) in nets.iter().enumerate() {
                let step =
                    |what: String| bar.set_message(format!("round {round}/{}: {what} on {}", opts.rounds, net.name));
                step(format!("{} podman starts", opts.pod_starts));
                if s[0][i].error.is_none() {
                    let r = env.starts(net, opts.pod_starts).await;
                    if let Ok(ms) = &r {
                        // The p99 alone does not say whether one start or many were slow.
                        let slow: Vec<&f64> = ms.iter().filter(|ms| **ms > 1000.0).collect();
                        if let Some(worst) = slow.iter().copied().copied().reduce(f64::max) {
                            bar.println(format!(
                                "{}: {} of {} starts took over 1 s (the slowest {:.2} s)",
                                net.name,
                                slow.len(),
                                ms.len(),
                                worst / 1e3
                            ));
                        }
                    }
                    let p =
                        |q| r.as_ref().map(|ms| podman::percentile(ms, q)).map_err(|e| Error::Command(e.to_string()));
                    s[0][i].record(p(50.0), net.name, bar);
                    s[1][i].record(p(99.0), net.name, bar);
                }
                bar.inc(1);
                step(format!("{} podman starts at once", opts.pod_parallel));
                if s[2][i].error.is_none() {
                    match env.parallel(net, opts.pod_parallel).await {
                        Ok((wall, failed, first)) => {
                            s[2][i].values.push(wall);
                            s[3][i].values.push(failed as f64);
                            if let Some(e) = first {
                                bar.println(format!(
                                    "{}: {failed} of {} starts at once failed: {e}",
                                    net.name, opts.pod_parallel
                                ));
                            }
                        }
                        Err(e) => {
                            let e = e.to_string();
                            s[2][i].record(Err(Error::Command(e.clone())), net.name, bar);
                            s[3][i].record(Err(Error::Command(e)), net.name, bar);
                        }
                    }
                }
                bar.inc(1);
                step("connections and TCP to a published port".into());
                let (client, iperf, conn) = podman::Env::client(net);
                if s[4][i].error.is_none() {
                    let rate = forward::connection_rate(&client, conn, opts.secs).await;
                    s[4][i].record(rate.map(|r| r / 1e3), &format!("connections to {}", net.name), bar);
                }
                if s[5][i].error.is_none() {
                    let bps = tools::tcp_stream(&client, &iperf.ip().to_string(), iperf.port(), opts.secs).await;
                    s[5][i].record(bps.map(|(bps, _)| bps / 1e9), &format!("TCP to {}", net.name), bar);
                }
                bar.inc(1);
            }
        }
        drop(served);
        Ok::<_, Error>(s)
    }
    .await;
    bar.set_message("podman: removing its containers and networks");
    podman::remove().await;
    bar.inc(1);
    let series = measured.unwrap_or_else(|e| {
        bar.println(format!("podman: not measured: {e}"));
        let failed = Series { error: Some(e.to_string()), ..Series::default() };
        vec![vec![failed; nets.len()]; POD_METRICS.len()]
    });
    let titles = [
        format!(
            "podman run -d until the container answers a ping from the host, p50 of {} starts one after another",
            opts.pod_starts
        ),
        format!("The same, p99 of {} starts", opts.pod_starts),
        format!("{} podman run -d at once (wall time)", opts.pod_parallel),
        format!("Failed starts of {} at once", opts.pod_parallel),
        "New TCP connections to a published port (-p) from outside through an uplink (32 in flight)".to_owned(),
        "TCP stream to a published port (-p) from outside through an uplink (iperf3, 1 stream)".to_owned(),
    ];
    POD_METRICS
        .iter()
        .zip(titles)
        .zip(series)
        .map(|(((id, unit, higher), title), s)| {
            let rows = nets.iter().map(|n| n.name.to_owned()).zip(s).collect();
            MetricReport::new(id, &title, unit, *higher, "", &[podman::BASELINE], rows)
        })
        .collect()
}

/// The switch the bring-up comparison builds.
const BRINGUP_SWITCH: &str = "benchup";
/// The baseline of the bring-up comparison.
/// The name `--only` knows the bring-up and removal comparisons by.
const BRINGUP: &str = "bringup";
pub(crate) const BRINGUP_CLASSIC: &str = "ip commands + bridge";
/// Our contenders in the bring-up and removal comparisons.
pub(crate) const BRINGUP_OURS: &str = "switch ns add (tc)";
pub(crate) const REMOVAL_OURS: &str = "switch down (tc)";
/// The most namespaces a bring-up comparison makes.
const BRINGUP_MAX: usize = 100;

/// Time to bring up `n` namespaces on a switch (one `switch ns add` process each, as a user
/// would) and to remove them again (`switch down`), against the same with `ip` commands and a
/// Linux bridge, interleaved per round.
async fn bringup(opts: &Options, bar: &ProgressBar) -> Result<Vec<MetricReport>> {
    let mut out = vec![];
    for &n in opts.bringup() {
        let (mut ours, mut classic) = ([Series::default(), Series::default()], [Series::default(), Series::default()]);
        for round in 1..=opts.rounds {
            bar.set_message(format!("round {round}/{}: {n} namespaces with switch", opts.rounds));
            let (up, down) = bringup_switch(n).await?;
            ours[0].values.push(up.as_secs_f64());
            ours[1].values.push(down.as_secs_f64());
            bar.inc(1);
            bar.set_message(format!("round {round}/{}: {n} namespaces with ip + bridge", opts.rounds));
            let (up, down) = bringup_ip(n).await?;
            classic[0].values.push(up.as_secs_f64());
            classic[1].values.push(down.as_secs_f64());
            bar.inc(1);
        }
        let [ours_up, ours_down] = ours;
        let [classic_up, classic_down] = classic;
        out.push(MetricReport::new(
            if n >= 100 { "bringup_100" } else { "bringup_10" },
            &format!("Bring-up of {n} namespaces on a switch"),
            "s",
            false,
            "",
            &[BRINGUP_CLASSIC],
            vec![(BRINGUP_OURS.into(), ours_up), (BRINGUP_CLASSIC.into(), classic_up)],
        ));
        out.push(MetricReport::new(
            if n >= 100 { "removal_100" } else { "removal_10" },
            &format!("Removal of {n} namespaces from a switch (until their interfaces are gone)"),
            "s",
            false,
            "",
            &[BRINGUP_CLASSIC],
            vec![(REMOVAL_OURS.into(), ours_down), (BRINGUP_CLASSIC.into(), classic_down)],
        ));
    }
    Ok(out)
}

/// Runs `program ARGS`, failing with its stderr.
pub(super) async fn run_quiet(program: &str, args: &[&str]) -> Result<()> {
    output(program, args).await.map(drop)
}

/// Runs `program ARGS` and returns its stdout, failing with its stderr.
pub(super) async fn output(program: &str, args: &[&str]) -> Result<String> {
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    command_output(cmd).await
}

/// Runs `cmd` (with whatever environment it was given) and returns its stdout, failing with
/// its stderr.
pub(super) async fn command_output(cmd: std::process::Command) -> Result<String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    let out = tokio::process::Command::from(cmd)
        .output()
        .await
        .map_err(|e| Error::Command(format!("running {program}: {e}")))?;
    if !out.status.success() {
        return Err(Error::Command(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Brings up `n` namespaces on a fresh switch, then takes the switch down: how long each took.
async fn bringup_switch(n: usize) -> Result<(Duration, Duration)> {
    let exe = std::env::current_exe().map_err(|e| Error::Command(format!("finding the switch binary: {e}")))?;
    let exe = exe.to_string_lossy().into_owned();
    let _ = crate::controller::switch::down(BRINGUP_SWITCH).await;
    run_quiet(&exe, &["up", "--switch", BRINGUP_SWITCH]).await?;
    let start = Instant::now();
    for i in 0..n {
        let (ns, ip) = (format!("benchu{i}"), format!("10.201.{}.{}/16", i / 250, i % 250 + 1));
        run_quiet(&exe, &["ns", "add", &ns, "--ip", &ip, "--switch", BRINGUP_SWITCH]).await?;
    }
    let up = start.elapsed();
    let start = Instant::now();
    run_quiet(&exe, &["down", "--switch", BRINGUP_SWITCH]).await?;
    Ok((up, start.elapsed()))
}

/// The same with `ip` and a Linux bridge; removal is `ip netns del` of each namespace, which
/// returns before the kernel has destroyed it, so the clock stops when their veths are gone.
async fn bringup_ip(n: usize) -> Result<(Duration, Duration)> {
    let remove = || async {
        for i in 0..n {
            let _ = run_quiet("ip", &["netns", "del", &format!("benchi{i}")]).await;
        }
        let _ = run_quiet("ip", &["link", "del", "benchbr"]).await;
        let nl = crate::sys::netlink::Netlink::new()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while nl.links().await?.keys().any(|l| l.starts_with("benchv")) {
            if Instant::now() > deadline {
                return Err(Error::Command("the classic recipe's veths did not go within 30 s".into()));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(())
    };
    remove().await?;
    let start = Instant::now();
    run_quiet("ip", &["link", "add", "benchbr", "type", "bridge"]).await?;
    run_quiet("ip", &["link", "set", "benchbr", "up"]).await?;
    for i in 0..n {
        let (ns, host, ip) =
            (format!("benchi{i}"), format!("benchv{i}"), format!("10.202.{}.{}/16", i / 250, i % 250 + 1));
        run_quiet("ip", &["netns", "add", &ns]).await?;
        run_quiet("ip", &["link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &ns]).await?;
        run_quiet("ip", &["link", "set", &host, "master", "benchbr", "up"]).await?;
        run_quiet("ip", &["-n", &ns, "addr", "add", &ip, "dev", "eth0"]).await?;
        run_quiet("ip", &["-n", &ns, "link", "set", "eth0", "up"]).await?;
        run_quiet("ip", &["-n", &ns, "link", "set", "lo", "up"]).await?;
    }
    let up = start.elapsed();
    let start = Instant::now();
    remove().await?;
    Ok((up, start.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(names: &[&str]) -> Options {
        Options { only: names.iter().map(|n| n.to_string()).collect(), ..Options::full() }
    }

    fn names(opts: &Options) -> Vec<&'static str> {
        opts.contenders().unwrap().iter().map(|c| c.name).collect()
    }

    #[test]
    fn only_runs_the_comparisons_it_names_with_their_baselines() {
        let all = Options::full();
        assert_eq!(names(&all).len(), ALL.len());
        assert!(all.forwards());
        assert_eq!(all.bringup(), [10, 100]);

        let forwarding = only(&["ebpf-forward"]);
        assert!(names(&forwarding).is_empty());
        assert!(forwarding.forwards());
        assert!(forwarding.bringup().is_empty());

        let tc = only(&["tc"]);
        assert_eq!(names(&tc), ["veth", "bridge", "tc"]);
        assert!(!tc.forwards());
        assert!(tc.bringup().is_empty());

        let both = only(&["routed", "tc-open"]);
        assert_eq!(names(&both), ["veth", "bridge", "tc-open"]);
        assert!(both.forwards());

        assert!(all.podman());
        assert!(!tc.podman() && !forwarding.podman());
        for name in ["podman", "podman-switch-cni", "podman-bridge"] {
            let pods = only(&[name]);
            assert!(pods.podman() && names(&pods).is_empty() && !pods.forwards() && !pods.cni(), "{name}");
        }

        let unknown = only(&["tc", "nat"]).contenders().unwrap_err().to_string();
        assert!(unknown.contains("nat") && unknown.contains("ebpf-forward"), "{unknown}");
    }

    #[test]
    fn a_failed_run_leaves_the_metric_not_measured() {
        let (bar, mut s) = (ProgressBar::hidden(), Series::default());
        s.record(Ok(1.0), "TCP", &bar);
        s.record(Err(Error::Command("iperf3 failed".into())), "TCP", &bar);
        assert!(s.values.is_empty(), "no median from the rounds before the failure");
        assert_eq!(s.error.as_deref(), Some("iperf3 failed"));
    }
}
