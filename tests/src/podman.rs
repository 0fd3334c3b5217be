//! A podman test environment that never touches the machine's own podman set-up.
//!
//! Container hosts connect containers through CNI plugins, so the project's CNI plugin has to
//! be tested under a real runtime. Every [`Podman`] is a podman environment of the
//! container-env crate (the bench's is the same; see container-env/src/podman.rs for what it
//! holds and why) in a temporary directory of its own, with the CNI plugin directories
//! `[the caller's, /usr/lib/cni]`, so a plugin built by the workspace is found before the
//! reference plugins: `podman ps -a` shows only its containers, so tear-down can remove all of
//! them and check that none is left; host-local's `dataDir` is in it, so reservations can be
//! checked.
//!
//! The image is busybox-static's root file system, imported once per test process into a
//! read-only image store (an environment of its own) that every environment lists as an
//! additional image store (there is no registry, and one import per test would cost half a
//! second each).
//!
//! Tear-down (on drop, also when the test panicked) removes every container, checks what they
//! leave behind (network namespaces, veths, IPAM reservations, iptables rules of the networks),
//! removes what the environment's ledger lists (the networks' host interfaces: the bridge
//! plugin never deletes its bridge; switch-cni's switches, uplinks, namespaces), the conflists
//! and the directory, and fails the test if anything was left. The host-wide state the
//! reference plugins change (`net.ipv4.ip_forward` and every interface's `forwarding`,
//! portmap's top-level chains and nat tables, podman's built-in directories) is recorded before
//! the first environment on the machine and given back when the last one goes (test processes
//! share one record; see container-env/src/host.rs). What a killed test process left
//! (containers, interfaces, directories, the host state) is removed by the next one.
//!
//! ip_forward is machine-wide: other programs that need a particular value (the integration
//! tests of forwarding, a benchmark) must not run at the same time as these tests.
use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::{Mutex, OnceLock, atomic::AtomicU32},
    time::Instant,
};

use container_env::{
    cni,
    host::{self, GivenBack, Shared},
    iptables,
    ledger::{Owned, own},
    podman::{self, Env, WATCH},
    workdir,
};

use crate::{Run, Value, host};

/// The image every test container runs: busybox (`PATH=/bin`, `CMD /bin/sh`).
pub const IMAGE: &str = "localhost/switch-test-busybox";

/// Where every environment's directory lives: `switch-podman-PID-N` (and `-image` for the
/// process's image store) under the temporary directory; also the prefix of the machine-wide
/// host record.
const DIR_PREFIX: &str = "switch-podman-";

static ENVS: AtomicU32 = AtomicU32::new(0);

/// The machine-wide record of the host the environments change.
static HOST: Shared = Shared::new(DIR_PREFIX, WATCH);

/// Locks `m`, also after a panicking test poisoned it (tear-down must still run).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `cmd`, returning its result (never panics on a non-zero exit).
fn run_cmd(cmd: &mut Command) -> Run {
    cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}")).into()
}

/// Runs `sh -c script` on the host.
pub fn sh(script: &str) -> Run {
    run_cmd(Command::new("sh").args(["-c", script]))
}

// ---------------------------------------------------------------------------------------------
// The process's image store.

static IMAGE_STORE: OnceLock<PathBuf> = OnceLock::new();

/// `WATCH`'s directories as they were before this process ran podman the first time (the
/// image import runs before the first environment registers with the host record).
static DIRS_BEFORE: OnceLock<BTreeSet<PathBuf>> = OnceLock::new();

/// Removes the image store when the test process exits (after every test and its environment).
extern "C" fn remove_image_store() {
    if let Some(dir) = IMAGE_STORE.get() {
        let _ = fs::remove_dir_all(dir);
    }
}

/// The process's image store with [`IMAGE`] in it, made on first use (after removing what
/// killed test processes left).
fn image_store() -> &'static Path {
    IMAGE_STORE.get_or_init(|| {
        DIRS_BEFORE.get_or_init(|| host::existing_dirs(WATCH.dirs));
        for dir in podman::sweep_stale(DIR_PREFIX, &crate::switch_bin()) {
            eprintln!("podman: removed {} left by a killed test process", dir.display());
        }
        let started = Instant::now();
        let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{}-image", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let env = Env::create(&dir, &[Path::new("/usr/lib/cni")], None).unwrap_or_else(|e| panic!("{e}"));
        env.import_busybox(IMAGE).unwrap_or_else(|e| panic!("{e}"));
        // SAFETY: registers a plain function without arguments; it only removes files.
        unsafe { libc::atexit(remove_image_store) };
        eprintln!("podman: image {IMAGE} imported into {} in {:?}", dir.display(), started.elapsed());
        dir
    })
}

/// Prints what giving the host back did; returns what it could not give back.
fn given_back(done: GivenBack) -> Vec<String> {
    for note in &done.notes {
        eprintln!("podman: {note}");
    }
    done.errors
}

/// Registers an environment of this process with the machine-wide host record.
fn host_acquire() {
    let dirs = DIRS_BEFORE.get().expect("recorded with the image store").clone();
    if let Some(done) = HOST.acquire(dirs).unwrap_or_else(|e| panic!("{e}")) {
        let left = given_back(done);
        if !left.is_empty() {
            eprintln!("podman: after a killed test process: {left:?}");
        }
    }
}

/// Unregisters an environment; the last one on the machine gives the host back. Returns what
/// could not be given back.
fn host_release() -> Vec<String> {
    HOST.release().map_or_else(|e| vec![e.to_string()], given_back)
}

// ---------------------------------------------------------------------------------------------
// Networks.

/// Which network configuration a test's containers run on: the test bodies take one, so the
/// same checks run on every kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetKind {
    /// Podman's own reference chain, the baseline: `bridge` (isGateway, ipMasq, hairpinMode)
    /// with `host-local`, then `portmap` (capability `portMappings`).
    Bridge,
    /// This project's plugin, `switch-cni` (tc datapath), with `host-local`; published ports
    /// answer on the network's uplink.
    SwitchCni,
}

/// A network written into an environment's config directory.
#[derive(Clone, Debug)]
pub struct Network {
    /// Network name (`--network NAME`).
    pub name: String,
    /// What it is.
    pub kind: NetKind,
    /// `10.89.N.0/24`.
    pub subnet: String,
    /// The host's address on it, `10.89.N.1`, the containers' default gateway.
    pub gateway: String,
    /// A dual-stack network's IPv6 gateway, `fd00:89:N::1` (its subnet `fd00:89:N::/64`).
    pub gateway6: Option<String>,
    /// Host interface the network's containers hang off (the bridge), if it has one.
    pub bridge: Option<String>,
    /// The switch of a switch-cni network.
    pub switch: Option<String>,
    /// host-local's directory for this network (its `dataDir` + the network name).
    ipam_dir: PathBuf,
}

impl Network {
    fn net_prefix(&self) -> &str {
        self.subnet.rsplit_once('.').map(|(p, _)| p).unwrap_or(&self.subnet)
    }

    /// Whether `ip` is a host address of the subnet (not the network, gateway or broadcast).
    pub fn holds(&self, ip: &str) -> bool {
        ip.strip_prefix(self.net_prefix())
            .and_then(|h| h.strip_prefix('.')?.parse::<u8>().ok())
            .is_some_and(|h| (2..255).contains(&h))
    }

    /// The host ends of the containers' interfaces now attached to the network: one per
    /// running container, none left by a removed one.
    pub fn ports(&self) -> Vec<String> {
        let br = match (self.kind, &self.bridge, &self.switch) {
            (NetKind::Bridge, Some(br), _) => br,
            (NetKind::SwitchCni, _, Some(sw)) => return switch_ports(sw),
            _ => unreachable!("a bridge network has a bridge, a switch-cni network a switch"),
        };
        let out = run_cmd(Command::new("ip").args(["-o", "link", "show", "master", br]));
        let mut v: Vec<String> = out
            .stdout
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            .collect();
        v.sort();
        v
    }

    /// Addresses host-local has reserved on this network (a file per address).
    pub fn reservations(&self) -> Vec<String> {
        crate::host_local_reservations(&self.ipam_dir)
    }

    /// iptables rules (nat and filter) made for this network's containers (the reference
    /// plugins name the network in a comment on each).
    pub fn iptables_rules(&self) -> Vec<String> {
        iptables::network_rules(&self.name)
    }
}

/// `podman inspect` of a container, as far as the tests need it.
#[derive(Clone, Debug)]
pub struct Inspect {
    /// Full container ID (the plugins' CNI_CONTAINERID).
    pub id: String,
    /// Whether it runs.
    pub running: bool,
    /// Address on its network (empty when it has none, e.g. stopped).
    pub ip: String,
    /// Prefix length of that address.
    pub prefix_len: u64,
    /// MAC of its interface, as the plugin reported it.
    pub mac: String,
    /// Gateway podman reports.
    pub gateway: String,
    /// IPv6 address on its network, if it has one (`GlobalIPv6Address`).
    pub ip6: String,
    /// Path of its network namespace (empty when it has none).
    pub netns: String,
}

// ---------------------------------------------------------------------------------------------
// The environment.

/// One test's podman: configuration, storage, networks and containers of its own.
pub struct Podman {
    env: Env,
    /// Prefix of every container, network and interface name this environment makes.
    pub prefix: String,
    plugin_dir: PathBuf,
    containers: Mutex<BTreeSet<String>>,
    networks: Mutex<Vec<Network>>,
    /// Network namespaces its containers had (each must be gone after tear-down).
    netns: Mutex<BTreeSet<String>>,
}

impl Podman {
    /// A new environment whose CNI plugins are looked up in `plugin_dir`, then /usr/lib/cni.
    pub fn new(plugin_dir: &Path) -> Self {
        let store = image_store();
        let (dir, n) = workdir::next(DIR_PREFIX, &ENVS);
        let env =
            Env::create(&dir, &[plugin_dir, Path::new("/usr/lib/cni")], Some(store)).unwrap_or_else(|e| panic!("{e}"));
        host_acquire();
        Self {
            env,
            prefix: format!("p{:04}{:02}", std::process::id() % 10_000, n % 100),
            plugin_dir: plugin_dir.to_owned(),
            containers: Mutex::default(),
            networks: Mutex::default(),
            netns: Mutex::default(),
        }
    }

    /// The environment's directory.
    pub fn dir(&self) -> &Path {
        self.env.dir()
    }

    /// The directory searched first for CNI plugins.
    pub fn plugin_dir(&self) -> &Path {
        &self.plugin_dir
    }

    /// A name unique to this environment (`PREFIX-suffix`).
    pub fn name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.prefix)
    }

    /// `podman ARGS` under this environment's configuration.
    pub fn run(&self, args: &[&str]) -> Run {
        run_cmd(&mut self.env.command(args))
    }

    /// `podman ARGS`, asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(r.code, 0, "podman {args:?} failed ({}): {}{}", r.code, r.stdout, r.stderr);
        r.stdout
    }

    /// Writes network `name`'s conflist (`json` without its name: the name is set here) into
    /// the config directory; returns the file.
    pub fn write_conflist(&self, name: &str, json: &Value) -> PathBuf {
        let mut json = json.clone();
        json["name"] = Value::from(name);
        let path = self.dir().join("net.d").join(format!("{name}.conflist"));
        fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
        path
    }

    /// Records a host interface the test makes for this environment (a bridge of a network,
    /// an uplink): tear-down deletes it if it is still there, and so does the next test process
    /// if this one is killed.
    pub fn own_link(&self, link: &str) {
        self.own(Owned::Link, link);
    }

    /// A veth pair on the host as network `n`'s uplink (172.28.N.1/24 on one end), owned.
    fn own_uplink(&self, n: u8) -> String {
        let (a, b) = (format!("{}u{n}", self.prefix), format!("{}v{n}", self.prefix));
        self.own_link(&a);
        host("ip", &["link", "add", &a, "type", "veth", "peer", "name", &b]);
        host("ip", &["addr", "add", &format!("172.28.{n}.1/24"), "dev", &a]);
        host("ip", &["link", "set", &a, "up"]);
        host("ip", &["link", "set", &b, "up"]);
        a
    }

    /// Records a network namespace (in /run/netns) the test makes, as [`Podman::own_link`].
    pub fn own_netns(&self, ns: &str) {
        self.own(Owned::Netns, ns);
    }

    /// Records `name` in the environment's ledger (removed by tear-down, or by the next test
    /// process if this one is killed).
    fn own(&self, kind: Owned, name: &str) {
        own(self.dir(), kind, name).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Writes network number `n` of `kind` (subnet 10.89.N.0/24, distinct per test: host
    /// routes and bridges are host-wide) and returns it. A switch-cni network gets an uplink
    /// of its own (a veth pair on the host), so published ports never adopt the machine's
    /// default route.
    pub fn network(&self, kind: NetKind, n: u8) -> Network {
        self.network_on(kind, n, None)
    }

    /// `network`, with published ports answering on host interface `uplink` (switch-cni;
    /// bridge+portmap answers on every host address anyway).
    pub fn network_on(&self, kind: NetKind, n: u8, uplink: Option<&str>) -> Network {
        self.network_with(kind, n, uplink, false)
    }

    /// `network` with an IPv6 range too (`fd00:89:N::/64`, gateway `fd00:89:N::1`).
    pub fn network_dual(&self, kind: NetKind, n: u8) -> Network {
        self.network_with(kind, n, None, true)
    }

    fn network_with(&self, kind: NetKind, n: u8, uplink: Option<&str>, dual: bool) -> Network {
        let name = format!("{}n{n}", self.prefix);
        let subnet = format!("10.89.{n}.0/24");
        let gateway = format!("10.89.{n}.1");
        let ipam_data = self.dir().join("ipam");
        let gateway6 = dual.then(|| format!("fd00:89:{n}::1"));
        let ipam = match &gateway6 {
            Some(g6) => cni::host_local_dual(&ipam_data, (&subnet, &gateway), (&format!("fd00:89:{n}::/64"), g6)),
            None => cni::host_local(&ipam_data, &subnet, &gateway),
        };
        let switch = (kind == NetKind::SwitchCni).then(|| format!("{}s{n}", self.prefix));
        let bridge = (kind == NetKind::Bridge).then(|| format!("{}b{n}", self.prefix));
        let plugins = match (&bridge, &switch) {
            (Some(bridge), _) => cni::bridge_portmap(bridge, ipam),
            (_, Some(sw)) => cni::switch_cni(sw, &uplink.map_or_else(|| self.own_uplink(n), str::to_owned), ipam),
            _ => unreachable!("a network is a bridge or a switch-cni network"),
        };
        if let Some(sw) = &switch {
            self.own(Owned::Switch, sw);
        }
        if let Some(b) = &bridge {
            self.own_link(b);
        }
        // The reference plugins' rules name it.
        self.own(Owned::Network, &name);
        self.write_conflist(&name, &cni::conflist(&name, plugins));
        let net = Network { ipam_dir: ipam_data.join(&name), name, kind, subnet, gateway, gateway6, bridge, switch };
        lock(&self.networks).push(net.clone());
        net
    }

    /// `podman run -d --name PREFIX-name --network NETWORK EXTRA IMAGE CMD`; returns the name.
    ///
    /// The stop signal is SIGKILL: busybox as PID 1 has no SIGTERM handler, so the kernel
    /// drops SIGTERM and every stop would wait podman's 10 s before killing.
    pub fn run_detached(&self, name: &str, network: &str, extra: &[&str], cmd: &[&str]) -> String {
        let name = self.name(name);
        // Recorded first: a run that fails half-way may still have made the container.
        lock(&self.containers).insert(name.clone());
        let mut args = vec!["run", "-d", "--name", &name, "--network", network, "--stop-signal", "KILL"];
        args.extend_from_slice(extra);
        args.push(IMAGE);
        args.extend_from_slice(cmd);
        self.ok(&args);
        name
    }

    /// What podman reports about container `name` (its only network).
    pub fn inspect(&self, name: &str) -> Inspect {
        self.try_inspect(name).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_inspect(&self, name: &str) -> Result<Inspect, String> {
        let r = self.run(&["inspect", "--type", "container", name]);
        if r.code != 0 {
            return Err(format!("podman inspect {name} failed: {}{}", r.stdout, r.stderr));
        }
        let v: Value =
            serde_json::from_str(&r.stdout).map_err(|e| format!("podman inspect {name}: {e}: {}", r.stdout))?;
        let c = &v[0];
        let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let nets = c["NetworkSettings"]["Networks"].as_object().cloned().unwrap_or_default();
        if nets.len() > 1 {
            return Err(format!("{name} is on several networks: {nets:?}"));
        }
        let net = nets.values().next().cloned().unwrap_or(Value::Null);
        let i = Inspect {
            id: s(&c["Id"]),
            running: c["State"]["Running"].as_bool().unwrap_or(false),
            ip: s(&net["IPAddress"]),
            prefix_len: net["IPPrefixLen"].as_u64().unwrap_or(0),
            mac: s(&net["MacAddress"]),
            gateway: s(&net["Gateway"]),
            ip6: s(&net["GlobalIPv6Address"]),
            netns: s(&c["NetworkSettings"]["SandboxKey"]),
        };
        if !i.netns.is_empty() {
            lock(&self.netns).insert(i.netns.clone());
        }
        Ok(i)
    }

    /// `podman exec NAME CMD`.
    pub fn exec(&self, name: &str, cmd: &[&str]) -> Run {
        let mut args = vec!["exec", name];
        args.extend_from_slice(cmd);
        self.run(&args)
    }

    /// `podman rm -f NAME` (no stop timeout), asserting success.
    pub fn rm_f(&self, name: &str) {
        self.ok(&["rm", "--force", "--time", "0", name]);
        lock(&self.containers).remove(name);
    }

    /// Removes everything this environment made and returns what was left behind.
    fn teardown(&mut self) -> Vec<String> {
        let mut left = self.remove_containers();
        for ns in lock(&self.netns).iter() {
            if Path::new(ns).exists() {
                left.push(format!("network namespace {ns}"));
                let _ = run_cmd(Command::new("umount").arg(ns));
                let _ = fs::remove_file(ns);
            }
        }
        for net in lock(&self.networks).drain(..) {
            left.extend(net.leftovers());
        }
        // Then what the ledger lists (with the rules of the networks), the mounts and the
        // directory.
        left.extend(self.env.remove(&crate::switch_bin()));
        left
    }

    /// Removes every container in this storage (every one is this environment's, also one a
    /// failed run made), recording their namespaces first; returns complaints.
    fn remove_containers(&self) -> Vec<String> {
        let mut left = vec![];
        let names = self.env.containers();
        for n in &names {
            let _ = self.try_inspect(n);
        }
        if !names.is_empty() {
            let r = self.run(&["rm", "--all", "--force", "--time", "0"]);
            if r.code != 0 {
                left.push(format!("podman rm --all failed: {}{}", r.stdout, r.stderr));
            }
        }
        let remaining = self.env.containers();
        if !remaining.is_empty() {
            left.push(format!("containers: {}", remaining.join(" ")));
        }
        left
    }
}

impl Network {
    /// What the network's removed containers left: interfaces (deleted here), IPAM
    /// reservations and iptables rules (removed with the environment's ledger).
    fn leftovers(&self) -> Vec<String> {
        let mut left = vec![];
        let ports = self.ports();
        if !ports.is_empty() {
            left.push(format!("interfaces on {}: {ports:?}", self.name));
            for port in ports {
                let _ = run_cmd(Command::new("ip").args(["link", "del", &port]));
            }
        }
        let reserved = self.reservations();
        if !reserved.is_empty() {
            left.push(format!("IPAM reservations on {}: {reserved:?}", self.name));
        }
        let rules = self.iptables_rules();
        if !rules.is_empty() {
            left.push(format!("iptables rules of {}: {rules:?}", self.name));
        }
        left
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let mut left = self.teardown();
        left.extend(host_release());
        crate::report_leftovers(&format!("podman environment {}", self.prefix), &left);
    }
}

/// The host ends of the container ports of switch `sw` (`switch ports`).
fn switch_ports(sw: &str) -> Vec<String> {
    let r = run_cmd(Command::new(crate::switch_bin()).args(["ports", "--switch", sw, "--json"]));
    let rows: Value = serde_json::from_str(&r.stdout).unwrap_or(Value::Null);
    let mut v: Vec<String> = rows
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["kind"] == "adopted")
        .filter_map(|p| p["interface"].as_str().map(str::to_owned))
        .collect();
    v.sort();
    v
}
