//! `switch bench`: every contender (bare veth pair, Linux bridge, each datapath of this
//! project) measured in one run, interleaved (A B C A B C ...) so that a noisy neighbour on
//! the shared machine hits them all alike, and reported as medians, min-max and the ratio to
//! the bridge and to the bare veth pair computed round by round.
pub mod forward;
pub mod report;
pub mod tools;
pub mod topology;

use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use report::{Machine, MetricReport, Report};
use topology::{ALL, Contender, Topology};

use crate::error::{Error, Result};

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Rounds of every contender.
    pub rounds: usize,
    /// Seconds per tool run.
    pub secs: u64,
    /// Namespace counts for the bring-up comparison.
    pub bringup: Vec<usize>,
    /// Contenders by name (all if empty).
    pub only: Vec<String>,
}

impl Options {
    /// Smoke run: one round of one second each, bring-up of 10 (well under 2 minutes).
    pub fn quick() -> Self {
        Self { rounds: 1, secs: 1, bringup: vec![10], only: vec![] }
    }

    /// Full run: 3 rounds of 5 s, bring-up of 10 and 100 (well under 15 minutes).
    pub fn full() -> Self {
        Self { rounds: 3, secs: 5, bringup: vec![10, 100], only: vec![] }
    }

    fn contenders(&self) -> Result<Vec<Contender>> {
        for name in &self.only {
            if !ALL.iter().any(|c| c.name == name) {
                let known: Vec<&str> = ALL.iter().map(|c| c.name).collect();
                return Err(Error::invalid("contender", name.clone(), format!("known: {}", known.join(", "))));
            }
        }
        // The baselines are always measured: every ratio is against them.
        Ok(ALL
            .iter()
            .copied()
            .filter(|c| {
                self.only.is_empty() || c.name == "veth" || c.name == "bridge" || self.only.iter().any(|o| o == c.name)
            })
            .collect())
    }
}

/// Removes whatever an interrupted run left: every contender's topology, the forward
/// contenders and the bring-up namespaces. Nothing there is fine.
pub async fn cleanup() {
    for (i, c) in ALL.iter().enumerate() {
        Topology::new(i, *c).remove().await;
    }
    for c in forward::contenders() {
        c.remove().await;
    }
    let _ = crate::controller::switch::down(BRINGUP_SWITCH).await;
    for i in 0..BRINGUP_MAX {
        let _ = run_quiet("ip", &["netns", "del", &format!("benchi{i}")]).await;
    }
    let _ = run_quiet("ip", &["link", "del", "benchbr"]).await;
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
    let contenders = opts.contenders()?;
    let topologies: Vec<Topology> = contenders.iter().enumerate().map(|(i, c)| Topology::new(i, *c)).collect();
    let steps = (opts.rounds * topologies.len() * MEASUREMENTS.len()
        + opts.rounds * opts.bringup.len() * 2
        + topologies.len()
        + opts.rounds * 2 * 2
        + 2) as u64;
    bar.set_length(steps);

    let measured = measure_all(opts, &topologies, bar).await;
    bar.set_message("tearing down");
    for t in &topologies {
        t.remove().await;
    }
    let series = measured?;
    let forwards = forwards(opts, bar).await?;
    let bringup = bringup(opts, bar).await?;
    bar.finish_and_clear();

    let mut metrics: Vec<MetricReport> = METRICS
        .iter()
        .enumerate()
        .map(|(m, (id, title, unit, higher, cpu_unit))| {
            let rows = topologies
                .iter()
                .enumerate()
                .map(|(c, t)| (t.contender.name.to_owned(), series[m][c].clone()))
                .collect();
            MetricReport::new(id, title, unit, *higher, cpu_unit, rows)
        })
        .collect();
    metrics.extend(forwards);
    metrics.extend(bringup);
    Ok(Report::new(Machine::read(), opts, metrics))
}

async fn measure_all(opts: &Options, topologies: &[Topology], bar: &ProgressBar) -> Result<Vec<Vec<Series>>> {
    let mut servers = vec![];
    for t in topologies {
        bar.set_message(format!("building {}", t.contender.name));
        t.build().await?;
        servers.push(tools::start_servers(&t.server, &t.server_ip)?);
        bar.inc(1);
    }
    // series[metric][contender]
    let mut series = vec![vec![Series::default(); topologies.len()]; METRICS.len()];
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
/// uplink, eBPF forward against bridge + iptables DNAT, interleaved per round.
async fn forwards(opts: &Options, bar: &ProgressBar) -> Result<Vec<MetricReport>> {
    use forward::{CONN_PORT, IPERF_PORT};
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
        let mut tcp = vec![Series::default(), Series::default()];
        let mut conn = vec![Series::default(), Series::default()];
        for round in 1..=opts.rounds {
            for (i, c) in contenders.iter().enumerate() {
                bar.set_message(format!("round {round}/{}: TCP through {}", opts.rounds, c.name));
                let (bps, _) = tools::tcp_stream(&c.client, &c.uplink_ip, IPERF_PORT, opts.secs).await?;
                tcp[i].values.push(bps / 1e9);
                bar.inc(1);
                bar.set_message(format!("round {round}/{}: connections through {}", opts.rounds, c.name));
                let addr = format!("{}:{CONN_PORT}", c.uplink_ip).parse().expect("address");
                conn[i].values.push(forward::connection_rate(&c.client, addr, opts.secs).await? / 1e3);
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
            "TCP stream through a port forward (x bridge: against bridge + iptables DNAT)",
            "Gbit/s",
            true,
            "",
            rows(tcp),
        ),
        MetricReport::new(
            "fwd_conn",
            "New TCP connections through a port forward (32 in flight, a client thread per CPU)",
            "kconn/s",
            true,
            "",
            rows(conn),
        ),
    ])
}

/// The switch the bring-up comparison builds.
const BRINGUP_SWITCH: &str = "benchup";
/// The most namespaces a bring-up comparison makes.
const BRINGUP_MAX: usize = 100;

/// Time to bring up `n` namespaces on a switch (one `switch ns add` process each, as a user
/// would) against the same with `ip` commands and a Linux bridge, interleaved per round.
async fn bringup(opts: &Options, bar: &ProgressBar) -> Result<Vec<MetricReport>> {
    let mut out = vec![];
    for &n in &opts.bringup {
        let mut ours = Series::default();
        let mut classic = Series::default();
        for round in 1..=opts.rounds {
            bar.set_message(format!("round {round}/{}: {n} namespaces with switch", opts.rounds));
            ours.values.push(bringup_switch(n).await?.as_secs_f64());
            bar.inc(1);
            bar.set_message(format!("round {round}/{}: {n} namespaces with ip + bridge", opts.rounds));
            classic.values.push(bringup_ip(n).await?.as_secs_f64());
            bar.inc(1);
        }
        out.push(MetricReport::new(
            if n >= 100 { "bringup_100" } else { "bringup_10" },
            &format!("Bring-up of {n} namespaces on a switch"),
            "s",
            false,
            "",
            vec![("switch ns add (tc)".into(), ours), ("ip commands + bridge".into(), classic)],
        ));
    }
    Ok(out)
}

/// Runs `program ARGS`, failing with its stderr.
pub(super) async fn run_quiet(program: &str, args: &[&str]) -> Result<()> {
    let out = tokio::process::Command::new(program)
        .args(args)
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
    Ok(())
}

async fn bringup_switch(n: usize) -> Result<Duration> {
    let exe = std::env::current_exe().map_err(|e| Error::Command(format!("finding the switch binary: {e}")))?;
    let exe = exe.to_string_lossy().into_owned();
    let _ = crate::controller::switch::down(BRINGUP_SWITCH).await;
    run_quiet(&exe, &["up", "--switch", BRINGUP_SWITCH]).await?;
    let start = Instant::now();
    for i in 0..n {
        let (ns, ip) = (format!("benchu{i}"), format!("10.201.{}.{}/16", i / 250, i % 250 + 1));
        run_quiet(&exe, &["ns", "add", &ns, "--ip", &ip, "--switch", BRINGUP_SWITCH]).await?;
    }
    let took = start.elapsed();
    crate::controller::switch::down(BRINGUP_SWITCH).await?;
    Ok(took)
}

async fn bringup_ip(n: usize) -> Result<Duration> {
    let cleanup = || async {
        for i in 0..n {
            let _ = run_quiet("ip", &["netns", "del", &format!("benchi{i}")]).await;
        }
        let _ = run_quiet("ip", &["link", "del", "benchbr"]).await;
    };
    cleanup().await;
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
    let took = start.elapsed();
    cleanup().await;
    Ok(took)
}
