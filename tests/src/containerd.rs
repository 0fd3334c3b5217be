//! A containerd test environment: a private containerd daemon and `ctr run --cni` on a
//! switch-cni network, without touching the machine's own containerd or CNI set-up.
//!
//! Every [`Containerd`] has a temporary directory holding everything of its daemon: the
//! configuration (root, state, gRPC and ttrpc sockets, the `opt` plugin's directory; the CRI
//! plugin disabled), its image store and snapshots, runc's state (`--runc-root`) and the IO
//! FIFOs (`--fifo-dir`). The daemon is a child process of the test, never a service, and never
//! reads /etc/containerd or writes /var/lib/containerd.
//!
//! `ctr` 1.6 has no flag for its CNI directories: it loads the lexically first configuration
//! in /etc/cni/net.d and runs plugins from /opt/cni/bin and /usr/lib/cni. So every `ctr` runs
//! in a mount namespace of its own (`unshare --mount`, private propagation) in which the
//! environment's `net.d` is bind-mounted over /etc/cni/net.d and its `bin` (switch-cni beside
//! `switch`, and a copy of host-local) over those plugin directories; the machine's files are
//! never changed and nobody else sees the mounts. The plugins share everything else with the
//! host (/run/switch, bpffs, /proc), so `switch` sees what they made.
//!
//! The image is busybox-static as an OCI archive made here (see [`crate::image`]), imported
//! offline into each environment's own store.
//!
//! What containerd and libcni write at built-in locations whatever the configuration says is
//! given back: the shims' sockets (/run/containerd/s), libcni's result cache
//! (/var/lib/cni/results/NETWORK-*), and the containers' parent cgroups (named after the
//! environment's ctr namespace). The directories are removed if they were not there before.
//!
//! Tear-down (on drop, also after a panic) kills and removes every container, checks that no
//! port, veth, IPAM reservation, cached result, state record or process of the environment is
//! left, takes the switch down, stops the daemon, unmounts whatever is still mounted below the
//! directory and removes it; it fails the test if anything was left. What a killed test process
//! left is removed by the next one.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use crate::{
    Run, Value, mounts_below,
    podman::{toml_str, wait_until},
    switch_bin,
};

/// The image every test container runs: busybox (`PATH=/bin`, `CMD /bin/sh`).
pub const IMAGE: &str = "localhost/switch-test-busybox:latest";

/// Environments live in `switch-containerd-PID-N` under the temporary directory.
const DIR_PREFIX: &str = "switch-containerd-";

/// File in an environment's directory naming its switch (for the sweep after a killed process).
const SWITCH_FILE: &str = "switch";

/// Where ctr's libcni caches ADD results (`results/NETWORK-CONTAINERID-IFNAME`); not
/// configurable through ctr.
const LIBCNI_CACHE: &str = "/var/lib/cni";
/// Where the runc shims of every containerd put their sockets (`s/HASH`); not configurable.
const SHIM_SOCKETS: &str = "/run/containerd";
/// Directories ctr runs CNI plugins from, in its search order.
const PLUGIN_DIRS: [&str; 2] = ["/opt/cni/bin", "/usr/lib/cni"];
/// The only directory ctr reads CNI configurations from.
const CONF_DIR: &str = "/etc/cni/net.d";

static ENVS: AtomicU32 = AtomicU32::new(0);
static EXECS: AtomicU32 = AtomicU32::new(0);

/// The built-in directories that existed before this process started its first daemon.
static DIRS_BEFORE: OnceLock<BTreeSet<PathBuf>> = OnceLock::new();

fn existing_builtin_dirs() -> BTreeSet<PathBuf> {
    [LIBCNI_CACHE, SHIM_SOCKETS].iter().map(PathBuf::from).filter(|d| d.exists()).collect()
}

fn run_cmd(cmd: &mut Command) -> Run {
    cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}")).into()
}

/// Why containerd cannot run on this machine, if it cannot: the packages and directories the
/// environment needs.
fn unavailable() -> Option<String> {
    for bin in ["containerd", "ctr", "containerd-shim-runc-v2", "runc", "unshare"] {
        if run_cmd(Command::new("sh").args(["-c", &format!("command -v {bin}")])).code != 0 {
            return Some(format!("'{bin}' is not installed (cargo xtask setup installs containerd, runc, util-linux)"));
        }
    }
    if !Path::new(CONF_DIR).is_dir() {
        return Some(format!(
            "{CONF_DIR} is missing: ctr reads CNI configurations only there (podman's package makes it)"
        ));
    }
    if !PLUGIN_DIRS.iter().any(|d| Path::new(d).is_dir()) {
        return Some("no CNI plugin directory (/usr/lib/cni: package containernetworking-plugins)".into());
    }
    None
}

/// The ctr client's version as (major, minor).
pub fn ctr_version() -> (u32, u32) {
    let out = run_cmd(Command::new("ctr").arg("--version")).stdout;
    // "ctr github.com/containerd/containerd 1.6.20~ds1"
    let v = out.split_whitespace().last().unwrap_or_default();
    let mut n = v.split(['.', '~', '-', '+']).map(|p| p.trim_start_matches('v').parse::<u32>().unwrap_or(0));
    (n.next().unwrap_or(0), n.next().unwrap_or(0))
}

/// The daemon's configuration: everything below `dir`, no CRI (it would want its own CNI set-up
/// and serve Kubernetes, which the tests do not need).
fn config_toml(dir: &Path) -> String {
    format!(
        r#"# Written by switch-tests (tests/src/containerd.rs) for one test.
version = 2
root = {root}
state = {state}
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = {sock}

[ttrpc]
  address = {ttrpc}

[plugins."io.containerd.internal.v1.opt"]
  path = {opt}
"#,
        root = toml_str(&dir.join("root")),
        state = toml_str(&dir.join("state")),
        sock = toml_str(&dir.join("containerd.sock")),
        ttrpc = toml_str(&dir.join("containerd.sock.ttrpc")),
        opt = toml_str(&dir.join("opt")),
    )
}

/// One test's containerd, network and containers.
pub struct Containerd {
    dir: PathBuf,
    /// The ctr namespace, and the prefix of every name the environment makes.
    pub prefix: String,
    /// The switch (and CNI network) name.
    pub switch: String,
    /// `10.90.N.0/24`.
    pub subnet: String,
    /// The switch's address, `10.90.N.1`: the containers' default gateway.
    pub gateway: String,
    daemon: Option<Child>,
    /// Foreground `ctr run` processes by container ID: they send the DEL when their task ends.
    attached: BTreeMap<String, Child>,
    /// Host-side interfaces the containers' ports had (each must be gone after tear-down).
    host_ifs: BTreeSet<String>,
}

/// A container's port as `switch ns list --json` shows it.
#[derive(Clone, Debug)]
pub struct Port {
    /// The CNI container ID (`NAMESPACE-ID` under ctr).
    pub owner: String,
    /// `attached`: a namespace the switch did not make.
    pub kind: String,
    /// Address with prefix length.
    pub ip: String,
    /// Host end of the veth.
    pub host_interface: String,
    /// The namespace file the plugin was given (`/proc/PID/ns/net` under ctr).
    pub netns: String,
}

impl Containerd {
    /// A running daemon with [`IMAGE`] and a switch-cni network on 10.90.`n`.0/24 (distinct per
    /// test: routes are host-wide). Panics, saying why, when containerd cannot run here.
    pub fn new(n: u8) -> Self {
        if let Some(why) = unavailable() {
            panic!("containerd cannot run on this machine: {why}");
        }
        // Once per process, the sweep first: the built-in directories a killed process made
        // are not the machine's.
        DIRS_BEFORE.get_or_init(|| {
            sweep_stale();
            existing_builtin_dirs()
        });
        let pid = std::process::id();
        let k = ENVS.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{pid}-{k}"));
        let _ = fs::remove_dir_all(&dir);
        let prefix = format!("k{:04}{:02}", pid % 10_000, k % 100);
        // Constructed before anything is made, so a failure below still tears down.
        let mut env = Self {
            switch: format!("{prefix}sw"),
            prefix,
            subnet: format!("10.90.{n}.0/24"),
            gateway: format!("10.90.{n}.1"),
            dir,
            daemon: None,
            attached: BTreeMap::new(),
            host_ifs: BTreeSet::new(),
        };
        env.write_files();
        env.start_daemon();
        let archive = crate::image::busybox_oci_archive(&env.dir.join("image"), IMAGE);
        env.ctr_ok(&["image", "import", archive.to_str().unwrap()]);
        env
    }

    fn write_files(&self) {
        for d in ["root", "state", "opt", "net.d", "bin", "ipam", "fifo", "runc", "logs", "image"] {
            fs::create_dir_all(self.dir.join(d)).unwrap_or_else(|e| panic!("creating {}/{d}: {e}", self.dir.display()));
        }
        fs::write(self.dir.join(SWITCH_FILE), &self.switch).unwrap();
        fs::write(self.dir.join("config.toml"), config_toml(&self.dir)).unwrap();
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": self.switch,
            "plugins": [{
                "type": "switch-cni",
                "switch": self.switch,
                "ipam": {
                    "type": "host-local",
                    // Not /var/lib/cni/networks: reservations are checked and go with the directory.
                    "dataDir": self.dir.join("ipam"),
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "ranges": [[{"subnet": self.subnet, "gateway": self.gateway}]]
                }
            }]
        });
        fs::write(self.dir.join("net.d/10-switch.conflist"), serde_json::to_string_pretty(&conf).unwrap()).unwrap();
        let plugin = switch_bin().with_file_name("switch-cni");
        assert!(plugin.exists(), "{} not built", plugin.display());
        std::os::unix::fs::symlink(&plugin, self.dir.join("bin/switch-cni")).unwrap();
        // A copy, not a link: /usr/lib/cni itself is hidden behind this directory for ctr.
        fs::copy("/usr/lib/cni/host-local", self.dir.join("bin/host-local"))
            .expect("copying /usr/lib/cni/host-local (package containernetworking-plugins)");
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    fn start_daemon(&mut self) {
        let log = fs::File::create(self.dir.join("logs/containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(self.dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting containerd");
        self.daemon = Some(child);
        let up = wait_until(Duration::from_secs(15), || {
            self.daemon_exited().is_none()
                && self.socket().exists()
                && run_cmd(Command::new("ctr").arg("--address").arg(self.socket()).arg("version")).code == 0
        });
        if !up {
            let log = fs::read_to_string(self.dir.join("logs/containerd.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
            panic!(
                "containerd cannot run on this machine: the daemon {} within 15 s; its log ends:\n{}",
                match self.daemon_exited() {
                    Some(code) => format!("exited ({code})"),
                    None => "did not answer".into(),
                },
                tail.join("\n")
            );
        }
    }

    fn daemon_exited(&self) -> Option<String> {
        // try_wait needs &mut; /proc tells the same without reaping.
        let pid = self.daemon.as_ref()?.id();
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit_once(") ").map(|(_, r)| r.chars().next().unwrap_or('X')).unwrap_or('X');
        matches!(state, 'Z' | 'X').then(|| format!("state {state}"))
    }

    /// `ctr ARGS` against this environment's daemon and namespace, in a mount namespace where
    /// /etc/cni/net.d and the plugin directories are this environment's.
    pub fn ctr_cmd(&self, args: &[&str]) -> Command {
        let mut script = String::from(r#"d=$1; shift; mount --bind "$d/net.d" /etc/cni/net.d || exit 125; for p in"#);
        for p in PLUGIN_DIRS {
            script.push(' ');
            script.push_str(p);
        }
        script.push_str(r#"; do [ ! -d "$p" ] || mount --bind "$d/bin" "$p" || exit 125; done; exec "$@""#);
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c", &script, "sh"])
            .arg(&self.dir)
            .arg("ctr")
            .arg("--address")
            .arg(self.socket())
            .args(["--namespace", &self.prefix])
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// `ctr ARGS` (see [`Containerd::ctr_cmd`]).
    pub fn ctr(&self, args: &[&str]) -> Run {
        run_cmd(&mut self.ctr_cmd(args))
    }

    /// `ctr ARGS`, asserting success; returns stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let r = self.ctr(args);
        assert_eq!(r.code, 0, "ctr {args:?} failed ({}): {}{}", r.code, r.stdout, r.stderr);
        r.stdout
    }

    /// The CNI container ID of container `id`: ctr passes `NAMESPACE-ID`.
    pub fn cni_id(&self, id: &str) -> String {
        format!("{}-{id}", self.prefix)
    }

    fn run_args<'a>(
        &'a self,
        fifo: &'a str,
        runc: &'a str,
        detach: bool,
        id: &'a str,
        cmd: &[&'a str],
    ) -> Vec<&'a str> {
        let mut a = vec!["run", "--cni", "--null-io", "--fifo-dir", fifo, "--runc-root", runc];
        if detach {
            a.push("-d");
        }
        a.extend([IMAGE, id]);
        a.extend_from_slice(cmd);
        a
    }

    /// `ctr run --cni IMAGE ID CMD` in the background: ctr stays attached to the task and
    /// sends the CNI DEL when it ends (ctr 1.6 sends none for a detached task). Returns once
    /// the task runs, which ctr starts only after the ADD succeeded.
    pub fn run_attached(&mut self, id: &str, cmd: &[&str]) {
        let (fifo, runc) = (self.path("fifo"), self.path("runc"));
        let args = self.run_args(&fifo, &runc, false, id, cmd);
        let out = fs::File::create(self.dir.join(format!("logs/{id}.log"))).unwrap();
        let child = self
            .ctr_cmd(&args)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("ctr run {id}: {e}"));
        self.attached.insert(id.to_owned(), child);
        let mut exited = None;
        let running = wait_until(Duration::from_secs(20), || {
            if let Some(status) = self.attached.get_mut(id).and_then(|c| c.try_wait().ok().flatten()) {
                exited = Some(status);
                return true;
            }
            self.task_status(id).as_deref() == Some("RUNNING")
        });
        if let Some(status) = exited {
            self.attached.remove(id);
            panic!("ctr run --cni {id} exited ({status}): {}", self.log(id));
        }
        assert!(running, "ctr run --cni {id}: the task does not run after 20 s: {}", self.log(id));
    }

    /// `ctr run --cni -d IMAGE ID CMD`.
    pub fn run_detached(&self, id: &str, cmd: &[&str]) {
        let (fifo, runc) = (self.path("fifo"), self.path("runc"));
        self.ctr_ok(&self.run_args(&fifo, &runc, true, id, cmd));
    }

    fn path(&self, sub: &str) -> String {
        self.dir.join(sub).to_str().unwrap().to_owned()
    }

    /// What an attached `ctr run` printed.
    pub fn log(&self, id: &str) -> String {
        fs::read_to_string(self.dir.join(format!("logs/{id}.log"))).unwrap_or_default()
    }

    /// Tasks as `ctr task ls` shows them: ID -> (PID, STATUS).
    pub fn tasks(&self) -> BTreeMap<String, (u32, String)> {
        self.ctr_ok(&["task", "ls"])
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some((f.first()?.to_string(), (f.get(1)?.parse().ok()?, f.get(2)?.to_string())))
            })
            .collect()
    }

    /// The status of container `id`'s task (`RUNNING`, `STOPPED`, ...), if it has one.
    pub fn task_status(&self, id: &str) -> Option<String> {
        self.tasks().remove(id).map(|(_, s)| s)
    }

    /// The PID of container `id`'s task.
    pub fn task_pid(&self, id: &str) -> u32 {
        self.tasks().get(id).unwrap_or_else(|| panic!("container {id} has no task")).0
    }

    /// Container IDs (`ctr container ls -q`).
    pub fn containers(&self) -> Vec<String> {
        self.ctr_ok(&["container", "ls", "-q"]).lines().filter(|l| !l.is_empty()).map(str::to_owned).collect()
    }

    /// `ctr task exec ID CMD`.
    pub fn exec(&self, id: &str, cmd: &[&str]) -> Run {
        let exec_id = format!("e{}", EXECS.fetch_add(1, Ordering::Relaxed));
        let fifo = self.path("fifo");
        let mut a = vec!["task", "exec", "--fifo-dir", &fifo, "--exec-id", &exec_id, id];
        a.extend_from_slice(cmd);
        self.ctr(&a)
    }

    /// The IPv4 address with prefix of `eth0` inside container `id`, as the container sees it.
    pub fn address(&self, id: &str) -> String {
        let r = self.exec(id, &["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
        assert_eq!(r.code, 0, "ip addr in {id}: {}{}", r.stdout, r.stderr);
        let addr = r.stdout.split_whitespace().skip_while(|w| *w != "inet").nth(1);
        addr.unwrap_or_else(|| panic!("no IPv4 address on eth0 in {id}: {}", r.stdout)).to_owned()
    }

    /// `ctr task kill -s KILL ID`, then waits until the task has stopped; for an attached run
    /// until its ctr has exited (after its DEL and deleting the task), returning what it printed.
    pub fn kill(&mut self, id: &str) -> String {
        self.ctr_ok(&["task", "kill", "--signal", "KILL", id]);
        if let Some(mut child) = self.attached.remove(id) {
            let done = wait_until(Duration::from_secs(15), || child.try_wait().ok().flatten().is_some());
            if !done {
                let _ = child.kill();
                let _ = child.wait();
                panic!("ctr run {id} did not exit within 15 s of its task's kill: {}", self.log(id));
            }
            return self.log(id);
        }
        let stopped = wait_until(Duration::from_secs(15), || self.task_status(id).as_deref() != Some("RUNNING"));
        assert!(stopped, "task {id} still runs 15 s after SIGKILL");
        String::new()
    }

    /// `ctr task rm ID` (if it has a task) and `ctr container rm ID`.
    pub fn rm(&self, id: &str) {
        if self.task_status(id).is_some() {
            self.ctr_ok(&["task", "rm", id]);
        }
        self.ctr_ok(&["container", "rm", id]);
    }

    /// Every port of the environment's switch that a container's namespace has
    /// (`switch ns list --json`), by CNI container ID; records their host interfaces.
    pub fn ports(&mut self) -> BTreeMap<String, Port> {
        let r = run_cmd(Command::new(switch_bin()).args(["ns", "list", "--json"]));
        assert_eq!(r.code, 0, "switch ns list: {}", r.stderr);
        let rows: Value =
            serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("switch ns list: {e}: {}", r.stdout));
        let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let ports: BTreeMap<String, Port> = rows
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["attached_to"] == self.switch.as_str())
            .map(|p| {
                let port = Port {
                    owner: s(&p["namespace"]),
                    kind: s(&p["kind"]),
                    ip: s(&p["ip"]),
                    host_interface: s(&p["host_interface"]),
                    netns: s(&p["netns"]),
                };
                (port.owner.clone(), port)
            })
            .collect();
        self.host_ifs.extend(ports.values().map(|p| p.host_interface.clone()));
        ports
    }

    /// Host-side interfaces of the switch's ports of kind `adopted` (`switch ports --json`):
    /// namespaces a runtime made.
    pub fn adopted_interfaces(&self) -> Vec<String> {
        let r = run_cmd(Command::new(switch_bin()).args(["ports", "--switch", &self.switch, "--json"]));
        assert_eq!(r.code, 0, "switch ports: {}", r.stderr);
        let rows: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("switch ports: {e}: {}", r.stdout));
        rows.as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["kind"] == "adopted")
            .filter_map(|p| p["interface"].as_str().map(str::to_owned))
            .collect()
    }

    /// Addresses host-local has reserved on the network (a file per address).
    pub fn reservations(&self) -> Vec<String> {
        crate::host_local_reservations(&self.dir.join("ipam").join(&self.switch))
    }

    /// libcni's cached ADD results of this network (removed by the DEL).
    pub fn cached_results(&self) -> Vec<PathBuf> {
        cached_results(&self.switch)
    }

    /// Host-side interfaces the containers' ports had that still exist.
    pub fn host_interfaces_left(&self) -> Vec<String> {
        self.host_ifs.iter().filter(|i| Path::new("/sys/class/net").join(i).exists()).cloned().collect()
    }

    /// The CNI DEL a runtime sends for container `id` (CNI_NETNS empty, as ctr sends it), run
    /// the way libcni runs the plugin: for what ctr 1.6 never DELs (a detached task).
    pub fn cni_del(&self, id: &str) -> Run {
        let list: Value =
            serde_json::from_str(&fs::read_to_string(self.dir.join("net.d/10-switch.conflist")).unwrap()).unwrap();
        let mut conf = list["plugins"][0].clone();
        conf["cniVersion"] = list["cniVersion"].clone();
        conf["name"] = list["name"].clone();
        let (cid, bin) = (self.cni_id(id), self.path("bin"));
        let mut child = Command::new(self.dir.join("bin/switch-cni"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs([
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", cid.as_str()),
                ("CNI_NETNS", ""),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", bin.as_str()),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running switch-cni");
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(conf.to_string().as_bytes()).unwrap();
        let r: Run = child.wait_with_output().unwrap().into();
        // libcni drops its cached result after a DEL.
        let cached = format!("{}-{cid}-eth0", self.switch);
        for f in cached_results(&self.switch).iter().filter(|f| f.ends_with(&cached)) {
            let _ = fs::remove_file(f);
        }
        r
    }

    /// Removes everything the environment made; returns what was left behind.
    fn teardown(&mut self) -> Vec<String> {
        let mut left = vec![];
        if self.daemon.is_some() {
            left.extend(self.remove_containers());
        }
        let ports = self.ports();
        if !ports.is_empty() {
            left.push(format!("ports on {}: {:?}", self.switch, ports.keys().collect::<Vec<_>>()));
        }
        let reserved = self.reservations();
        if !reserved.is_empty() {
            left.push(format!("IPAM reservations: {reserved:?}"));
        }
        for f in self.cached_results() {
            left.push(format!("libcni result {}", f.display()));
            let _ = fs::remove_file(f);
        }
        // The switch stays up after its last container (it is the network): the test takes it
        // down, which also removes any port a missing DEL left, with its veth.
        let r = run_cmd(Command::new(switch_bin()).args(["down", "--switch", &self.switch]));
        if r.code != 0 {
            left.push(format!("switch down --switch {} failed: {}", self.switch, r.stderr.trim()));
        }
        let ifs = self.host_interfaces_left();
        if !ifs.is_empty() {
            left.push(format!("host interfaces: {ifs:?}"));
        }
        let records = self.state_records();
        if !records.is_empty() {
            left.push(format!("state records: {records:?}"));
        }
        left.extend(self.stop_daemon());
        left.extend(clean_dir(&self.dir, &self.prefix));
        remove_builtin_dirs(DIRS_BEFORE.get().expect("recorded before the daemon started"));
        left
    }

    /// Kills and removes every container of the namespace; returns complaints.
    fn remove_containers(&mut self) -> Vec<String> {
        let mut left = vec![];
        let ids = self.ctr(&["container", "ls", "-q"]).stdout;
        for id in ids.lines().filter(|l| !l.is_empty()) {
            if self.task_status(id).as_deref() == Some("RUNNING") {
                let _ = self.ctr(&["task", "kill", "--signal", "KILL", id]);
            }
            let attached = self.attached.remove(id);
            let detached = attached.is_none();
            if let Some(mut child) = attached {
                // It sends the DEL once the task is gone.
                if !wait_until(Duration::from_secs(15), || child.try_wait().ok().flatten().is_some()) {
                    left.push(format!("ctr run {id} did not exit"));
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
            if self.task_status(id).is_some() {
                let _ = self.ctr(&["task", "rm", "--force", id]);
            }
            let r = self.ctr(&["container", "rm", id]);
            if r.code != 0 {
                left.push(format!("ctr container rm {id}: {}", r.stderr.trim()));
            }
            if detached && ctr_version() < (1, 7) {
                // What ctr 1.6 never sends for a detached task (see `cni_del`).
                let r = self.cni_del(id);
                if r.code != 0 {
                    left.push(format!("DEL of {id}: {}{}", r.stdout, r.stderr));
                }
            }
        }
        for (id, mut child) in std::mem::take(&mut self.attached) {
            let _ = child.kill();
            let _ = child.wait();
            left.push(format!("ctr run {id} was still attached without a container"));
        }
        let remaining = self.ctr(&["container", "ls", "-q"]).stdout;
        if !remaining.trim().is_empty() {
            left.push(format!("containers: {}", remaining.trim().replace('\n', " ")));
        }
        left
    }

    /// Records of the switch state that name the environment: its switch or its containers.
    fn state_records(&self) -> Vec<String> {
        let r = run_cmd(Command::new(switch_bin()).args(["list", "--json"]));
        let switches: Value = serde_json::from_str(&r.stdout).unwrap_or(Value::Null);
        let mut v: Vec<String> = switches
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["name"].as_str())
            .filter(|n| *n == self.switch)
            .map(|n| format!("switch {n}"))
            .collect();
        let r = run_cmd(Command::new(switch_bin()).args(["ns", "list", "--json"]));
        let nss: Value = serde_json::from_str(&r.stdout).unwrap_or(Value::Null);
        v.extend(
            nss.as_array()
                .into_iter()
                .flatten()
                .filter_map(|n| n["namespace"].as_str())
                .filter(|n| n.starts_with(&format!("{}-", self.prefix)))
                .map(|n| format!("port of {n}")),
        );
        v
    }

    /// Stops the daemon (SIGTERM, then SIGKILL); returns complaints.
    fn stop_daemon(&mut self) -> Vec<String> {
        let Some(mut child) = self.daemon.take() else { return vec![] };
        // SAFETY: signals a child this environment started and has not reaped yet.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let mut left = vec![];
        if !wait_until(Duration::from_secs(10), || child.try_wait().ok().flatten().is_some()) {
            left.push("containerd did not stop on SIGTERM within 10 s".to_owned());
            let _ = child.kill();
            let _ = child.wait();
        }
        left
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let left = self.teardown();
        crate::report_leftovers(&format!("containerd environment {}", self.prefix), &left);
    }
}

/// libcni's cached ADD results of network `net`.
fn cached_results(net: &str) -> Vec<PathBuf> {
    fs::read_dir(Path::new(LIBCNI_CACHE).join("results"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&format!("{net}-")))
        .map(|e| e.path())
        .collect()
}

/// Processes whose command line names `dir`: the daemon (`--config DIR/...`) and its shims
/// (`-address DIR/containerd.sock`).
fn processes_of(dir: &Path) -> Vec<u32> {
    let needle = format!("{}/", dir.display());
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains(&needle)
        })
        .collect()
}

/// The socket a shim listens on, from its command line (`-namespace NS -id ID -address A`):
/// /run/containerd/s/ followed by the SHA-256 of `A/NS/ID` in hex, as containerd 1.6 names it.
fn shim_socket(pid: u32) -> Option<PathBuf> {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    if !args.first()?.ends_with("containerd-shim-runc-v2") {
        return None;
    }
    let arg = |name: &str| Some(args.get(args.iter().position(|a| a == name)? + 1)?.clone());
    let key = format!("{}/{}/{}", arg("-address")?, arg("-namespace")?, arg("-id")?);
    let mut sum = Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().ok()?;
    use std::io::Write as _;
    sum.stdin.take()?.write_all(key.as_bytes()).ok()?;
    let out = String::from_utf8(sum.wait_with_output().ok()?.stdout).ok()?;
    Some(Path::new(SHIM_SOCKETS).join("s").join(out.split_whitespace().next()?))
}

/// Kills the processes of `dir` and their children (the containers under a shim), and removes
/// the sockets of the shims (a killed shim leaves its socket).
fn kill_processes_of(dir: &Path) -> Vec<u32> {
    let pids = processes_of(dir);
    let sockets: Vec<PathBuf> = pids.iter().filter_map(|p| shim_socket(*p)).collect();
    for pid in &pids {
        for task in fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().filter_map(Result::ok) {
            let children = fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children.split_whitespace().filter_map(|c| c.parse::<i32>().ok()) {
                // SAFETY: plain kill(2) of a process the environment's shim started.
                unsafe { libc::kill(child, libc::SIGKILL) };
            }
        }
        // SAFETY: plain kill(2) of the environment's daemon or shim.
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
    }
    for s in sockets {
        let _ = fs::remove_file(s);
    }
    pids
}

/// The parent cgroups runc made for ctr namespace `ns` (`/NS/ID` on every hierarchy).
fn cgroups_of(ns: &str) -> Vec<PathBuf> {
    fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|h| h.path().join(ns))
        .chain(std::iter::once(Path::new("/sys/fs/cgroup").join(ns)))
        .filter(|p| p.is_dir())
        .collect()
}

/// Removes what is left of an environment once its daemon is stopped: processes, mounts,
/// cgroups, the directory, and the built-in directories if they were made for it. Returns
/// complaints.
fn clean_dir(dir: &Path, ns: &str) -> Vec<String> {
    let mut left = vec![];
    // A shim exits on its own shortly after its task is deleted.
    if !wait_until(Duration::from_secs(5), || processes_of(dir).is_empty()) {
        left.push(format!("processes: {:?}", kill_processes_of(dir)));
    }
    let mounts = mounts_below(dir);
    for p in &mounts {
        let _ = run_cmd(Command::new("umount").args(["-l", p]));
    }
    if !mounts.is_empty() {
        left.push(format!("mounts: {mounts:?}"));
    }
    for cg in cgroups_of(ns) {
        // Empty once their containers are gone; rmdir is how cgroups are removed.
        for sub in fs::read_dir(&cg).into_iter().flatten().filter_map(Result::ok).filter(|e| e.path().is_dir()) {
            left.push(format!("cgroup {}", sub.path().display()));
            // Busy until its killed processes have exited.
            wait_until(Duration::from_secs(5), || fs::remove_dir(sub.path()).is_ok());
        }
        if let Err(e) = fs::remove_dir(&cg) {
            left.push(format!("cgroup {}: {e}", cg.display()));
        }
    }
    if let Err(e) = fs::remove_dir_all(dir) {
        left.push(format!("{}: {e}", dir.display()));
    }
    left
}

/// Removes the built-in directories that are not in `before`, if they are empty (another
/// environment may be using them).
fn remove_builtin_dirs(before: &BTreeSet<PathBuf>) {
    for (d, sub) in [(LIBCNI_CACHE, "results"), (SHIM_SOCKETS, "s")] {
        if !before.contains(Path::new(d)) {
            let _ = fs::remove_dir(Path::new(d).join(sub));
            let _ = fs::remove_dir(d);
        }
    }
}

/// Whether process `pid` lives.
fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes what killed test processes left (their pid is gone): their daemons, shims and
/// containers, their switches (with the ports of their containers), cached results, mounts,
/// cgroups and directories.
fn sweep_stale() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else { return };
    let mut swept = false;
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((pid, k)) = name.strip_prefix(DIR_PREFIX).and_then(|r| r.split_once('-')) else { continue };
        let (Ok(pid), Ok(k)) = (pid.parse::<u32>(), k.parse::<u32>()) else { continue };
        if !e.path().is_dir() || alive(pid) {
            continue;
        }
        let dir = e.path();
        eprintln!("containerd: removing {} left by a killed test process", dir.display());
        kill_processes_of(&dir);
        if let Ok(sw) = fs::read_to_string(dir.join(SWITCH_FILE)) {
            let _ = run_cmd(Command::new(switch_bin()).args(["down", "--switch", sw.trim()]));
            for f in cached_results(sw.trim()) {
                let _ = fs::remove_file(f);
            }
        }
        clean_dir(&dir, &format!("k{:04}{:02}", pid % 10_000, k % 100));
        swept = true;
    }
    if swept {
        // Made by the killed process, as far as can be told: empty ones hold nothing of anybody.
        remove_builtin_dirs(&BTreeSet::new());
    }
}
