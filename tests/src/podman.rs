//! A podman test environment that never touches the machine's own podman set-up.
//!
//! Container hosts connect containers through CNI plugins, so the project's CNI plugin has to
//! be tested under a real runtime. Podman's defaults do not work on this machine kind and
//! would mix the tests with whatever the machine runs, so every [`Podman`] has its own temporary
//! directory with:
//! - a test-only `containers.conf` (`CONTAINERS_CONF`) with the settings that work here (see
//!   `shared/notes/containers.md`): the CNI backend, runc (crun fails on hybrid cgroups), the
//!   cgroupfs manager and a file event log (no systemd), ulimits within the VM's hard limits,
//!   its own network config directory (never /etc/cni/net.d) and plugin directories
//!   `[the caller's, /usr/lib/cni]`, so a plugin built by the workspace is found before the
//!   reference plugins;
//! - its own container storage and libpod state (`CONTAINERS_STORAGE_CONF`): `podman ps -a`
//!   shows only this environment's containers, so tear-down can remove all of them and check
//!   that none is left, and no image or container lands in /var/lib/containers (podman 4.3
//!   still writes its blob-info cache there, and runc its state under /run/runc, and libcni
//!   its result cache under /var/lib/cni/results; none of them is configurable here);
//! - the networks' IPAM state (host-local's `dataDir`), so reservations can be checked;
//! - `netns = "none"`: a container started without `--network` gets no network, instead of
//!   podman's default one (a cni-podman0 bridge on 10.88.0.0/16 and the firewall plugin's
//!   chains, none of which the test would clean up).
//!
//! The image is busybox-static's root file system, imported once per test process into a
//! read-only image store that every environment lists as an additional image store (there is
//! no registry, and one import per test would cost half a second each).
//!
//! Tear-down (on drop, also when the test panicked) removes every container, checks what they
//! leave behind (network namespaces, veths, IPAM reservations, iptables rules of the networks),
//! removes the networks' host interfaces (the bridge plugin never deletes its bridge), the
//! conflists and the directory, and fails the test if anything was left. The host-wide state
//! the reference plugins change is given back when the last environment on the machine goes
//! (test processes coordinate through a file in the temporary directory):
//! `net.ipv4.ip_forward` (the bridge plugin turns it on, which also flips every interface's
//! `forwarding`) and portmap's top-level iptables chains when no port mapping uses them.
//! What a killed test process left (containers, interfaces, directories, the host state) is
//! removed by the next one.
//!
//! ip_forward is machine-wide: other programs that need a particular value (the integration
//! tests of forwarding, a benchmark) must not run at the same time as these tests.
use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use switch::{
    bench::podman as podman_env,
    sys::nat_tables::{self, Family},
};

use crate::{Run, Value, host, mounts_below};

/// The image every test container runs: busybox (`PATH=/bin`, `CMD /bin/sh`).
pub const IMAGE: &str = "localhost/switch-test-busybox";

/// Where every environment's directory lives: `switch-podman-PID-N` (and `-image` for the
/// process's image store) under the temporary directory.
const DIR_PREFIX: &str = "switch-podman-";

static ENVS: AtomicU32 = AtomicU32::new(0);

/// Files of an environment's directory listing the host interfaces and network namespaces
/// made for it, one a line.
const HOST_LINKS: &str = "host-links";
/// File listing the switches switch-cni networks of the environment brought up.
const HOST_SWITCHES: &str = "host-switches";
const HOST_NETNS: &str = "host-netns";

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

/// Polls `f` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A path as a TOML basic string (the paths written here are plain ASCII).
pub(crate) fn toml_str(p: &Path) -> String {
    podman_env::toml_str(p).unwrap_or_else(|e| panic!("{e}"))
}

/// `podman ARGS` with the configuration of the environment rooted at `dir`.
fn podman_cmd(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("podman");
    cmd.args(args)
        .env("CONTAINERS_CONF", dir.join("containers.conf"))
        .env("CONTAINERS_STORAGE_CONF", dir.join("storage.conf"));
    cmd
}

/// Writes the configuration files of an environment rooted at `dir`.
fn write_confs(dir: &Path, plugin_dirs: &[&Path], image_store: Option<&Path>) {
    for d in ["net.d", "ipam", "tmp", "storage/root", "storage/runroot"] {
        fs::create_dir_all(dir.join(d)).unwrap_or_else(|e| panic!("creating {}/{d}: {e}", dir.display()));
    }
    // The bench's environments are written the same way (switch-user/src/bench/podman.rs).
    let containers = podman_env::containers_conf(dir, plugin_dirs).unwrap_or_else(|e| panic!("{e}"));
    fs::write(dir.join("containers.conf"), containers).unwrap();
    let storage = podman_env::storage_conf(dir, image_store).unwrap_or_else(|e| panic!("{e}"));
    fs::write(dir.join("storage.conf"), storage).unwrap();
}

// ---------------------------------------------------------------------------------------------
// The process's image store.

static IMAGE_STORE: OnceLock<PathBuf> = OnceLock::new();

/// Removes the image store when the test process exits (after every test and its environment).
extern "C" fn remove_image_store() {
    if let Some(dir) = IMAGE_STORE.get() {
        let _ = fs::remove_dir_all(dir);
    }
}

/// The process's image store with [`IMAGE`] in it, made on first use: busybox-static's
/// binary and a link per applet as the root file system, imported as in containers.md.
fn image_store() -> &'static Path {
    IMAGE_STORE.get_or_init(|| {
        DIRS_BEFORE.get_or_init(existing_default_dirs);
        sweep_stale();
        let started = Instant::now();
        let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{}-image", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        write_confs(&dir, &[Path::new("/usr/lib/cni")], None);
        let rootfs = dir.join("rootfs");
        crate::image::busybox_rootfs(&rootfs);
        let tar = dir.join("rootfs.tar");
        let r = run_cmd(Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&tar).arg("."));
        assert_eq!(r.code, 0, "tar: {}", r.stderr);
        // Without `ENV PATH` nothing is found in the container.
        let tar_s = tar.to_str().unwrap();
        let import = &["import", "--change", r#"CMD ["/bin/sh"]"#, "--change", "ENV PATH=/bin", tar_s, IMAGE];
        let r = run_cmd(&mut podman_cmd(&dir, import));
        assert_eq!(r.code, 0, "podman import: {}{}", r.stdout, r.stderr);
        let _ = fs::remove_dir_all(&rootfs);
        let _ = fs::remove_file(&tar);
        // SAFETY: registers a plain function without arguments; it only removes files.
        unsafe { libc::atexit(remove_image_store) };
        eprintln!("podman: image {IMAGE} imported into {} in {:?}", dir.display(), started.elapsed());
        dir
    })
}

/// Removes what killed test processes left (their pid is gone): their containers (through
/// podman with their own configuration, so CNI DEL releases interfaces, addresses and rules),
/// the host interfaces and namespaces they registered, and their directories. The host-wide
/// state they changed is given back by [`host_acquire`].
fn sweep_stale() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else { return };
    let mut stale: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.strip_prefix(DIR_PREFIX).and_then(|r| r.split('-').next()?.parse::<u32>().ok());
            e.path().is_dir() && pid.is_some_and(|p| !alive(p))
        })
        .map(|e| e.path())
        .collect();
    // Image stores last: the containers of the environments use them.
    stale.sort_by_key(|p| p.to_string_lossy().ends_with("-image"));
    for dir in stale {
        eprintln!("podman: removing {} left by a killed test process", dir.display());
        if dir.join("containers.conf").exists() {
            let _ = run_cmd(&mut podman_cmd(&dir, &["rm", "--all", "--force", "--time", "0"]));
        }
        for link in fs::read_to_string(dir.join(HOST_LINKS)).unwrap_or_default().lines() {
            let _ = run_cmd(Command::new("ip").args(["link", "del", link]));
        }
        for ns in fs::read_to_string(dir.join(HOST_NETNS)).unwrap_or_default().lines() {
            let _ = run_cmd(Command::new("ip").args(["netns", "del", ns]));
        }
        unmount_below(&dir);
        let _ = fs::remove_dir_all(&dir);
    }
}

fn unmount_below(dir: &Path) -> Vec<String> {
    let m = mounts_below(dir);
    for p in &m {
        let _ = run_cmd(Command::new("umount").args(["-l", p]));
    }
    m
}

// ---------------------------------------------------------------------------------------------
// Host-wide state the reference plugins change: recorded before the first environment on the
// machine starts and given back when the last one goes.
//
// `net.ipv4.ip_forward` is one value for the whole machine and environments live in several
// test processes at once (the test binaries of several worktrees), so the record is shared
// through a file, under an flock: it lists the processes using it, and whoever leaves last,
// or finds that everyone else listed is dead (killed), gives the host back. Programs that do
// not use this harness (a benchmark running meanwhile) are not coordinated with.

/// The shared record of the host as it was, and who uses it.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct HostState {
    /// Processes with live environments.
    users: Vec<u32>,
    /// `net.ipv4.ip_forward`, `all/accept_redirects` (the kernel flips it with ip_forward) and
    /// every interface's `forwarding` (ip_forward sets them all), as they were.
    sysctls: Vec<(PathBuf, String)>,
    /// Every iptables table and chain there was, as [`iptables_chains`] names them.
    chains: BTreeSet<String>,
    /// Podman network namespaces (/run/netns) there were.
    netns: BTreeSet<String>,
    /// Which of the machine-default directories podman and libcni write whatever the
    /// configuration says (`DEFAULT_DIRS`) there were.
    #[serde(default)]
    dirs: BTreeSet<PathBuf>,
}

/// Directories podman 4.3 and libcni create at their built-in locations even under the
/// test-only configuration (the blob-info cache, runc's and storage's run directories,
/// libcni's result cache): removed afterwards if the tests made them.
const DEFAULT_DIRS: [&str; 4] = ["/var/lib/containers", "/run/containers", "/var/lib/cni", "/run/runc"];

fn existing_default_dirs() -> BTreeSet<PathBuf> {
    DEFAULT_DIRS.iter().map(PathBuf::from).filter(|d| d.exists()).collect()
}

/// `DEFAULT_DIRS` as they were before this process ran podman the first time (the image
/// import runs before the first environment registers).
static DIRS_BEFORE: OnceLock<BTreeSet<PathBuf>> = OnceLock::new();

/// Live environments of this process.
static USERS: Mutex<usize> = Mutex::new(0);

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Portmap's top-level chains, which it leaves behind after the last container.
const PORTMAP_CHAINS: [&str; 3] = ["CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ"];

/// Every iptables and ip6tables table as `FAMILY/table` and chain as `FAMILY/table/chain`
/// (`iptables-save`, `ip6tables-save`).
fn iptables_chains() -> BTreeSet<String> {
    let mut chains = BTreeSet::new();
    for (family, save) in [("ip", "iptables-save"), ("ip6", "ip6tables-save")] {
        let out = run_cmd(&mut Command::new(save));
        let mut table = String::new();
        for l in out.stdout.lines() {
            if let Some(t) = l.strip_prefix('*') {
                table = format!("{family}/{t}");
                chains.insert(table.clone());
            } else if let Some(c) = l.strip_prefix(':') {
                chains.insert(format!("{table}/{}", c.split(' ').next().unwrap_or_default()));
            }
        }
    }
    chains
}

/// The rules (`iptables -S` lines) of `table` that contain `needle`.
pub fn iptables_rules_with(table: &str, needle: &str) -> Vec<String> {
    let out = run_cmd(Command::new("iptables").args(["-w", "-t", table, "-S"]));
    out.stdout.lines().filter(|l| l.starts_with("-A ") && l.contains(needle)).map(str::to_owned).collect()
}

/// Deletes `rule` (an `iptables -S` line; its quoting is the shell's).
fn iptables_delete(table: &str, rule: &str) {
    let _ = sh(&format!("iptables -w -t {table} -D {}", rule.strip_prefix("-A ").unwrap_or(rule)));
}

/// Removes chain `chain` of `table` with every rule jumping to it.
fn iptables_remove_chain(table: &str, chain: &str) {
    for rule in iptables_rules_with(table, &format!("-j {chain}")) {
        if rule.ends_with(&format!("-j {chain}")) || rule.contains(&format!("-j {chain} ")) {
            iptables_delete(table, &rule);
        }
    }
    let _ = run_cmd(Command::new("iptables").args(["-w", "-t", table, "-F", chain]));
    let _ = run_cmd(Command::new("iptables").args(["-w", "-t", table, "-X", chain]));
}

/// Podman's network namespaces in /run/netns (`netns-UUID`; `cni-UUID` in other versions).
fn podman_netns() -> BTreeSet<String> {
    fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("netns-") || n.starts_with("cni-"))
        .collect()
}

impl HostState {
    /// The host as it is now.
    fn now() -> Self {
        Self {
            users: vec![],
            sysctls: podman_env::forwarding_sysctls(),
            chains: iptables_chains(),
            netns: podman_netns(),
            dirs: DIRS_BEFORE.get_or_init(existing_default_dirs).clone(),
        }
    }

    /// Gives the host back as it was; returns what could not be.
    fn give_back(&self) -> Vec<String> {
        let mut left = vec![];
        // Forwarding: only when ip_forward is not what it was (the bridge plugin writes it only
        // when it is off), so values other programs set per interface meanwhile stay. Writing
        // ip_forward sets every interface's `forwarding` (and all/accept_redirects) at once:
        // put back each one that was recorded.
        let saved = self.sysctls.iter().find(|(p, _)| p == Path::new(IP_FORWARD)).map(|(_, v)| v.clone());
        let now = fs::read_to_string(IP_FORWARD).unwrap_or_default().trim().to_owned();
        if let Some(saved) = saved.filter(|s| *s != now) {
            // Interfaces made meanwhile are other programs' (a benchmark's uplink, say): they
            // keep the value they have now, which may have been set on purpose.
            let recorded: BTreeSet<&PathBuf> = self.sysctls.iter().map(|(p, _)| p).collect();
            let others: Vec<(PathBuf, String)> =
                podman_env::forwarding_sysctls().into_iter().filter(|(p, _)| !recorded.contains(p)).collect();
            let mut written = 0;
            for (p, v) in self.sysctls.iter().chain(&others) {
                if fs::read_to_string(p).is_ok_and(|cur| cur.trim() != v) {
                    match fs::write(p, v) {
                        Ok(()) => written += 1,
                        Err(e) => left.push(format!("{} could not be set back to {v}: {e}", p.display())),
                    }
                }
            }
            eprintln!("podman: gave back net.ipv4.ip_forward {now} -> {saved} ({written} sysctls written)");
        }
        // Portmap's top-level chains, if they were not there before and no mapping (of
        // anybody) uses them now.
        let new = |c: &str| !self.chains.contains(&format!("ip/nat/{c}"));
        let in_use = !iptables_rules_with("nat", "").iter().all(|r| !r.starts_with("-A CNI-HOSTPORT-DNAT "));
        if PORTMAP_CHAINS.iter().all(|c| new(c)) && !in_use {
            for c in PORTMAP_CHAINS {
                iptables_remove_chain("nat", c);
            }
        }
        // The nat tables iptables made for portmap's rules (`ip6 nat` too), now empty: their
        // chains would keep connection tracking on for every flow of the host.
        let nat_before: BTreeSet<Family> =
            Family::ALL.into_iter().filter(|f| self.chains.contains(&format!("{}/nat", f.name()))).collect();
        if let Err(e) = nat_tables::remove_unused(&nat_before) {
            left.push(e.to_string());
        }
        let still: Vec<String> = iptables_chains().into_iter().filter(|c| !self.chains.contains(c)).collect();
        if !still.is_empty() {
            // Not necessarily the tests': other programs may change them meanwhile. The
            // environments check the rules of their own networks themselves.
            eprintln!("podman: iptables tables and chains made while the tests ran and still there: {still:?}");
        }
        for d in existing_default_dirs().difference(&self.dirs) {
            // Made by the tests' podman runs: nothing in them outlives the environments.
            if let Err(e) = fs::remove_dir_all(d) {
                left.push(format!("{}: {e}", d.display()));
            }
        }
        let netns: Vec<String> = podman_netns().into_iter().filter(|n| !self.netns.contains(n)).collect();
        if !netns.is_empty() {
            eprintln!("podman: podman network namespaces made while the tests ran and still there: {netns:?}");
        }
        left
    }
}

/// Runs `f` on the machine-wide record under its lock (the file holds it when someone uses it).
fn with_host_state<T>(f: impl FnOnce(&mut Option<HostState>) -> T) -> T {
    use std::os::fd::AsRawFd as _;
    let tmp = std::env::temp_dir();
    let lock = fs::File::create(tmp.join(format!("{DIR_PREFIX}host.lock"))).expect("creating the host lock file");
    // SAFETY: flock on a file descriptor this function owns; released when it is closed.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0, "locking the host state");
    let path = tmp.join(format!("{DIR_PREFIX}host.json"));
    let mut state: Option<HostState> = fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let r = f(&mut state);
    match &state {
        Some(s) => fs::write(&path, serde_json::to_vec(s).unwrap()).expect("writing the host state"),
        None => {
            let _ = fs::remove_file(&path);
        }
    }
    r
}

/// Whether process `pid` lives.
fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Registers an environment of this process; the first one registers the process.
fn host_acquire() {
    let mut users = lock(&USERS);
    if *users == 0 {
        with_host_state(|state| {
            if let Some(s) = state.as_mut() {
                s.users.retain(|p| alive(*p));
                if s.users.is_empty() {
                    // Everyone who used it was killed: give back what they recorded.
                    let left = s.give_back();
                    if !left.is_empty() {
                        eprintln!("podman: after a killed test process: {left:?}");
                    }
                    *state = None;
                }
            }
            state.get_or_insert_with(HostState::now).users.push(std::process::id());
        });
    }
    *users += 1;
}

/// Unregisters an environment; with the process's last one, the process, and if it was the
/// last process, gives the host back. Returns what could not be given back.
fn host_release() -> Vec<String> {
    let mut users = lock(&USERS);
    *users -= 1;
    if *users > 0 {
        return vec![];
    }
    with_host_state(|state| {
        let Some(s) = state.as_mut() else { return vec!["the host state record is gone".to_owned()] };
        let me = std::process::id();
        s.users.retain(|p| *p != me && alive(*p));
        if !s.users.is_empty() {
            return vec![];
        }
        let left = s.give_back();
        *state = None;
        left
    })
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
        let needle = format!(r#"name: \"{}\""#, self.name);
        let mut v = iptables_rules_with("nat", &needle);
        v.extend(iptables_rules_with("filter", &needle));
        v
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
    /// Path of its network namespace (empty when it has none).
    pub netns: String,
}

// ---------------------------------------------------------------------------------------------
// The environment.

/// One test's podman: configuration, storage, networks and containers of its own.
pub struct Podman {
    dir: PathBuf,
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
        let n = ENVS.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{pid}-{n}"));
        let _ = fs::remove_dir_all(&dir);
        write_confs(&dir, &[plugin_dir, Path::new("/usr/lib/cni")], Some(store));
        host_acquire();
        Self {
            dir,
            prefix: format!("p{:04}{:02}", pid % 10_000, n % 100),
            plugin_dir: plugin_dir.to_owned(),
            containers: Mutex::default(),
            networks: Mutex::default(),
            netns: Mutex::default(),
        }
    }

    /// The environment's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
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
        run_cmd(&mut podman_cmd(&self.dir, args))
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
        let path = self.dir.join("net.d").join(format!("{name}.conflist"));
        fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
        path
    }

    /// Records a host interface the test makes for this environment (a bridge of a network,
    /// an uplink): tear-down deletes it if it is still there, and so does the next test process
    /// if this one is killed.
    pub fn own_link(&self, link: &str) {
        self.append(HOST_LINKS, link);
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
        self.append(HOST_NETNS, ns);
    }

    fn append(&self, file: &str, line: &str) {
        let path = self.dir.join(file);
        let mut s = fs::read_to_string(&path).unwrap_or_default();
        s.push_str(line);
        s.push('\n');
        fs::write(path, s).unwrap();
    }

    fn owned(&self, file: &str) -> Vec<String> {
        fs::read_to_string(self.dir.join(file)).unwrap_or_default().lines().map(str::to_owned).collect()
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
        let name = format!("{}n{n}", self.prefix);
        let subnet = format!("10.89.{n}.0/24");
        let gateway = format!("10.89.{n}.1");
        let ipam_data = self.dir.join("ipam");
        let (json, bridge) = match kind {
            NetKind::Bridge => {
                let bridge = format!("{}b{n}", self.prefix);
                let json = serde_json::json!({
                    "cniVersion": "0.4.0",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": bridge,
                            "isGateway": true,
                            "ipMasq": true,
                            "hairpinMode": true,
                            "ipam": {
                                "type": "host-local",
                                // Not /var/lib/cni/networks: reservations are checked and go
                                // with the environment.
                                "dataDir": ipam_data,
                                "routes": [{"dst": "0.0.0.0/0"}],
                                "ranges": [[{"subnet": subnet, "gateway": gateway}]]
                            }
                        },
                        {"type": "portmap", "capabilities": {"portMappings": true}}
                    ]
                });
                (json, Some(bridge))
            }
            NetKind::SwitchCni => {
                let uplink = uplink.map_or_else(|| self.own_uplink(n), str::to_owned);
                let json = serde_json::json!({
                    "cniVersion": "0.4.0",
                    "plugins": [{
                        "type": "switch-cni",
                        "switch": format!("{}s{n}", self.prefix),
                        "uplink": uplink,
                        "capabilities": {"portMappings": true, "mac": true, "ips": true},
                        "ipam": {
                            "type": "host-local",
                            "dataDir": ipam_data,
                            "routes": [{"dst": "0.0.0.0/0"}],
                            "ranges": [[{"subnet": subnet, "gateway": gateway}]]
                        }
                    }]
                });
                (json, None)
            }
        };
        let switch = (kind == NetKind::SwitchCni).then(|| format!("{}s{n}", self.prefix));
        if let Some(sw) = &switch {
            self.append(HOST_SWITCHES, sw);
        }
        if let Some(b) = &bridge {
            self.own_link(b);
        }
        self.write_conflist(&name, &json);
        let net = Network { ipam_dir: ipam_data.join(&name), name, kind, subnet, gateway, bridge, switch };
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
        let mut left = vec![];
        // Every container in this storage is this environment's, also one a failed run made.
        let names = self.run(&["ps", "--all", "--format", "{{.Names}}"]).stdout;
        let names: Vec<&str> = names.lines().filter(|l| !l.is_empty()).collect();
        for n in &names {
            // Records their namespaces.
            let _ = self.try_inspect(n);
        }
        if !names.is_empty() {
            let r = self.run(&["rm", "--all", "--force", "--time", "0"]);
            if r.code != 0 {
                left.push(format!("podman rm --all failed: {}{}", r.stdout, r.stderr));
            }
        }
        let remaining = self.run(&["ps", "--all", "--format", "{{.Names}}"]).stdout;
        if !remaining.trim().is_empty() {
            left.push(format!("containers: {}", remaining.trim().replace('\n', " ")));
        }
        for ns in lock(&self.netns).iter() {
            if Path::new(ns).exists() {
                left.push(format!("network namespace {ns}"));
                let _ = run_cmd(Command::new("umount").arg(ns));
                let _ = fs::remove_file(ns);
            }
        }
        for net in lock(&self.networks).drain(..) {
            let ports = net.ports();
            if !ports.is_empty() {
                left.push(format!("interfaces on {}: {ports:?}", net.name));
                for port in ports {
                    let _ = run_cmd(Command::new("ip").args(["link", "del", &port]));
                }
            }
            let reserved = net.reservations();
            if !reserved.is_empty() {
                left.push(format!("IPAM reservations on {}: {reserved:?}", net.name));
            }
            let rules = net.iptables_rules();
            if !rules.is_empty() {
                left.push(format!("iptables rules of {}: {rules:?}", net.name));
                // The per-container chains those rules jump to go with them.
                for table in ["nat", "filter"] {
                    for rule in iptables_rules_with(table, &format!(r#"name: \"{}\""#, net.name)) {
                        iptables_delete(table, &rule);
                        if let Some(chain) = rule.rsplit_once("-j ").map(|(_, c)| c.trim())
                            && chain.starts_with("CNI-")
                            && !PORTMAP_CHAINS.contains(&chain)
                        {
                            iptables_remove_chain(table, chain);
                        }
                    }
                }
            }
        }
        // switch-cni's switches stay up after their last container (they are the network):
        // the test takes them down, which also gives back their sysctls.
        for sw in self.owned(HOST_SWITCHES) {
            let r = run_cmd(Command::new(crate::switch_bin()).args(["down", "--switch", &sw]));
            if r.code != 0 {
                left.push(format!("switch down --switch {sw} failed: {}", r.stderr.trim()));
            }
        }
        // The bridge plugin never deletes its bridge; with it go its addresses, routes and
        // sysctls (portmap's route_localnet).
        for link in self.owned(HOST_LINKS) {
            let exists = run_cmd(Command::new("ip").args(["link", "show", &link])).code == 0;
            if exists && run_cmd(Command::new("ip").args(["link", "del", &link])).code != 0 {
                left.push(format!("interface {link} could not be deleted"));
            }
        }
        for ns in self.owned(HOST_NETNS) {
            if Path::new("/run/netns").join(&ns).exists()
                && run_cmd(Command::new("ip").args(["netns", "del", &ns])).code != 0
            {
                left.push(format!("network namespace {ns} could not be deleted"));
            }
        }
        let mounts = unmount_below(&self.dir);
        if !mounts.is_empty() {
            left.push(format!("mounts: {mounts:?}"));
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            left.push(format!("{}: {e}", self.dir.display()));
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
