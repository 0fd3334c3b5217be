//! The per-packet comparison: every contender of [`topology::ALL`] (bare veth pair, Linux
//! bridge, each datapath of this project, Open vSwitch) built side by side, then TCP
//! throughput, 64-byte UDP frames and request/response latency (sleeping and busy-polling
//! sockets) between a client and a server namespace, interleaved per round, with ratios to the
//! baselines and to the peers the run measures.
use indicatif::ProgressBar;

use super::{
    Comparison, Options, Series,
    report::MetricReport,
    tools,
    topology::{ALL, BASELINES, Contender, Kind, PEERS, Topology},
};
use crate::error::Result;

/// The per-packet comparison.
pub struct Packets;

/// The contenders `opts` names (none when `only` names none of them), with the baselines,
/// which are always measured: every ratio is against them.
fn contenders(opts: &Options) -> Vec<Contender> {
    if !opts.only.is_empty() && !ALL.iter().any(|c| opts.named(c.name)) {
        return vec![];
    }
    ALL.iter().copied().filter(|c| opts.only.is_empty() || BASELINES.contains(&c.name) || opts.named(c.name)).collect()
}

#[async_trait::async_trait]
impl Comparison for Packets {
    fn contenders(&self) -> Vec<&'static str> {
        ALL.iter().map(|c| c.name).collect()
    }

    fn steps(&self, opts: &Options) -> usize {
        let n = contenders(opts).len();
        opts.rounds * n * MEASUREMENTS.len() + n
    }

    async fn run(&self, opts: &Options, bar: &ProgressBar) -> Result<Vec<MetricReport>> {
        let topologies: Vec<Topology> =
            contenders(opts).into_iter().enumerate().map(|(i, c)| Topology::new(i, c)).collect();
        if topologies.is_empty() {
            return Ok(vec![]);
        }
        let measured = measure_all(opts, &topologies, bar).await;
        bar.set_message("tearing down");
        for t in &topologies {
            t.remove().await;
        }
        let series = measured?;
        // Ratios to the baselines, and to the peers this run measures.
        let peers = PEERS.iter().filter(|p| topologies.iter().any(|t| t.contender.name == **p));
        let baselines: Vec<&str> = BASELINES.iter().chain(peers).copied().collect();
        Ok(METRICS
            .iter()
            .enumerate()
            .map(|(m, (id, title, unit, higher, cpu_unit))| {
                let rows = topologies
                    .iter()
                    .enumerate()
                    .map(|(c, t)| (t.contender.name.to_owned(), series[m][c].clone()))
                    .collect();
                MetricReport::new(id, title, unit, *higher, cpu_unit, &baselines, rows)
            })
            .collect())
    }

    async fn remove(&self) {
        for (i, c) in ALL.iter().enumerate() {
            Topology::new(i, *c).remove().await;
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
