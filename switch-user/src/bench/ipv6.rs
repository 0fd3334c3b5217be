//! IPv6 between two namespaces: dual-stack client and server on the tc switch, on the Linux
//! bridge and on a bare veth pair, the `packets` comparison's TCP stream and 64-byte frames
//! over IPv6 instead of IPv4.
//!
//! ```text
//!   bench6Nc (10.205.N.1, fd00:205:N::1) ─ tc switch | Linux bridge | veth ─ bench6Ns (…2)
//! ```
//! The tc switch has port security on (IPv6 sources and neighbour discovery checked); the
//! bridge has none, as it is on a container host.
use futures::FutureExt as _;
use indicatif::ProgressBar;

use super::{Comparison, Options, Series, interleaved, output, overlay::exe, report::MetricReport, run_quiet, tools};
use crate::error::{Error, Result};

/// The contenders, in the order measured in each round.
pub const CONTENDERS: [&str; 3] = ["veth6", "bridge6", "tc6"];
/// `--only` name for all three.
pub const ALIAS: &str = "ipv6";
/// The baselines: the bridge (what the switch replaces), the bare veth pair (the limit).
const BASELINES: [&str; 2] = ["bridge6", "veth6"];

/// One contender's namespaces and addresses.
struct Pair {
    name: &'static str,
    index: usize,
    client: String,
    server: String,
}

impl Pair {
    fn all() -> Vec<Pair> {
        CONTENDERS
            .iter()
            .enumerate()
            .map(|(index, name)| Pair {
                name,
                index,
                client: format!("bench6{index}c"),
                server: format!("bench6{index}s"),
            })
            .collect()
    }

    fn switch(&self) -> String {
        format!("bench6{}", self.index)
    }

    /// Host `h` (1: client, 2: server): its IPv4 and IPv6 addresses with prefix.
    fn cidrs(&self, h: u8) -> (String, String) {
        (format!("10.205.{}.{h}/24", self.index), format!("fd00:205:{}::{h}/64", self.index))
    }

    fn addr6(&self, h: u8) -> String {
        format!("fd00:205:{}::{h}", self.index)
    }

    /// Builds it (after removing leftovers) and checks the client reaches the server over IPv6.
    async fn build(&self) -> Result<()> {
        self.remove().await;
        match self.name {
            "veth6" => self.build_veth().await?,
            _ => {
                let datapath = if self.name == "tc6" { "tc" } else { "bridge" };
                let (exe, sw) = (exe()?, self.switch());
                run_quiet(&exe, &["up", "--switch", &sw, "--datapath", datapath]).await?;
                for (h, ns) in [(1, &self.client), (2, &self.server)] {
                    let (v4, v6) = self.cidrs(h);
                    run_quiet(&exe, &["ns", "add", ns, "--switch", &sw, "--ip", &v4, "--ip", &v6]).await?;
                }
            }
        }
        let ping = ["ns", "exec", &self.client, "--", "ping", "-6", "-c", "3", "-i", "0.2", "-W", "1", "-q"];
        let mut args = ping.to_vec();
        let server = self.addr6(2);
        args.push(&server);
        output(&exe()?, &args)
            .await
            .map(drop)
            .map_err(|e| Error::Command(format!("{}: client cannot reach server over IPv6: {e}", self.name)))
    }

    /// The bare veth pair, each end with both addresses (no duplicate address detection, as
    /// the switch's namespaces have none).
    async fn build_veth(&self) -> Result<()> {
        for ns in [&self.client, &self.server] {
            run_quiet("ip", &["netns", "add", ns]).await?;
        }
        run_quiet(
            "ip",
            &[
                "link",
                "add",
                "eth0",
                "netns",
                &self.client,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &self.server,
            ],
        )
        .await?;
        for (h, ns) in [(1, &self.client), (2, &self.server)] {
            let (v4, v6) = self.cidrs(h);
            run_quiet("ip", &["netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0"]).await?;
            run_quiet("ip", &["-n", ns, "addr", "add", &v4, "dev", "eth0"]).await?;
            run_quiet("ip", &["-n", ns, "addr", "add", &v6, "dev", "eth0", "nodad"]).await?;
            run_quiet("ip", &["-n", ns, "link", "set", "eth0", "up"]).await?;
            run_quiet("ip", &["-n", ns, "link", "set", "lo", "up"]).await?;
        }
        Ok(())
    }

    async fn remove(&self) {
        if self.name != "veth6" {
            let _ = run_quiet(&exe().unwrap_or_default(), &["down", "--switch", &self.switch()]).await;
        }
        for ns in [&self.client, &self.server] {
            let _ = run_quiet("ip", &["netns", "del", ns]).await;
        }
    }
}

/// The IPv6 comparison.
pub struct Ipv6;

#[async_trait::async_trait]
impl Comparison for Ipv6 {
    fn contenders(&self) -> Vec<&'static str> {
        CONTENDERS.to_vec()
    }

    fn alias(&self) -> Option<&'static str> {
        Some(ALIAS)
    }

    fn steps(&self, opts: &Options) -> usize {
        (opts.rounds * 2 + 1) * CONTENDERS.len()
    }

    async fn run(&self, opts: &Options, bar: &ProgressBar) -> Result<Vec<MetricReport>> {
        let pairs = Pair::all();
        let measured = measure(opts, bar, &pairs).await;
        for p in &pairs {
            p.remove().await;
        }
        let (tcp, udp) = measured?;
        let rows = |s: Vec<Series>| pairs.iter().map(|p| p.name.to_owned()).zip(s).collect::<Vec<_>>();
        Ok(vec![
            MetricReport::new(
                "ipv6_tcp",
                "TCP stream between two dual-stack namespaces over IPv6 (iperf3, 1 stream)",
                "Gbit/s",
                true,
                "",
                &BASELINES,
                rows(tcp),
            ),
            MetricReport::new(
                "ipv6_udp64",
                "64-byte IPv6/UDP frames received between two namespaces (trafgen on every CPU)",
                "kframes/s",
                true,
                "",
                &BASELINES,
                rows(udp),
            ),
        ])
    }

    async fn remove(&self) {
        for p in Pair::all() {
            p.remove().await;
        }
    }
}

/// Builds every pair, then measures TCP and 64-byte frames over IPv6, interleaved per round.
async fn measure(opts: &Options, bar: &ProgressBar, pairs: &[Pair]) -> Result<(Vec<Series>, Vec<Series>)> {
    let mut servers = vec![];
    for p in pairs {
        bar.set_message(format!("building {}", p.name));
        p.build().await?;
        servers.push(tools::start_servers(&p.server, &p.addr6(2))?);
        bar.inc(1);
    }
    let [tcp, udp] = interleaved(opts, bar, pairs.len(), |i, metric| {
        let (p, secs) = (&pairs[i], opts.secs);
        if metric == 0 {
            let what = format!("IPv6 TCP via {}", p.name);
            let server = p.addr6(2);
            let measure =
                async move { tools::tcp_stream(&p.client, &server, 5201, secs).await.map(|(bps, _)| bps / 1e9) };
            (what.clone(), what, measure.boxed())
        } else {
            let what = format!("64-byte IPv6 UDP via {}", p.name);
            let addrs = (p.addr6(1), p.addr6(2));
            let measure = async move {
                tools::udp_small_frames6(&p.client, &p.server, addrs, secs).await.map(|(pps, _)| pps / 1e3)
            };
            (what.clone(), what, measure.boxed())
        }
    })
    .await;
    drop(servers);
    Ok((tcp, udp))
}
