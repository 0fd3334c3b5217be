//! Docker contenders: containers under a real dockerd, on a network of `switch
//! docker-plugin` against Docker's own bridge network with its defaults (the userland proxy
//! on) and with `"userland-proxy": false`: how long `docker run -d` takes until the container
//! answers a ping from the host, starts at once, and a published port (`-p`) reached from
//! outside through an uplink.
//!
//! The environment is this run's own and leaves the machine's Docker alone: a private dockerd
//! of the container-env crate (the Docker tests' environment: its data root, exec root,
//! socket and configuration, iptables on as users run it), busybox-static imported as the
//! image, and the driver served by this binary on a socket of its own name. The userland
//! proxy is a daemon setting: the daemon restarts (untimed) with the other configuration when
//! a turn needs it. The directory has a fixed name, so `switch bench`'s clean-up finds what a
//! killed run left; its ledger lists the host objects the networks make (outside namespaces,
//! uplinks, bridges, the switch), and the host state dockerd changes (ip_forward, the FORWARD
//! policy, its chains, br_netfilter's sysctls) is recorded before the daemon first starts and
//! given back at the end.
use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use container_env::{
    command::wait_until,
    daemon,
    docker::{self, PLUGIN_DIR, WATCH},
    host::HostState,
    iptables,
    ledger::{self, Owned, own},
};
use indicatif::ProgressBar;
use tokio::process::{Child, Command};

use super::{Comparison, Options, Series, forward, output, podman::percentile, report::MetricReport, run_quiet, tools};
use crate::{
    error::{Error, Result},
    sys::netns,
};

/// The contenders, in the order they are measured in each round; the second and third are
/// the baselines (Docker's bridge with its defaults, and without its userland proxy).
pub const CONTENDERS: [&str; 3] = ["docker-switch", "docker-bridge", "docker-bridge-no-proxy"];
/// `--only` name for all three.
pub const ALIAS: &str = "docker";
/// Docker's default network: the baseline of the targets.
pub const BASELINE: &str = CONTENDERS[1];
const BASELINES: [&str; 2] = [CONTENDERS[1], CONTENDERS[2]];

/// The image every container runs: busybox (`PATH=/bin`).
const IMAGE: &str = "dkb-busybox";
/// The driver's name (its socket is `PLUGIN_DIR/dkbsw.sock`).
const DRIVER: &str = "dkbsw";
/// Prefix of every container name.
const CONTAINER: &str = "dkb-";
/// Port of the connection-rate server in the published-port containers.
const CONN_PORT: u16 = 16000;
/// Starts at once, at most (the 20).
const AT_ONCE: usize = 20;
/// The host record of the run, in its directory.
const HOST_RECORD: &str = "host.json";
/// br_netfilter's sysctls, which Docker's bridge driver turns on (recorded in the directory).
const BRIDGE_NF: [&str; 2] =
    ["/proc/sys/net/bridge/bridge-nf-call-iptables", "/proc/sys/net/bridge/bridge-nf-call-ip6tables"];
const BRIDGE_NF_RECORD: &str = "bridge-nf";

/// The Docker comparison.
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

/// The Docker comparison's metrics: (id, unit, larger is better).
const METRICS: [(&str, &str, bool); 6] = [
    ("docker_start_p50", "ms", false),
    ("docker_start_p99", "ms", false),
    ("docker_parallel", "s", false),
    ("docker_parallel_failed", "starts", false),
    ("docker_port_conn", "kconn/s", true),
    ("docker_port_tcp", "Gbit/s", true),
];

/// Samples by metric (in `METRICS` order), then by network.
type DockerSeries = Vec<Vec<Series>>;

/// Containers started at once in a run of `opts`.
fn at_once(opts: &Options) -> usize {
    opts.pod_parallel.min(AT_ONCE)
}

/// The three networks interleaved per round: start to the first answered ping (starts one
/// after another), starts at once (wall time and failures), and a published port reached from
/// outside through an uplink. What fails is reported as not measured; the environment is
/// removed and the host given back at the end, also after a failure.
async fn measure(opts: &Options, bar: &ProgressBar) -> Vec<MetricReport> {
    let nets = nets();
    bar.set_message("docker: setting up its daemon and driver");
    let measured = match Env::setup().await {
        Ok(mut env) => {
            bar.inc(1);
            let s = measure_rounds(opts, bar, &nets, &mut env).await;
            bar.set_message("docker: removing its containers and networks");
            env.teardown(&nets).await;
            s
        }
        Err(e) => {
            bar.inc(1);
            Err(e)
        }
    };
    remove().await;
    bar.inc(1);
    let series = measured.unwrap_or_else(|e| {
        bar.println(format!("docker: not measured: {e}"));
        let failed = Series { error: Some(e.to_string()), ..Series::default() };
        vec![vec![failed; nets.len()]; METRICS.len()]
    });
    let starts = opts.pod_starts;
    let titles = [
        format!(
            "docker run -d until the container answers a ping from the host, p50 of {starts} starts one after another"
        ),
        format!("The same, p99 of {starts} starts"),
        format!("{} docker run -d at once (wall time)", at_once(opts)),
        format!("Failed starts of {} at once", at_once(opts)),
        "New TCP connections to a published port (-p) from outside through an uplink (32 in flight)".to_owned(),
        "TCP stream to a published port (-p) from outside through an uplink (iperf3, 1 stream)".to_owned(),
    ];
    METRICS
        .iter()
        .zip(titles)
        .zip(series)
        .map(|(((id, unit, higher), title), s)| {
            let rows = nets.iter().map(|n| n.name.to_owned()).zip(s).collect();
            MetricReport::new(id, &title, unit, *higher, "", &BASELINES, rows)
        })
        .collect()
}

/// Makes the networks and measures every round.
async fn measure_rounds(opts: &Options, bar: &ProgressBar, nets: &[Net], env: &mut Env) -> Result<DockerSeries> {
    let mut s = vec![vec![Series::default(); nets.len()]; METRICS.len()];
    for net in nets {
        bar.set_message(format!("docker: making {}", net.name));
        env.network(net).await?;
        env.warm_up(net).await?;
    }
    for round in 1..=opts.rounds {
        for (i, net) in nets.iter().enumerate() {
            let step = Step { opts, bar, round, net, i };
            if let Some(proxy) = net.proxy {
                step.show(format!("restarting dockerd with the userland proxy {}", if proxy { "on" } else { "off" }));
                env.proxy(proxy).await?;
            }
            step.starts(env, &mut s).await;
            step.at_once(env, &mut s).await;
            step.published_port(env, &mut s).await;
        }
    }
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
    async fn starts(&self, env: &Env, s: &mut DockerSeries) {
        let (net, i, bar) = (self.net, self.i, self.bar);
        self.show(format!("{} docker starts", self.opts.pod_starts));
        if s[0][i].error.is_none() {
            let r = env.starts(net, self.opts.pod_starts).await;
            let p = |q| r.as_ref().map(|ms| percentile(ms, q)).map_err(|e| Error::Command(e.to_string()));
            s[0][i].record(p(50.0), net.name, bar);
            s[1][i].record(p(99.0), net.name, bar);
        }
        bar.inc(1);
    }

    /// Starts at once: the wall time and how many failed.
    async fn at_once(&self, env: &Env, s: &mut DockerSeries) {
        let (net, i, bar, n) = (self.net, self.i, self.bar, at_once(self.opts));
        self.show(format!("{n} docker starts at once"));
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

    /// New connections and a TCP stream to a published port from outside, to a server
    /// container started for the turn (its network namespace may not outlive a daemon
    /// restart) and removed after it.
    async fn published_port(&self, env: &Env, s: &mut DockerSeries) {
        let (net, i, bar, secs) = (self.net, self.i, self.bar, self.opts.secs);
        self.show("connections and TCP to a published port".into());
        if s[4][i].error.is_none() || s[5][i].error.is_none() {
            let served = env.serve(net).await;
            let (client, iperf, conn) = net.client();
            let ok = |r: &Result<Served>| r.as_ref().map(drop).map_err(|e| Error::Command(e.to_string()));
            if s[4][i].error.is_none() {
                let rate = match ok(&served) {
                    Ok(()) => forward::connection_rate(&client, conn, secs).await,
                    Err(e) => Err(e),
                };
                s[4][i].record(rate.map(|r| r / 1e3), &format!("connections to {}", net.name), bar);
            }
            if s[5][i].error.is_none() {
                let bps = match ok(&served) {
                    Ok(()) => tools::tcp_stream(&client, &iperf.ip().to_string(), iperf.port(), secs).await,
                    Err(e) => Err(e),
                };
                s[5][i].record(bps.map(|(bps, _)| bps / 1e9), &format!("TCP to {}", net.name), bar);
            }
            drop(served);
            if let Err(e) = env.unserve(net).await {
                bar.println(format!("{}: removing the published-port server: {e}", net.name));
            }
        }
        bar.inc(1);
    }
}

/// The run's directory (fixed, so a later run's clean-up finds what a killed one left).
fn dir() -> PathBuf {
    std::env::temp_dir().join("switch-bench-docker")
}

/// One network under test, numbered `n`: containers on 10.195.N.0/24, its outside client at
/// 10.196.N.2 behind uplink `dkbuN` (10.196.N.1).
pub struct Net {
    /// Contender name in reports.
    pub name: &'static str,
    n: u8,
    /// Docker's bridge with the userland proxy on or off; `None`: the switch's driver.
    proxy: Option<bool>,
}

impl Net {
    fn network(&self) -> String {
        format!("dkbn{}", self.n)
    }
    /// Docker's bridge of a bridge network (named, so a killed run's is found).
    fn bridge(&self) -> String {
        format!("dkbbr{}", self.n)
    }
    fn outside(&self) -> String {
        format!("dkbo{}", self.n)
    }
    fn uplink(&self) -> String {
        format!("dkbu{}", self.n)
    }
    fn uplink_ip(&self) -> String {
        format!("10.196.{}.1", self.n)
    }
    /// Address of start number `i` (sequential starts ask for theirs, so the ping needs no
    /// `docker inspect`).
    fn address(&self, i: usize) -> String {
        format!("10.195.{}.{}", self.n, 10 + i)
    }
    /// Address of the published-port server (outside what the sequential starts use).
    fn server_ip(&self) -> String {
        format!("10.195.{}.250", self.n)
    }
    /// The name the server's network namespace is given in /run/netns (for the tools).
    fn server_ns(&self) -> String {
        format!("dkbs{}", self.n)
    }
    fn server(&self) -> String {
        format!("{CONTAINER}web{}", self.n)
    }
    /// Host ports published to the server's iperf3 (5201) and connection-rate server.
    fn host_ports(&self) -> (u16, u16) {
        (15230 + u16::from(self.n), 16030 + u16::from(self.n))
    }

    /// `docker network create` arguments.
    fn create_args(&self) -> Vec<String> {
        let subnet = format!("10.195.{}.0/24", self.n);
        let mut a: Vec<String> = ["network", "create", "--subnet", &subnet].map(String::from).to_vec();
        match self.proxy {
            None => a.extend(["-d".into(), DRIVER.into(), "-o".into(), format!("uplink={}", self.uplink())]),
            Some(_) => a.extend(["-o".into(), format!("com.docker.network.bridge.name={}", self.bridge())]),
        }
        a.push(self.network());
        a
    }

    /// The outside client of the published ports, and where it connects: (namespace,
    /// uplink address:iperf port, uplink address:connection port).
    fn client(&self) -> (String, std::net::SocketAddr, std::net::SocketAddr) {
        let (iperf, conn) = self.host_ports();
        let at = |p: u16| format!("{}:{p}", self.uplink_ip()).parse().expect("address");
        (self.outside(), at(iperf), at(conn))
    }
}

/// The three networks.
pub fn nets() -> [Net; 3] {
    [
        Net { name: CONTENDERS[0], n: 1, proxy: None },
        Net { name: CONTENDERS[1], n: 2, proxy: Some(true) },
        Net { name: CONTENDERS[2], n: 3, proxy: Some(false) },
    ]
}

/// Runs `f` (container-env's blocking calls) off the tokio workers, its error as the bench's.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> container_env::Result<T> + Send + 'static) -> Result<T> {
    crate::sys::blocking(move || f().map_err(|e| Error::Command(e.to_string()))).await
}

async fn ip(args: &[&str]) -> Result<()> {
    run_quiet("ip", args).await
}

/// The run's dockerd and driver.
pub struct Env {
    env: Option<docker::Env>,
    plugin: Option<std::process::Child>,
    /// Whether the daemon runs with its userland proxy.
    proxy: bool,
}

impl Env {
    /// Sets the environment up (after removing what a killed run left): records the host and
    /// what the networks will make, starts the driver and the daemon, imports the image and
    /// builds the outside namespaces and uplinks.
    pub async fn setup() -> Result<Self> {
        remove().await;
        let exe = std::env::current_exe().map_err(|e| Error::Command(format!("finding the switch binary: {e}")))?;
        if let Some(why) = docker::unavailable() {
            return Err(Error::Command(format!("Docker cannot run here: {why}")));
        }
        let (env, plugin) = blocking(move || {
            let dir = dir();
            std::fs::create_dir_all(&dir).map_err(container_env::Error::io("creating the bench's directory"))?;
            HostState::now(&WATCH, None).save(&dir.join(HOST_RECORD))?;
            let nf: Vec<String> = BRIDGE_NF.iter().map(|p| std::fs::read_to_string(p).unwrap_or_default()).collect();
            std::fs::write(dir.join(BRIDGE_NF_RECORD), nf.concat()).map_err(container_env::Error::io("recording"))?;
            for net in nets() {
                own(&dir, Owned::Netns, &net.outside())?;
                own(&dir, Owned::Link, &net.uplink())?;
                own(&dir, Owned::Netns, &net.server_ns())?;
                if net.proxy.is_some() {
                    own(&dir, Owned::Link, &net.bridge())?;
                }
            }
            let mut env = docker::Env::create(&dir.join("env"))?;
            let plugin = start_plugin(&exe, &env)?;
            env.start()?;
            env.import_busybox(IMAGE)?;
            Ok((env, plugin))
        })
        .await?;
        let env = Self { env: Some(env), plugin: Some(plugin), proxy: true };
        for net in nets() {
            build_outside(&net).await?;
        }
        Ok(env)
    }

    fn env(&self) -> &docker::Env {
        self.env.as_ref().expect("the environment is up until its tear-down")
    }

    /// `docker ARGS`; stdout.
    async fn docker(&self, args: &[&str]) -> Result<String> {
        let out = Command::from(self.env().command(args))
            .output()
            .await
            .map_err(|e| Error::Command(format!("running docker: {e}")))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(Error::Command(format!("docker {} failed: {}", args.join(" "), err.trim())));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Makes `net`'s Docker network (the driver's switch recorded in the ledger once Docker
    /// named it).
    async fn network(&self, net: &Net) -> Result<()> {
        let args = net.create_args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let id = self.docker(&args).await?;
        if net.proxy.is_none() {
            let switch = format!("dk-{}", id.trim().get(..12).unwrap_or_default());
            blocking(move || own(&dir(), Owned::Switch, &switch)).await?;
        }
        Ok(())
    }

    /// Restarts the daemon with its userland proxy on or off, unless it runs so already.
    async fn proxy(&mut self, on: bool) -> Result<()> {
        if self.proxy == on {
            return Ok(());
        }
        let mut env = self.env.take().expect("the environment is up");
        let (env, r) = tokio::task::spawn_blocking(move || {
            env.stop(30);
            let r = env.configure(if on { "{}\n" } else { "{\"userland-proxy\": false}\n" }).and_then(|()| env.start());
            (env, r)
        })
        .await
        .map_err(|e| Error::Command(format!("internal task failed: {e}")))?;
        self.env = Some(env);
        r.map_err(|e| Error::Command(e.to_string()))?;
        self.proxy = on;
        Ok(())
    }

    /// `docker run -d` of a container that sleeps, on `net`; `extra` before the image.
    async fn run(&self, net: &Net, name: &str, extra: &[&str]) -> Result<()> {
        let network = net.network();
        let mut args = vec!["run", "-d", "--name", name, "--network", &network];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[IMAGE, "sleep", "86400"]);
        self.docker(&args).await.map(drop)
    }

    /// Removes containers `names` (SIGKILL; gone already is fine).
    async fn rm(&self, names: &[String]) -> Result<()> {
        let mut args = vec!["rm", "-f"];
        args.extend(names.iter().map(String::as_str));
        match self.docker(&args).await {
            Err(e) if !e.to_string().contains("No such container") => Err(e),
            _ => Ok(()),
        }
    }

    /// One untimed start and removal: brings the network up (the switch's programs are
    /// warm, Docker's bridge is made), so rounds measure a container's start.
    async fn warm_up(&self, net: &Net) -> Result<()> {
        let name = format!("{CONTAINER}warm{}", net.n);
        let started = self.run(net, &name, &[]).await;
        self.rm(&[name]).await?;
        started
    }

    /// `starts` containers one after another, each timed from the start of `docker run -d` to
    /// the first ping from the host it answers (pinged every 10 ms once `docker run` returned);
    /// removed afterwards, untimed. Each start's time in ms.
    async fn starts(&self, net: &Net, starts: usize) -> Result<Vec<f64>> {
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

    /// `n` containers started at once (each `docker run -d` its own process): the wall time
    /// in s until the last returned, and how many failed (with the first failure's message).
    async fn parallel(&self, net: &Net, n: usize) -> Result<(f64, usize, Option<String>)> {
        let names: Vec<String> = (0..n).map(|i| format!("{CONTAINER}p{}-{i}", net.n)).collect();
        let start = Instant::now();
        let results = futures::future::join_all(names.iter().map(|name| self.run(net, name, &[]))).await;
        let wall = start.elapsed().as_secs_f64();
        let failed: Vec<String> = results.into_iter().filter_map(|r| r.err().map(|e| e.to_string())).collect();
        self.rm(&names).await?;
        Ok((wall, failed.len(), failed.into_iter().next()))
    }

    /// Starts `net`'s published-port server: a container publishing two host ports, its
    /// network namespace named in /run/netns, with iperf3 (and sockperf) and the
    /// connection-rate server running in it.
    async fn serve(&self, net: &Net) -> Result<Served> {
        let (name, ns, addr) = (net.server(), net.server_ns(), net.server_ip());
        let (iperf, conn) = net.host_ports();
        let (p1, p2) = (format!("{iperf}:5201"), format!("{conn}:{CONN_PORT}"));
        self.run(net, &name, &["--ip", &addr, "-p", &p1, "-p", &p2]).await?;
        let pid = self.docker(&["inspect", "-f", "{{.State.Pid}}", &name]).await?;
        ip(&["netns", "attach", &ns, pid.trim()]).await?;
        let at = format!("{addr}:{CONN_PORT}").parse().expect("address");
        Ok(Served { _tools: tools::start_servers(&ns, &addr)?, _conn: forward::accept_server(&ns, at) })
    }

    /// Removes `net`'s published-port server and its namespace's name.
    async fn unserve(&self, net: &Net) -> Result<()> {
        if Path::new("/run/netns").join(net.server_ns()).exists() {
            ip(&["netns", "del", &net.server_ns()]).await?;
        }
        self.rm(&[net.server()]).await
    }

    /// Removes the containers and the networks through Docker (the driver removes its switch
    /// and rules, Docker its bridges and theirs) and stops the driver and the daemon; what is
    /// left, [`remove`] removes.
    async fn teardown(mut self, nets: &[Net]) {
        if let Ok(all) = self.docker(&["ps", "-aq"]).await {
            let ids: Vec<String> = all.lines().map(str::to_owned).collect();
            if !ids.is_empty() {
                let _ = self.rm(&ids).await;
            }
        }
        for net in nets {
            let _ = ip(&["netns", "del", &net.server_ns()]).await;
            // Docker releases removed containers' endpoints in the background.
            for _ in 0..20 {
                match self.docker(&["network", "rm", &net.network()]).await {
                    Err(e) if !e.to_string().contains("No such network") => {
                        tokio::time::sleep(Duration::from_millis(250)).await
                    }
                    _ => break,
                }
            }
        }
        let (mut env, plugin) = (self.env.take(), self.plugin.take());
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(env) = env.as_mut() {
                env.stop(30);
            }
            stop_plugin(plugin);
        })
        .await;
    }
}

/// Starts `switch docker-plugin` serving [`DRIVER`] for `env`'s daemon (its records in the
/// bench's directory) and waits until it serves.
fn start_plugin(exe: &Path, env: &docker::Env) -> container_env::Result<std::process::Child> {
    let socket = Path::new(PLUGIN_DIR).join(format!("{DRIVER}.sock"));
    let log = std::fs::File::create(dir().join("plugin.log")).map_err(container_env::Error::io("plugin.log"))?;
    let child = std::process::Command::new(exe)
        .arg("docker-plugin")
        .arg("--socket")
        .arg(&socket)
        .arg("--data-dir")
        .arg(dir().join("driver"))
        .arg("--docker-host")
        .arg(env.host())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(container_env::Error::io("starting switch docker-plugin"))?;
    if !wait_until(Duration::from_secs(10), || std::os::unix::net::UnixStream::connect(&socket).is_ok()) {
        stop_plugin(Some(child));
        let log = std::fs::read_to_string(dir().join("plugin.log")).unwrap_or_default();
        let stderr = log.trim().to_owned();
        return Err(container_env::Error::Failed { command: "switch docker-plugin".into(), stderr });
    }
    Ok(child)
}

/// Stops the driver (SIGTERM: it removes its socket), SIGKILL if it does not go.
fn stop_plugin(plugin: Option<std::process::Child>) {
    let Some(mut child) = plugin else { return };
    // SAFETY: signals the driver process this run started and has not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    if !wait_until(Duration::from_secs(10), || child.try_wait().ok().flatten().is_some()) {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The outside namespace of `net` (the client of its published ports) and its uplink.
async fn build_outside(net: &Net) -> Result<()> {
    let (ns, uplink, n) = (net.outside(), net.uplink(), net.n);
    netns::create(&ns).await?;
    ip(&["link", "add", &uplink, "type", "veth", "peer", "name", "eth0", "netns", &ns]).await?;
    ip(&["addr", "add", &format!("{}/24", net.uplink_ip()), "dev", &uplink]).await?;
    ip(&["link", "set", &uplink, "up"]).await?;
    ip(&["-n", &ns, "addr", "add", &format!("10.196.{n}.2/24"), "dev", "eth0"]).await?;
    ip(&["-n", &ns, "link", "set", "eth0", "up"]).await?;
    ip(&["-n", &ns, "link", "set", "lo", "up"]).await?;
    ip(&["-n", &ns, "route", "add", "default", "via", &net.uplink_ip()]).await
}

/// The servers behind a published port; dropping it stops them.
pub struct Served {
    _tools: Vec<Child>,
    _conn: tokio::sync::watch::Sender<()>,
}

/// Removes everything the Docker contenders made (this run's or a killed one's: the daemon,
/// its containers and the driver are processes naming the directory), the rules Docker made
/// for its bridges and the driver for its switch, what the ledger lists, and gives the host
/// back as recorded. Nothing there is fine.
fn remove_blocking() {
    let dir = dir();
    let Ok(exe) = std::env::current_exe() else { return };
    if !dir.exists() {
        return;
    }
    daemon::kill_with_children(&daemon::processes_of(&dir));
    for left in docker::remove_at(&dir.join("env")) {
        tracing::warn!("docker bench: {left}");
    }
    let _ = std::fs::remove_file(Path::new(PLUGIN_DIR).join(format!("{DRIVER}.sock")));
    for table in ["nat", "filter"] {
        for rule in iptables::rules_with(table, "dkbbr") {
            iptables::delete(table, &rule);
        }
    }
    for sw in ledger::owned(&dir, Owned::Switch) {
        for rule in iptables::rules_with("filter", &format!("network {sw}\"")) {
            iptables::delete("filter", &rule);
        }
        remove_endpoint_records(sw.trim_start_matches("dk-"));
    }
    for left in ledger::remove_owned(&dir, &exe, &[]) {
        tracing::warn!("docker bench: {left}");
    }
    if let Ok(nf) = std::fs::read_to_string(dir.join(BRIDGE_NF_RECORD)) {
        for (path, value) in BRIDGE_NF.iter().zip(nf.lines()) {
            let _ = std::fs::write(path, value);
        }
    }
    if let Some(host) = HostState::read(&dir.join(HOST_RECORD)) {
        for e in host.give_back().errors {
            tracing::warn!("docker bench: {e}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Removes the driver's endpoint records (`/run/switch/docker/ID.json`) of the network whose
/// ID starts with `id`: a killed daemon never called DeleteEndpoint for them.
fn remove_endpoint_records(id: &str) {
    let dir = crate::sys::host::state_dir().join("docker");
    for e in std::fs::read_dir(&dir).into_iter().flatten().filter_map(|e| e.ok()) {
        let record: Option<serde_json::Value> =
            std::fs::read(e.path()).ok().and_then(|b| serde_json::from_slice(&b).ok());
        if !id.is_empty() && record.is_some_and(|r| r["network"].as_str().is_some_and(|n| n.starts_with(id))) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// [`remove_blocking`] off the async workers.
pub async fn remove() {
    let _ = tokio::task::spawn_blocking(remove_blocking).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_networks() {
        let [ours, proxy, no_proxy] = nets();
        let args = |n: &Net| n.create_args().join(" ");
        assert_eq!(args(&ours), "network create --subnet 10.195.1.0/24 -d dkbsw -o uplink=dkbu1 dkbn1");
        assert_eq!(
            args(&proxy),
            "network create --subnet 10.195.2.0/24 -o com.docker.network.bridge.name=dkbbr2 dkbn2"
        );
        assert_eq!(no_proxy.proxy, Some(false));
        // Distinct host ports: Docker's DNAT rules answer on every local address.
        let ports: std::collections::BTreeSet<u16> =
            nets().iter().flat_map(|n| [n.host_ports().0, n.host_ports().1]).collect();
        assert_eq!(ports.len(), 6);
    }
}
