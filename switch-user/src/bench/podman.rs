//! Podman contenders: containers under a real runtime, on a `switch-cni` network against
//! podman's own bridge + portmap network (both with `host-local`): how long `podman run -d`
//! takes until the container answers a ping, starts at once, and a published port (`-p`)
//! reached from outside through an uplink.
//!
//! The environment is this run's own and leaves the machine's podman alone: a directory with
//! a `containers.conf` (`CONTAINERS_CONF`) holding the settings that work on this machine kind
//! (see shared/notes/containers.md), its own storage (`CONTAINERS_STORAGE_CONF`), busybox-static
//! imported as the image (no registry), and its two conflists in its own network config
//! directory (never /etc/cni/net.d).
//!
//! The tests' podman harness (tests/src/podman.rs) writes its environments with the same
//! configuration writers ([`containers_conf`], [`storage_conf`]) and records the same
//! forwarding sysctls ([`forwarding_sysctls`]); the rest of it belongs to the test crate
//! (panicking checks, several test processes sharing one record of the host, leftover audits).
//!
//! The host-wide state the bridge plugin and portmap change (`net.ipv4.ip_forward`, which
//! flips every interface's `forwarding`, and portmap's top-level iptables chains), and the
//! built-in directories podman and libcni make whatever the configuration says, are recorded
//! in the directory before the first podman call and given back at the end, also by
//! `switch bench`'s clean-up after an interrupted or killed run (the directory has a fixed
//! name for that; one bench runs at a time).
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::Instant,
};

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::process::{Child, Command};

use super::{output, run_quiet};
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
/// Directories podman 4.3 and libcni create at their built-in locations even under this
/// configuration: removed at the end if the run made them.
const DEFAULT_DIRS: [&str; 4] = ["/var/lib/containers", "/run/containers", "/var/lib/cni", "/run/runc"];
/// Portmap's top-level chains, which it leaves behind after the last container.
const PORTMAP_CHAINS: [&str; 3] = ["CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ"];
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

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

    fn conflist(&self, plugin_ipam: serde_json::Value) -> serde_json::Value {
        let plugins = if self.switch_cni {
            json!([{
                "type": "switch-cni",
                "switch": self.switch(),
                // Published ports answer on this interface (the outside's way in).
                "uplink": self.uplink(),
                "capabilities": {"portMappings": true, "ips": true},
                "ipam": plugin_ipam,
            }])
        } else {
            // Podman's own recipe (what `podman network create` writes), with portmap.
            json!([
                {
                    "type": "bridge", "bridge": self.bridge(), "isGateway": true, "ipMasq": true,
                    "hairpinMode": true, "ipam": plugin_ipam,
                },
                {"type": "portmap", "capabilities": {"portMappings": true}},
            ])
        };
        json!({"cniVersion": "0.4.0", "name": self.network(), "plugins": plugins})
    }
}

/// The two networks.
pub fn nets() -> [Net; 2] {
    [Net { name: CONTENDERS[0], n: 2, switch_cni: true }, Net { name: CONTENDERS[1], n: 1, switch_cni: false }]
}

/// The host as it was before the first podman call.
#[derive(Serialize, Deserialize)]
struct HostState {
    /// ip_forward, all/accept_redirects and every interface's `forwarding`.
    sysctls: Vec<(PathBuf, String)>,
    /// Chains of the nat table.
    nat_chains: BTreeSet<String>,
    /// Which of `DEFAULT_DIRS` existed.
    dirs: BTreeSet<PathBuf>,
}

/// `net.ipv4.ip_forward`, `all/accept_redirects` (the kernel flips it with ip_forward) and every
/// interface's `forwarding` (ip_forward sets them all), as they are now: what the bridge plugin
/// changes when it turns forwarding on, and a podman environment gives back.
pub fn forwarding_sysctls() -> Vec<(PathBuf, String)> {
    let mut paths = vec![PathBuf::from(IP_FORWARD), PathBuf::from("/proc/sys/net/ipv4/conf/all/accept_redirects")];
    for e in std::fs::read_dir("/proc/sys/net/ipv4/conf").into_iter().flatten().filter_map(|e| e.ok()) {
        paths.push(e.path().join("forwarding"));
    }
    paths.into_iter().filter_map(|p| Some((p.clone(), std::fs::read_to_string(&p).ok()?.trim().to_owned()))).collect()
}

/// `iptables -t TABLE -S` rules (`-A ...` lines).
async fn iptables_rules(table: &str) -> Vec<String> {
    let out = output("iptables", &["-w", "-t", table, "-S"]).await.unwrap_or_default();
    out.lines().filter(|l| l.starts_with("-A ")).map(str::to_owned).collect()
}

async fn nat_chains() -> BTreeSet<String> {
    let out = output("iptables", &["-w", "-t", "nat", "-S"]).await.unwrap_or_default();
    out.lines()
        .filter_map(|l| l.strip_prefix("-N ").or_else(|| l.strip_prefix("-P ")))
        .map(|l| l.split(' ').next().unwrap_or(l).to_owned())
        .collect()
}

/// Deletes an `iptables -S` rule (through the shell: its comments are quoted as for one).
async fn iptables_delete(table: &str, rule: &str) {
    let rule = rule.strip_prefix("-A ").unwrap_or(rule);
    let _ = run_quiet("sh", &["-c", &format!("iptables -w -t {table} -D {rule}")]).await;
}

/// Removes chain `chain` of `table` with the rules jumping to it.
async fn iptables_remove_chain(table: &str, chain: &str) {
    let jump = format!("-j {chain}");
    for rule in iptables_rules(table).await {
        if rule.ends_with(&jump) || rule.contains(&format!("{jump} ")) {
            iptables_delete(table, &rule).await;
        }
    }
    let _ = run_quiet("iptables", &["-w", "-t", table, "-F", chain]).await;
    let _ = run_quiet("iptables", &["-w", "-t", table, "-X", chain]).await;
}

impl HostState {
    async fn now() -> Self {
        Self {
            sysctls: forwarding_sysctls(),
            nat_chains: nat_chains().await,
            dirs: DEFAULT_DIRS.iter().map(PathBuf::from).filter(|d| d.exists()).collect(),
        }
    }

    /// Gives the host back (after every container, network and interface is gone).
    async fn give_back(&self) {
        let saved = self.sysctls.iter().find(|(p, _)| p == Path::new(IP_FORWARD)).map(|(_, v)| v.as_str());
        let now = std::fs::read_to_string(IP_FORWARD).unwrap_or_default();
        // Writing ip_forward sets every interface's `forwarding`: put back each one recorded.
        if saved.is_some_and(|s| s != now.trim()) {
            for (p, v) in &self.sysctls {
                if std::fs::read_to_string(p).is_ok_and(|cur| cur.trim() != v) {
                    let _ = std::fs::write(p, v);
                }
            }
        }
        let in_use = iptables_rules("nat").await.iter().any(|r| r.starts_with("-A CNI-HOSTPORT-DNAT "));
        if !in_use && PORTMAP_CHAINS.iter().all(|c| !self.nat_chains.contains(*c)) {
            for c in PORTMAP_CHAINS {
                iptables_remove_chain("nat", c).await;
            }
        }
        for d in DEFAULT_DIRS.iter().map(PathBuf::from).filter(|d| d.exists() && !self.dirs.contains(d)) {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// A path as a TOML basic string (the paths written here are plain ASCII). The tests'
/// container harnesses write their configuration with it too.
pub fn toml_str(p: &Path) -> Result<String> {
    let s = p.to_string_lossy();
    if s.contains(['"', '\\']) || !s.is_ascii() {
        return Err(Error::Command(format!("{s}: not writable into a TOML file")));
    }
    Ok(format!("\"{s}\""))
}

/// The `containers.conf` of a podman environment rooted at `dir` that finds CNI plugins in
/// `plugin_dirs`, in order: the settings that work on this machine kind (see
/// shared/notes/containers.md). The bench's environment and the tests' (tests/src/podman.rs)
/// both use it.
pub fn containers_conf(dir: &Path, plugin_dirs: &[&Path]) -> Result<String> {
    let plugins: Vec<String> = plugin_dirs.iter().map(|d| toml_str(d)).collect::<Result<_>>()?;
    Ok(format!(
        r#"# Written by switch (its bench or its tests) for one podman environment; see
# shared/notes/containers.md.
[containers]
# No network unless --network says which: without it podman would bring up its own default
# network (bridge cni-podman0 on 10.88.0.0/16, with the firewall plugin's CNI-FORWARD chains),
# whatever `default_network` names.
netns = "none"
# The VM's hard limits (no CAP_SYS_RESOURCE to raise them): podman's default 1048576 fails.
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = {events}
# crun fails here: "cgroups in hybrid mode not supported".
runtime = "runc"
tmp_dir = {tmp}

[network]
network_backend = "cni"
network_config_dir = {netd}
cni_plugin_dirs = [{plugins}]
"#,
        events = toml_str(&dir.join("events.log"))?,
        tmp = toml_str(&dir.join("tmp"))?,
        netd = toml_str(&dir.join("net.d"))?,
        plugins = plugins.join(", "),
    ))
}

/// The `storage.conf` of a podman environment rooted at `dir`, reading images also from
/// `image_store` (the tests import their image once per process, into a store of its own).
pub fn storage_conf(dir: &Path, image_store: Option<&Path>) -> Result<String> {
    let extra = match image_store {
        Some(s) => format!("[storage.options]\nadditionalimagestores = [{}]\n", toml_str(&s.join("storage/root"))?),
        None => String::new(),
    };
    Ok(format!(
        "[storage]\ndriver = \"overlay\"\ngraphroot = {}\nrunroot = {}\n{extra}",
        toml_str(&dir.join("storage/root"))?,
        toml_str(&dir.join("storage/runroot"))?,
    ))
}

async fn ip(args: &[&str]) -> Result<()> {
    run_quiet("ip", args).await
}

fn io_err(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::Command(format!("{what}: {e}"))
}

/// The run's podman environment.
pub struct Env {
    dir: PathBuf,
}

impl Env {
    /// Sets the environment up (after removing what a killed run left): records the host,
    /// writes the configuration, imports the image, builds the outside namespaces and uplinks
    /// and writes the conflists.
    pub async fn setup() -> Result<Self> {
        remove().await;
        let dir = dir();
        for d in ["net.d", "ipam", "tmp", "storage/root", "storage/runroot", "rootfs/bin"] {
            std::fs::create_dir_all(dir.join(d)).map_err(io_err(format!("creating {}/{d}", dir.display())))?;
        }
        let env = Self { dir };
        let host = serde_json::to_vec(&HostState::now().await).expect("serialisable");
        std::fs::write(env.dir.join("host.json"), host).map_err(io_err("recording the host's state"))?;
        let exe = std::env::current_exe().map_err(io_err("finding the switch binary"))?;
        let plugins = exe.parent().unwrap_or(Path::new("/"));
        let conf = containers_conf(&env.dir, &[plugins, Path::new("/usr/lib/cni")])?;
        std::fs::write(env.dir.join("containers.conf"), conf).map_err(io_err("writing containers.conf"))?;
        std::fs::write(env.dir.join("storage.conf"), storage_conf(&env.dir, None)?)
            .map_err(io_err("writing storage.conf"))?;
        env.import_image().await?;
        for net in nets() {
            env.build_outside(&net).await?;
            let ipam = json!({
                "type": "host-local",
                "dataDir": env.dir.join("ipam"),
                "routes": [{"dst": "0.0.0.0/0"}],
                "ranges": [[{"subnet": format!("10.204.{}.0/24", net.n), "gateway": format!("10.204.{}.1", net.n)}]],
            });
            let path = env.dir.join("net.d").join(format!("{}.conflist", net.network()));
            std::fs::write(path, net.conflist(ipam).to_string()).map_err(io_err("writing a conflist"))?;
        }
        Ok(env)
    }

    /// busybox-static's binary and a link per applet, imported as `IMAGE`.
    async fn import_image(&self) -> Result<()> {
        let rootfs = self.dir.join("rootfs");
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
            .map_err(io_err("copying /bin/busybox (package busybox-static)"))?;
        let list = output("/bin/busybox", &["--list"]).await?;
        // The list names `busybox` itself: linking it would overwrite the binary.
        for applet in list.lines().filter(|a| !a.is_empty() && *a != "busybox") {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))
                .map_err(io_err(format!("linking {applet}")))?;
        }
        let tar = self.dir.join("rootfs.tar");
        let (rootfs_s, tar_s) = (rootfs.to_string_lossy(), tar.to_string_lossy());
        run_quiet("tar", &["-C", &rootfs_s, "-cf", &tar_s, "."]).await?;
        // Without `ENV PATH` nothing is found in the container.
        self.podman(&["import", "--change", r#"CMD ["/bin/sh"]"#, "--change", "ENV PATH=/bin", &tar_s, IMAGE]).await?;
        let _ = std::fs::remove_dir_all(&rootfs);
        let _ = std::fs::remove_file(&tar);
        Ok(())
    }

    async fn build_outside(&self, net: &Net) -> Result<()> {
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

    /// `podman ARGS` under this environment's configuration; stdout.
    async fn podman(&self, args: &[&str]) -> Result<String> {
        podman_in(&self.dir, args).await
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
        Ok(Served { _tools: super::tools::start_servers(&ns, &ip)?, _conn: super::forward::accept_server(&ns, addr) })
    }

    /// The outside client of `net`'s published ports, and where it connects: (namespace,
    /// uplink address:iperf port, uplink address:connection port).
    pub fn client(net: &Net) -> (String, std::net::SocketAddr, std::net::SocketAddr) {
        let (iperf, conn) = net.host_ports();
        let at = |p: u16| format!("{}:{p}", net.uplink_ip()).parse().expect("address");
        (net.outside(), at(iperf), at(conn))
    }
}

/// The servers behind a published port; dropping it stops them.
pub struct Served {
    _tools: Vec<Child>,
    _conn: tokio::sync::watch::Sender<()>,
}

async fn podman_in(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("podman")
        .args(args)
        .env("CONTAINERS_CONF", dir.join("containers.conf"))
        .env("CONTAINERS_STORAGE_CONF", dir.join("storage.conf"))
        .output()
        .await
        .map_err(|e| Error::Command(format!("running podman (install it, or run 'cargo xtask setup'): {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(Error::Command(format!("podman {} failed: {}", args.first().unwrap_or(&""), err.trim())));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
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
    let dir = dir();
    if !dir.exists() {
        return;
    }
    if dir.join("containers.conf").exists() {
        let _ = podman_in(&dir, &["rm", "--all", "--force", "--time", "0"]).await;
    }
    for net in nets() {
        // Rules a failed DEL left (the reference plugins name the network in a comment on
        // each), with the per-container chains they jump to.
        let needle = format!(r#"name: \"{}\""#, net.network());
        for table in ["nat", "filter"] {
            for rule in iptables_rules(table).await.into_iter().filter(|r| r.contains(&needle)) {
                iptables_delete(table, &rule).await;
                if let Some(chain) = rule.rsplit_once("-j ").map(|(_, c)| c.trim())
                    && chain.starts_with("CNI-")
                    && !PORTMAP_CHAINS.contains(&chain)
                {
                    iptables_remove_chain(table, chain).await;
                }
            }
        }
        // switch-cni's switch stays up after its last container; down gives back its sysctls.
        let _ = crate::controller::switch::down(&net.switch()).await;
        for link in [net.bridge(), net.uplink()] {
            let _ = run_quiet("ip", &["link", "del", &link]).await;
        }
        let _ = netns::delete(&net.outside());
    }
    unmount_below(&dir).await;
    let host: Option<HostState> =
        std::fs::read(dir.join("host.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
    if let Some(host) = host {
        host.give_back().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Unmounts what is mounted at or below `dir` (container storage's overlay mounts), deepest
/// first.
async fn unmount_below(dir: &Path) {
    let prefix = dir.to_string_lossy().into_owned();
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|p| p == &prefix || p.starts_with(&format!("{prefix}/")))
        .collect();
    mounts.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for m in mounts {
        let _ = run_quiet("umount", &["-l", &m]).await;
    }
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
    fn configuration_stays_in_the_run_directory() {
        let conf =
            containers_conf(Path::new("/tmp/x"), &[Path::new("/opt/switch"), Path::new("/usr/lib/cni")]).unwrap();
        assert!(conf.contains(r#"network_config_dir = "/tmp/x/net.d""#), "{conf}");
        assert!(conf.contains(r#"cni_plugin_dirs = ["/opt/switch", "/usr/lib/cni"]"#), "{conf}");
        assert!(toml_str(Path::new("/tmp/a\"b")).is_err());
        let storage = storage_conf(Path::new("/tmp/x"), Some(Path::new("/tmp/img"))).unwrap();
        assert!(storage.contains(r#"graphroot = "/tmp/x/storage/root""#), "{storage}");
        assert!(storage.contains(r#"additionalimagestores = ["/tmp/img/storage/root"]"#), "{storage}");
        assert!(!storage_conf(Path::new("/tmp/x"), None).unwrap().contains("additionalimagestores"));
        let [ours, theirs] = nets();
        assert_eq!(ours.conflist(json!({}))["plugins"][0]["uplink"], "benchpu2");
        assert_eq!(theirs.conflist(json!({}))["plugins"][1]["type"], "portmap");
    }
}
