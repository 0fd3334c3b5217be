//! Podman contenders: containers under a real runtime, on a `switch-cni` network against
//! podman's own bridge + portmap network (both with `host-local`): how long `podman run -d`
//! takes until the container answers a ping, starts at once, and a published port (`-p`)
//! reached from outside through an uplink.
//!
//! The environment is this run's own and leaves the machine's podman alone: a podman
//! environment of the container-env crate (the tests' podman environments are the same),
//! with busybox-static imported as the image and its two conflists in its own network config
//! directory (never /etc/cni/net.d). Its ledger lists the host objects the networks make
//! (outside namespaces, uplinks, the bridge, the switch), and it records the host-wide state
//! the bridge plugin and portmap change before the first podman call: both are given back at
//! the end, also by `switch bench`'s clean-up after an interrupted or killed run (the
//! directory has a fixed name for that; one bench runs at a time).
use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use container_env::{
    cni,
    ledger::{Owned, own},
    podman,
};
use indicatif::ProgressBar;
use tokio::process::{Child, Command};

use super::{Comparison, Options, Series, forward, output, report::MetricReport, run_quiet, tools};
use crate::{
    error::{Error, Result},
    sys::netns,
};

/// The contenders, in the order they are measured in each round; the second is the baseline.
pub const CONTENDERS: [&str; 2] = ["podman-switch-cni", "podman-bridge"];
/// `--only` name for both.
pub const ALIAS: &str = "podman";
/// The baseline.
pub const BASELINE: &str = CONTENDERS[1];

/// The image every container runs: busybox (`PATH=/bin`).
const IMAGE: &str = "localhost/switch-bench-busybox";
/// Prefix of every container name.
const CONTAINER: &str = "benchpod-";
/// Port of the connection-rate server in the published-port containers.
const CONN_PORT: u16 = 16000;

/// The podman comparison.
pub struct Containers;

#[async_trait::async_trait]
impl Comparison for Containers {
    fn contenders(&self) -> Vec<&'static str> {
        CONTENDERS.to_vec()
    }

    fn alias(&self) -> Option<&'static str> {
        Some(ALIAS)
    }

    fn steps(&self, opts: &Options) -> usize {
        opts.rounds * CONTENDERS.len() * 3 + 2
    }

    /// Never fails: what fails is reported as not measured.
    async fn run(&self, opts: &Options, bar: &ProgressBar) -> Result<Vec<MetricReport>> {
        Ok(measure(opts, bar).await)
    }

    async fn remove(&self) {
        remove().await;
    }
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

/// Samples by metric (in `POD_METRICS` order), then by network.
type PodSeries = Vec<Vec<Series>>;

/// Containers under podman on a switch-cni network against podman's own bridge + portmap
/// network, interleaved per round: start to the first answered ping (starts one after
/// another), starts at once (wall time and failures), and a published port reached from
/// outside through an uplink. What fails is reported as not measured; the environment is
/// removed and the host given back at the end, also after a failure.
async fn measure(opts: &Options, bar: &ProgressBar) -> Vec<MetricReport> {
    let nets = nets();
    bar.set_message("podman: setting up its environment");
    let measured = measure_rounds(opts, bar, &nets).await;
    bar.set_message("podman: removing its containers and networks");
    remove().await;
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
            MetricReport::new(id, &title, unit, *higher, "", &[BASELINE], rows)
        })
        .collect()
}

/// Sets the environment up, brings the networks up with their published-port servers and
/// measures every round.
async fn measure_rounds(opts: &Options, bar: &ProgressBar, nets: &[Net]) -> Result<PodSeries> {
    let mut s = vec![vec![Series::default(); nets.len()]; POD_METRICS.len()];
    let env = Env::setup().await?;
    bar.inc(1);
    let mut served = vec![];
    for net in nets {
        bar.set_message(format!("podman: bringing up {}", net.name));
        env.warm_up(net).await?;
        served.push(env.serve(net).await?);
    }
    for round in 1..=opts.rounds {
        for (i, net) in nets.iter().enumerate() {
            let step = Step { opts, bar, round, net, i };
            step.starts(&env, &mut s).await;
            step.at_once(&env, &mut s).await;
            step.published_port(&mut s).await;
        }
    }
    drop(served);
    Ok(s)
}

/// One network's turn in one round.
struct Step<'a> {
    opts: &'a Options,
    bar: &'a ProgressBar,
    round: usize,
    net: &'a Net,
    /// The network's index in the series.
    i: usize,
}

impl Step<'_> {
    fn show(&self, what: String) {
        let (round, rounds, net) = (self.round, self.opts.rounds, self.net.name);
        self.bar.set_message(format!("round {round}/{rounds}: {what} on {net}"));
    }

    /// Starts one after another: their p50 and p99.
    async fn starts(&self, env: &Env, s: &mut PodSeries) {
        let (net, i, bar) = (self.net, self.i, self.bar);
        self.show(format!("{} podman starts", self.opts.pod_starts));
        if s[0][i].error.is_none() {
            let r = env.starts(net, self.opts.pod_starts).await;
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
            let p = |q| r.as_ref().map(|ms| percentile(ms, q)).map_err(|e| Error::Command(e.to_string()));
            s[0][i].record(p(50.0), net.name, bar);
            s[1][i].record(p(99.0), net.name, bar);
        }
        bar.inc(1);
    }

    /// Starts at once: the wall time and how many failed.
    async fn at_once(&self, env: &Env, s: &mut PodSeries) {
        let (net, i, bar, n) = (self.net, self.i, self.bar, self.opts.pod_parallel);
        self.show(format!("{n} podman starts at once"));
        if s[2][i].error.is_none() {
            match env.parallel(net, n).await {
                Ok((wall, failed, first)) => {
                    s[2][i].values.push(wall);
                    s[3][i].values.push(failed as f64);
                    if let Some(e) = first {
                        bar.println(format!("{}: {failed} of {n} starts at once failed: {e}", net.name));
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
    }

    /// New connections and a TCP stream to the published ports from outside.
    async fn published_port(&self, s: &mut PodSeries) {
        let (net, i, bar, secs) = (self.net, self.i, self.bar, self.opts.secs);
        self.show("connections and TCP to a published port".into());
        let (client, iperf, conn) = Env::client(net);
        if s[4][i].error.is_none() {
            let rate = forward::connection_rate(&client, conn, secs).await;
            s[4][i].record(rate.map(|r| r / 1e3), &format!("connections to {}", net.name), bar);
        }
        if s[5][i].error.is_none() {
            let bps = tools::tcp_stream(&client, &iperf.ip().to_string(), iperf.port(), secs).await;
            s[5][i].record(bps.map(|(bps, _)| bps / 1e9), &format!("TCP to {}", net.name), bar);
        }
        bar.inc(1);
    }
}

/// The run's directory (fixed, so a later run's clean-up finds what a killed one left).
fn dir() -> PathBuf {
    std::env::temp_dir().join("switch-bench-podman")
}

/// One network under test, numbered `n` (10.204.N.0/24; uplink 172.30.1N.1/24).
pub struct Net {
    /// Contender name in reports.
    pub name: &'static str,
    n: u8,
    switch_cni: bool,
}

impl Net {
    fn network(&self) -> String {
        format!("benchpod{}", self.n)
    }
    fn bridge(&self) -> String {
        format!("benchpodbr{}", self.n)
    }
    fn switch(&self) -> String {
        format!("benchpodsw{}", self.n)
    }
    /// Outside namespace (the client of the published port).
    fn outside(&self) -> String {
        format!("benchpo{}", self.n)
    }
    /// Host end of the uplink towards the outside namespace.
    fn uplink(&self) -> String {
        format!("benchpu{}", self.n)
    }
    fn uplink_ip(&self) -> String {
        format!("172.30.1{}.1", self.n)
    }
    /// Address of start number `i` (sequential starts ask for theirs, so the ping needs no
    /// `podman inspect`).
    fn address(&self, i: usize) -> String {
        format!("10.204.{}.{}", self.n, 10 + i)
    }
    /// Address of the published-port server (outside what the sequential starts use).
    fn server_ip(&self) -> String {
        format!("10.204.{}.250", self.n)
    }
    /// Host ports published to the server's iperf3 (5201) and connection-rate server.
    fn host_ports(&self) -> (u16, u16) {
        (15210 + u16::from(self.n), 16010 + u16::from(self.n))
    }

    fn conflist(&self, ipam: serde_json::Value) -> serde_json::Value {
        let plugins = if self.switch_cni {
            cni::switch_cni(&self.switch(), &self.uplink(), ipam)
        } else {
            cni::bridge_portmap(&self.bridge(), ipam)
        };
        cni::conflist(&self.network(), plugins)
    }
}

/// The two networks.
pub fn nets() -> [Net; 2] {
    [Net { name: CONTENDERS[0], n: 2, switch_cni: true }, Net { name: CONTENDERS[1], n: 1, switch_cni: false }]
}

/// Runs `f` (container-env's blocking calls) off the tokio workers, its error as the bench's.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> container_env::Result<T> + Send + 'static) -> Result<T> {
    crate::sys::blocking(move || f().map_err(|e| Error::Command(e.to_string()))).await
}

/// Records what `net` makes on the host in the environment's ledger (before it is made) and
/// writes its conflist.
fn own_net(dir: &Path, net: &Net) -> container_env::Result<()> {
    own(dir, Owned::Netns, &net.outside())?;
    own(dir, Owned::Link, &net.uplink())?;
    own(dir, Owned::Network, &net.network())?;
    if net.switch_cni {
        // switch-cni's switch stays up after its last container; down gives back its sysctls.
        own(dir, Owned::Switch, &net.switch())?;
    } else {
        own(dir, Owned::Link, &net.bridge())?;
    }
    let ipam = cni::host_local(&dir.join("ipam"), &format!("10.204.{}.0/24", net.n), &format!("10.204.{}.1", net.n));
    let path = dir.join("net.d").join(format!("{}.conflist", net.network()));
    std::fs::write(path, net.conflist(ipam).to_string()).map_err(container_env::Error::io("writing a conflist"))
}

async fn ip(args: &[&str]) -> Result<()> {
    run_quiet("ip", args).await
}

/// The run's podman environment.
pub struct Env {
    env: podman::Env,
}

impl Env {
    /// Sets the environment up (after removing what a killed run left): records the host,
    /// writes the configuration, imports the image, writes the conflists and builds the
    /// outside namespaces and uplinks.
    pub async fn setup() -> Result<Self> {
        remove().await;
        let exe = std::env::current_exe().map_err(|e| Error::Command(format!("finding the switch binary: {e}")))?;
        let env = blocking(move || {
            let plugins = exe.parent().unwrap_or(Path::new("/"));
            let env = podman::Env::create(&dir(), &[plugins, Path::new("/usr/lib/cni")], None)?;
            env.record_host()?;
            env.import_busybox(IMAGE)?;
            for net in nets() {
                own_net(env.dir(), &net)?;
            }
            Ok(env)
        })
        .await?;
        for net in nets() {
            build_outside(&net).await?;
        }
        Ok(Self { env })
    }

    /// `podman ARGS` under this environment's configuration; stdout.
    async fn podman(&self, args: &[&str]) -> Result<String> {
        let out = Command::from(self.env.command(args))
            .output()
            .await
            .map_err(|e| Error::Command(format!("running podman (install it, or run 'cargo xtask setup'): {e}")))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(Error::Command(format!("podman {} failed: {}", args.first().unwrap_or(&""), err.trim())));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `podman run -d` of a container that sleeps, on `net`; `extra` before the image.
    async fn run(&self, net: &Net, name: &str, extra: &[&str]) -> Result<()> {
        let network = net.network();
        // SIGKILL: busybox as PID 1 ignores SIGTERM, and every stop would wait 10 s.
        let mut args = vec!["run", "-d", "--name", name, "--network", &network, "--stop-signal", "KILL"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[IMAGE, "sleep", "86400"]);
        self.podman(&args).await.map(|_| ())
    }

    async fn rm(&self, names: &[String]) -> Result<()> {
        let mut args = vec!["rm", "--force", "--ignore", "--time", "0"];
        args.extend(names.iter().map(String::as_str));
        self.podman(&args).await.map(|_| ())
    }

    /// One untimed start and removal: brings the network up (the switch's programs load, the
    /// bridge is made), so rounds measure a container's start, not the network's.
    pub async fn warm_up(&self, net: &Net) -> Result<()> {
        let name = format!("{CONTAINER}warm{}", net.n);
        let started = self.run(net, &name, &[]).await;
        self.rm(&[name]).await?;
        started
    }

    /// `starts` containers one after another, each timed from the start of `podman run -d` to
    /// the first ping from the host it answers (pinged every 10 ms once `podman run` returned);
    /// removed afterwards, untimed. Returns each start's time in ms.
    pub async fn starts(&self, net: &Net, starts: usize) -> Result<Vec<f64>> {
        let names: Vec<String> = (0..starts).map(|i| format!("{CONTAINER}s{}-{i}", net.n)).collect();
        let measured = async {
            let mut ms = vec![];
            for (i, name) in names.iter().enumerate() {
                let ip = net.address(i);
                let start = Instant::now();
                self.run(net, name, &["--ip", &ip]).await?;
                let ping = output("ping", &["-n", "-q", "-c", "1", "-i", "0.01", "-w", "10", &ip]).await;
                ping.map_err(|_| Error::Command(format!("{name} ({ip}) did not answer a ping within 10 s")))?;
                ms.push(start.elapsed().as_secs_f64() * 1e3);
            }
            Ok::<_, Error>(ms)
        }
        .await;
        self.rm(&names).await?;
        measured
    }

    /// `n` containers started at once (each `podman run -d` its own process): the wall time in
    /// s until the last returned, and how many failed (with the first failure's message).
    pub async fn parallel(&self, net: &Net, n: usize) -> Result<(f64, usize, Option<String>)> {
        let names: Vec<String> = (0..n).map(|i| format!("{CONTAINER}p{}-{i}", net.n)).collect();
        let start = Instant::now();
        let results = futures::future::join_all(names.iter().map(|name| self.run(net, name, &[]))).await;
        let wall = start.elapsed().as_secs_f64();
        let failed: Vec<String> = results.into_iter().filter_map(|r| r.err().map(|e| e.to_string())).collect();
        self.rm(&names).await?;
        Ok((wall, failed.len(), failed.into_iter().next()))
    }

    /// Starts `net`'s published-port server: a container publishing two host ports, with
    /// iperf3 (and sockperf) and the connection-rate server running in its network namespace.
    pub async fn serve(&self, net: &Net) -> Result<Served> {
        let name = format!("{CONTAINER}web{}", net.n);
        let (iperf, conn) = net.host_ports();
        let (ip, p1, p2) = (net.server_ip(), format!("{iperf}:5201"), format!("{conn}:{CONN_PORT}"));
        self.run(net, &name, &["--ip", &ip, "-p", &p1, "-p", &p2]).await?;
        let key = self
            .podman(&["inspect", "--type", "container", "--format", "{{.NetworkSettings.SandboxKey}}", &name])
            .await?;
        let ns = Path::new(key.trim())
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Error::Command(format!("{name} has no network namespace")))?;
        let addr = format!("{ip}:{CONN_PORT}").parse().expect("address");
        Ok(Served { _tools: tools::start_servers(&ns, &ip)?, _conn: forward::accept_server(&ns, addr) })
    }

    /// The outside client of `net`'s published ports, and where it connects: (namespace,
    /// uplink address:iperf port, uplink address:connection port).
    pub fn client(net: &Net) -> (String, std::net::SocketAddr, std::net::SocketAddr) {
        let (iperf, conn) = net.host_ports();
        let at = |p: u16| format!("{}:{p}", net.uplink_ip()).parse().expect("address");
        (net.outside(), at(iperf), at(conn))
    }
}

/// The outside namespace of `net` (the client of its published ports) and its uplink.
async fn build_outside(net: &Net) -> Result<()> {
    let (ns, uplink) = (net.outside(), net.uplink());
    netns::create(&ns).await?;
    ip(&["link", "add", &uplink, "type", "veth", "peer", "name", "eth0", "netns", &ns]).await?;
    ip(&["addr", "add", &format!("{}/24", net.uplink_ip()), "dev", &uplink]).await?;
    ip(&["link", "set", &uplink, "up"]).await?;
    ip(&["-n", &ns, "addr", "add", &format!("172.30.1{}.2/24", net.n), "dev", "eth0"]).await?;
    ip(&["-n", &ns, "link", "set", "eth0", "up"]).await?;
    ip(&["-n", &ns, "link", "set", "lo", "up"]).await?;
    ip(&["-n", &ns, "route", "add", "default", "via", &net.uplink_ip()]).await
}

/// The servers behind a published port; dropping it stops them.
pub struct Served {
    _tools: Vec<Child>,
    _conn: tokio::sync::watch::Sender<()>,
}

/// The `p`th percentile of `v` (nearest rank), 0 for an empty slice.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// Removes everything the podman contenders made (this run's or a killed one's) and gives the
/// host back as it was recorded; nothing there is fine.
pub async fn remove() {
    let Ok(exe) = std::env::current_exe() else { return };
    let _ = tokio::task::spawn_blocking(move || podman::Env::at(&dir()).remove(&exe)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=50).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 25.0);
        assert_eq!(percentile(&v, 99.0), 50.0);
        assert_eq!(percentile(&[3.0], 99.0), 3.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn the_networks_conflists() {
        let [ours, theirs] = nets();
        assert_eq!(ours.conflist(serde_json::json!({}))["plugins"][0]["uplink"], "benchpu2");
        assert_eq!(theirs.conflist(serde_json::json!({}))["plugins"][1]["type"], "portmap");
    }
}
