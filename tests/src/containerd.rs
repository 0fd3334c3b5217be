//! A containerd test environment: a private containerd daemon and `ctr run --cni` on a
//! switch-cni network, without touching the machine's own containerd or CNI set-up.
//!
//! Every [`Containerd`] is a containerd environment of the container-env crate (see
//! container-env/src/containerd.rs: its daemon, directory, `ctr` in a mount namespace of its
//! own, and what containerd writes at built-in locations) with a switch-cni network on it:
//! the conflist in its `net.d`, switch-cni (beside `switch`) and a copy of host-local in its
//! `bin`. The image is busybox-static as an OCI archive, imported offline into its own store.
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

use container_env::{
    cni,
    command::wait_until,
    containerd::{self, Env, cached_results, ctr_version},
    ledger::{self, Owned},
    workdir,
};

use crate::{Run, Value, switch_bin};

/// The image every test container runs: busybox (`PATH=/bin`, `CMD /bin/sh`).
pub const IMAGE: &str = "localhost/switch-test-busybox:latest";

/// Environments live in `switch-containerd-PID-N` under the temporary directory.
const DIR_PREFIX: &str = "switch-containerd-";

static ENVS: AtomicU32 = AtomicU32::new(0);
static EXECS: AtomicU32 = AtomicU32::new(0);

/// The built-in directories that existed before this process started its first daemon.
static DIRS_BEFORE: OnceLock<BTreeSet<PathBuf>> = OnceLock::new();

fn run_cmd(cmd: &mut Command) -> Run {
    cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}")).into()
}

/// One test's containerd, network and containers.
pub struct Containerd {
    env: Env,
    /// The ctr namespace, and the prefix of every name the environment makes.
    pub prefix: String,
    /// The switch (and CNI network) name.
    pub switch: String,
    /// `10.90.N.0/24`.
    pub subnet: String,
    /// The switch's address, `10.90.N.1`: the containers' default gateway.
    pub gateway: String,
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
        if let Some(why) = containerd::unavailable() {
            panic!("containerd cannot run on this machine: {why}");
        }
        // Once per process, the sweep first: the built-in directories a killed process made
        // are not the machine's.
        DIRS_BEFORE.get_or_init(|| {
            for dir in containerd::sweep_stale(DIR_PREFIX, &switch_bin()) {
                eprintln!("containerd: removed {} left by a killed test process", dir.display());
            }
            containerd::builtin_dirs()
        });
        let (dir, k) = workdir::next(DIR_PREFIX, &ENVS);
        let prefix = format!("k{:04}{:02}", std::process::id() % 10_000, k % 100);
        fn fail<T>(e: container_env::Error) -> T {
            panic!("containerd cannot run on this machine: {e}")
        }
        // Constructed before the daemon starts, so a failure below still tears down.
        let mut env = Self {
            env: Env::create(&dir, &prefix).unwrap_or_else(fail),
            switch: format!("{prefix}sw"),
            prefix,
            subnet: format!("10.90.{n}.0/24"),
            gateway: format!("10.90.{n}.1"),
            attached: BTreeMap::new(),
            host_ifs: BTreeSet::new(),
        };
        env.write_network();
        env.env.start().unwrap_or_else(fail);
        env.env.import_busybox(IMAGE).unwrap_or_else(|e| panic!("{e}"));
        env
    }

    /// The switch-cni network: its switch in the ledger, its conflist, its plugins.
    fn write_network(&self) {
        ledger::own(self.env.dir(), Owned::Switch, &self.switch).unwrap_or_else(|e| panic!("{e}"));
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": self.switch,
            "plugins": [{
                "type": "switch-cni",
                "switch": self.switch,
                "ipam": cni::host_local(&self.env.dir().join("ipam"), &self.subnet, &self.gateway),
            }]
        });
        fs::write(self.env.net_d().join("10-switch.conflist"), serde_json::to_string_pretty(&conf).unwrap()).unwrap();
        let plugin = switch_bin().with_file_name("switch-cni");
        assert!(plugin.exists(), "{} not built", plugin.display());
        self.env.add_plugin(&plugin, false).unwrap_or_else(|e| panic!("{e}"));
        // A copy, not a link: /usr/lib/cni itself is hidden behind `bin` for ctr.
        self.env.add_plugin(Path::new("/usr/lib/cni/host-local"), true).unwrap_or_else(|e| panic!("{e}"));
    }

    /// `ctr ARGS` against this environment's daemon and namespace, in a mount namespace where
    /// /etc/cni/net.d and the plugin directories are this environment's.
    pub fn ctr_cmd(&self, args: &[&str]) -> Command {
        self.env.ctr_command(args)
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
        let out = fs::File::create(self.env.dir().join(format!("logs/{id}.log"))).unwrap();
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
        self.env.dir().join(sub).to_str().unwrap().to_owned()
    }

    /// What an attached `ctr run` printed.
    pub fn log(&self, id: &str) -> String {
        fs::read_to_string(self.env.dir().join(format!("logs/{id}.log"))).unwrap_or_default()
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
        crate::host_local_reservations(&self.env.dir().join("ipam").join(&self.switch))
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
            serde_json::from_str(&fs::read_to_string(self.env.dir().join("net.d/10-switch.conflist")).unwrap())
                .unwrap();
        let mut conf = list["plugins"][0].clone();
        conf["cniVersion"] = list["cniVersion"].clone();
        conf["name"] = list["name"].clone();
        let (cid, bin) = (self.cni_id(id), self.path("bin"));
        let mut child = Command::new(self.env.dir().join("bin/switch-cni"))
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
        if self.env.started() {
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
        // The switch stays up after its last container (it is the network): the ledger takes
        // it down, which also removes any port a missing DEL left, with its veth.
        left.extend(ledger::remove_owned(self.env.dir(), &switch_bin(), &[]));
        let ifs = self.host_interfaces_left();
        if !ifs.is_empty() {
            left.push(format!("host interfaces: {ifs:?}"));
        }
        let records = self.state_records();
        if !records.is_empty() {
            left.push(format!("state records: {records:?}"));
        }
        left.extend(self.env.remove(DIRS_BEFORE.get().expect("recorded before the daemon started")));
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
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let left = self.teardown();
        crate::report_leftovers(&format!("containerd environment {}", self.prefix), &left);
    }
}
