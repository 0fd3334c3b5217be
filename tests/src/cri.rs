//! A Kubernetes node without kubelet: a private containerd with its CRI plugin on, driven
//! through the CRI gRPC API as kubelet drives it, its pods on a switch-cni network.
//!
//! Every [`Cri`] is a containerd environment of the container-env crate made with
//! `Env::create_cri` (its daemon, directory, sandbox image, and what containerd writes at
//! built-in locations: see container-env/src/containerd.rs) plus, as in
//! [`crate::containerd`]: a switch-cni conflist in its CNI conf dir, switch-cni, host-local
//! and loopback (CRI sets up every pod's `lo` with it) in its CNI bin dir. The switch has an
//! uplink: a veth to an outside namespace (10.141.N.2 behind 10.141.N.1), through which
//! published ports are reached and pods reach the outside. Pods get 10.140.N.0/24.
//!
//! switch-cni is reached through a recorder: a script in the bin dir that keeps every call's
//! `CNI_*` variables and configuration (what the CRI plugin really sends) in `cni-calls/`
//! and runs the plugin with them.
//!
//! Tear-down (on drop, also after a panic): every pod stopped and removed through CRI, then
//! checked that no port, veth, lease, libcni result, pod network namespace or forward is
//! left; the switch and the outside go (the ledger), the daemon stops, the directory is
//! removed. What a killed test process left is removed by the next one (the ledger lists
//! the switch, the outside and its forwarding rules; the pods' network namespaces are those
//! the recorder saw).
use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::{OnceLock, atomic::AtomicU32},
    time::Duration,
};

use container_env::{
    cni,
    command::wait_until,
    containerd::{self, Env, cached_results},
    cri::{Client, HostPort, Pod, api},
    ledger::{self, Owned},
    workdir,
};

use crate::{Run, Value, host, json, switch_bin};

/// The image of the pods' containers: busybox (`PATH=/bin`).
pub const IMAGE: &str = "localhost/switch-test-busybox:latest";
/// The sandbox ("pause") image of every pod.
pub const PAUSE_IMAGE: &str = "localhost/switch-test-pause:latest";

/// Environments live in `switch-cri-PID-N` under the temporary directory.
const DIR_PREFIX: &str = "switch-cri-";

static ENVS: AtomicU32 = AtomicU32::new(0);

/// The built-in directories that existed before this process started its first daemon.
static DIRS_BEFORE: OnceLock<BTreeSet<PathBuf>> = OnceLock::new();

/// Records a CNI call (`$CNI_*` and the configuration, a file per call in `DIR`) and runs the
/// plugin `PLUGIN` with the same input; `sh -c SCRIPT sh DIR PLUGIN`.
const RECORDER: &str = r#"#!/bin/sh
conf=$(cat)
f="@DIR@/$(date +%s%N)-$$"
{ env | grep '^CNI_' | sort; echo "CONF=$conf"; } > "$f.tmp" && mv "$f.tmp" "$f"
printf '%s' "$conf" | exec "@PLUGIN@"
"#;

/// One CNI call as the recorder saw it.
#[derive(Clone, Debug)]
pub struct CniCall {
    /// `CNI_COMMAND`.
    pub command: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`.
    pub netns: String,
    /// `CNI_ARGS`.
    pub args: String,
    /// The configuration on stdin.
    pub conf: Value,
}

/// A pod the test made: its sandbox ID, configuration and address.
#[derive(Clone, Debug)]
pub struct PodRun {
    /// The sandbox ID (`CNI_CONTAINERID`).
    pub id: String,
    /// What RunPodSandbox was given.
    pub config: api::PodSandboxConfig,
    /// The address PodSandboxStatus reports.
    pub ip: String,
}

/// A pod's port as `switch ns list` and `switch ports` show it.
#[derive(Clone, Debug)]
pub struct PodPort {
    /// The port's name (the sandbox ID).
    pub owner: String,
    /// Address with prefix length.
    pub ip: String,
    /// Host end of the veth.
    pub host_interface: String,
    /// The pod's network namespace file (`/var/run/netns/cni-...`).
    pub netns: String,
    /// `namespace/name` of the pod.
    pub workload: String,
}

/// One test's containerd with CRI, network and outside.
pub struct Cri {
    env: Env,
    client: Option<Client>,
    /// The prefix of every name the environment makes (`criPPPPK`), also its pods' cgroup.
    pub prefix: String,
    /// The switch (and CNI network) name.
    pub switch: String,
    /// `10.140.N.0/24`.
    pub subnet: String,
    /// `10.140.N.1`: the pods' gateway.
    pub gateway: String,
    /// The outside namespace.
    pub outside: String,
    /// The uplink: the host's end of the outside's veth.
    pub uplink: String,
    /// The host's address on the uplink, `10.141.N.1`.
    pub uplink_ip: String,
    /// The outside's address, `10.141.N.2`.
    pub outside_ip: String,
    /// Host-side interfaces the pods' ports had (each must be gone after tear-down).
    host_ifs: BTreeSet<String>,
    /// Network namespaces the pods had.
    netns: BTreeSet<String>,
}

fn fail<T>(e: container_env::Error) -> T {
    panic!("containerd with CRI cannot run on this machine: {e}")
}

impl Cri {
    /// A running daemon with CRI, both images, a switch-cni network on 10.140.`n`.0/24 and an
    /// outside on 10.141.`n`.0/24. Panics, saying why, when it cannot run here.
    pub fn new(n: u8) -> Self {
        if let Some(why) = containerd::unavailable() {
            panic!("containerd cannot run on this machine: {why}");
        }
        DIRS_BEFORE.get_or_init(|| {
            for dir in workdir::stale(DIR_PREFIX) {
                own_recorded_netns(&dir);
            }
            for dir in containerd::sweep_stale(DIR_PREFIX, &switch_bin()) {
                eprintln!("cri: removed {} left by a killed test process", dir.display());
            }
            containerd::builtin_dirs()
        });
        let (dir, k) = workdir::next(DIR_PREFIX, &ENVS);
        let prefix = format!("cri{:04}{}", std::process::id() % 10_000, k % 10);
        // Constructed before anything is made, so a failure below still tears down.
        let mut env = Self {
            env: Env::create_cri(&dir, &prefix, PAUSE_IMAGE).unwrap_or_else(fail),
            client: None,
            switch: format!("{prefix}sw"),
            outside: format!("{prefix}out"),
            uplink: format!("{prefix}up"),
            prefix,
            subnet: format!("10.140.{n}.0/24"),
            gateway: format!("10.140.{n}.1"),
            uplink_ip: format!("10.141.{n}.1"),
            outside_ip: format!("10.141.{n}.2"),
            host_ifs: BTreeSet::new(),
            netns: BTreeSet::new(),
        };
        env.make_outside();
        env.allow_forwarding();
        env.write_network();
        env.env.start().unwrap_or_else(fail);
        env.env.import_pause(PAUSE_IMAGE).unwrap_or_else(fail);
        env.env.import_busybox(IMAGE).unwrap_or_else(fail);
        env.connect();
        env
    }

    /// The outside namespace behind the uplink veth, in the ledger before it is made.
    fn make_outside(&self) {
        let own = |kind, name: &str| ledger::own(self.env.dir(), kind, name).unwrap_or_else(|e| panic!("{e}"));
        own(Owned::Netns, &self.outside);
        own(Owned::Link, &self.uplink);
        let (ns, up) = (self.outside.as_str(), self.uplink.as_str());
        host("ip", &["netns", "add", ns]);
        host("ip", &["link", "add", up, "type", "veth", "peer", "name", "eth0", "netns", ns]);
        host("ip", &["addr", "add", &format!("{}/24", self.uplink_ip), "dev", up]);
        host("ip", &["link", "set", up, "up"]);
        host("ip", &["-n", ns, "addr", "add", &format!("{}/24", self.outside_ip), "dev", "eth0"]);
        host("ip", &["-n", ns, "link", "set", "eth0", "up"]);
        host("ip", &["-n", ns, "link", "set", "lo", "up"]);
        host("ip", &["-n", ns, "route", "add", "default", "via", &self.uplink_ip]);
    }

    /// Lets the host forward the pods' traffic (to and from the outside) whatever the filter
    /// FORWARD policy is, as a node's network add-on does for its pod CIDR (flannel's
    /// `-s POD_CIDR -j ACCEPT`, kube-proxy's KUBE-FORWARD): another program on the machine
    /// (dockerd) may set the policy to DROP meanwhile, and switch-cni adds no such rule. The
    /// rules carry the reference plugins' comment naming the network, so the ledger's
    /// network entry removes them (also after a killed run).
    fn allow_forwarding(&self) {
        ledger::own(self.env.dir(), Owned::Network, &self.switch).unwrap_or_else(|e| panic!("{e}"));
        let comment = format!(r#"name: "{}" id: "pod CIDR forwarding""#, self.switch);
        for dir in ["-s", "-d"] {
            let rule =
                ["-w", "-I", "FORWARD", dir, &self.subnet, "-m", "comment", "--comment", &comment, "-j", "ACCEPT"];
            host("iptables", &rule);
        }
    }

    /// The switch-cni network (its switch in the ledger), its plugins and the recorder.
    fn write_network(&self) {
        let dir = self.env.dir();
        ledger::own(dir, Owned::Switch, &self.switch).unwrap_or_else(|e| panic!("{e}"));
        let ipam = cni::host_local(&dir.join("ipam"), &self.subnet, &self.gateway);
        let mut conf = cni::conflist(&self.switch, cni::switch_cni(&self.switch, &self.uplink, ipam));
        // What kubelet's runtimes are given today; the plugin speaks it.
        conf["cniVersion"] = "1.0.0".into();
        fs::write(self.env.net_d().join("10-switch.conflist"), serde_json::to_string_pretty(&conf).unwrap()).unwrap();
        for p in ["host-local", "loopback"] {
            self.env.add_plugin(&Path::new("/usr/lib/cni").join(p), false).unwrap_or_else(|e| panic!("{e}"));
        }
        let plugin = switch_bin().with_file_name("switch-cni");
        assert!(plugin.exists(), "{} not built", plugin.display());
        let calls = dir.join("cni-calls");
        fs::create_dir_all(&calls).unwrap();
        let script = RECORDER.replace("@DIR@", &calls.to_string_lossy()).replace("@PLUGIN@", &plugin.to_string_lossy());
        let recorder = dir.join("bin/switch-cni");
        fs::write(&recorder, script).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(&recorder, fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// (Re)connects the CRI client, waiting (up to 15 s) until CRI answers.
    fn connect(&mut self) {
        let socket = self.env.socket();
        let mut last = None;
        let up = wait_until(Duration::from_secs(15), || {
            match Client::connect(&socket).and_then(|mut c| {
                c.version()?;
                Ok(c)
            }) {
                Ok(c) => {
                    self.client = Some(c);
                    true
                }
                Err(e) => {
                    last = Some(e);
                    false
                }
            }
        });
        assert!(up, "CRI does not answer on {}: {last:?}", socket.display());
    }

    fn client(&mut self) -> &mut Client {
        self.client.as_mut().expect("connected")
    }

    /// A pod named `name` in Kubernetes namespace `namespace`, with `ports` published.
    pub fn pod(&self, namespace: &str, name: &str, ports: &[HostPort]) -> Pod {
        Pod {
            namespace: namespace.into(),
            name: name.into(),
            uid: format!("{}-{name}-uid", self.prefix),
            ports: ports.to_vec(),
            cgroup_parent: format!("/{}", self.prefix),
            log_directory: self.env.dir().join("logs").join(name),
        }
    }

    /// The CNI configuration directory the CRI plugin reads.
    pub fn net_d(&self) -> PathBuf {
        self.env.net_d()
    }

    /// RunPodSandbox and PodSandboxStatus: the pod, ready, with its address.
    pub fn run_pod(&mut self, pod: &Pod) -> PodRun {
        self.try_run_pod(pod).unwrap_or_else(|e| panic!("{}: {e}", pod.name))
    }

    /// `run_pod`, RunPodSandbox's error returned instead of a panic.
    pub fn try_run_pod(&mut self, pod: &Pod) -> Result<PodRun, String> {
        fs::create_dir_all(&pod.log_directory).unwrap();
        let config = pod.config();
        let id = self.client().run_pod(&config).map_err(|e| e.to_string())?;
        let (state, ip) = self.client().pod_status(&id).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(state, "SANDBOX_READY", "pod {}", pod.name);
        let port =
            self.port_of(&ip).unwrap_or_else(|| panic!("pod {} ({ip}) has no port on {}", pod.name, self.switch));
        self.netns.insert(port.netns);
        Ok(PodRun { id, config, ip })
    }

    /// CreateContainer and StartContainer: container `name` of `pod` running `cmd`.
    pub fn start(&mut self, pod: &PodRun, name: &str, cmd: &[&str]) -> String {
        let id = self.client().start_container(&pod.id, &pod.config, name, IMAGE, cmd);
        id.unwrap_or_else(|e| panic!("container {name}: {e}"))
    }

    /// ExecSync in container `id` (10 s at most).
    pub fn exec(&mut self, id: &str, cmd: &[&str]) -> Run {
        let (code, stdout, stderr) = self.client().exec(id, cmd, 10).unwrap_or_else(|e| panic!("{e}"));
        Run { code, stdout, stderr }
    }

    /// StopPodSandbox.
    pub fn stop_pod(&mut self, pod: &PodRun) {
        self.client().stop_pod(&pod.id).unwrap_or_else(|e| panic!("{e}"));
    }

    /// RemovePodSandbox.
    pub fn remove_pod(&mut self, pod: &PodRun) {
        self.client().remove_pod(&pod.id).unwrap_or_else(|e| panic!("{e}"));
    }

    /// StopPodSandbox then RemovePodSandbox.
    pub fn stop_and_remove(&mut self, pod: &PodRun) {
        self.stop_pod(pod);
        self.remove_pod(pod);
    }

    /// The pods CRI lists.
    pub fn pods(&mut self) -> Vec<String> {
        self.client().pods().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Stops and removes every pod sandbox CRI lists, as kubelet does with the ones whose
    /// RunPodSandbox failed (containerd keeps those until told).
    pub fn remove_all_pods(&mut self) {
        for id in self.pods() {
            let _ = self.client().stop_pod(&id);
            self.client().remove_pod(&id).unwrap_or_else(|e| panic!("removing pod {id}: {e}"));
        }
    }

    /// Stops the daemon (SIGTERM: the pods' shims and containers keep running) and starts it
    /// again with the same configuration and state; reconnects.
    pub fn restart_daemon(&mut self) {
        self.client = None;
        let left = self.env.stop();
        assert!(left.is_empty(), "{left:?}");
        self.env.start().unwrap_or_else(fail);
        self.connect();
    }

    /// The port of the pod with address `ip` (without prefix length) on the switch, if any;
    /// records its host interface.
    pub fn port_of(&mut self, ip: &str) -> Option<PodPort> {
        let is_it = |v: &Value| v.as_str().is_some_and(|a| a.split('/').next() == Some(ip));
        let ns = json(&["ns", "list"]);
        let row = ns.as_array()?.iter().find(|p| p["attached_to"] == self.switch.as_str() && is_it(&p["ip"]))?;
        let ports = json(&["ports", "--switch", &self.switch]);
        let workload = ports.as_array()?.iter().find(|p| is_it(&p["ip"])).map(|p| p["workload"].clone());
        let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let port = PodPort {
            owner: s(&row["namespace"]),
            ip: s(&row["ip"]),
            host_interface: s(&row["host_interface"]),
            netns: s(&row["netns"]),
            workload: workload.as_ref().map(s).unwrap_or_default(),
        };
        self.host_ifs.insert(port.host_interface.clone());
        Some(port)
    }

    /// Ports of the switch other than its gateway and uplink (`switch ports`).
    pub fn pod_ports(&self) -> Vec<Value> {
        Self::adopted(&json(&["ports", "--switch", &self.switch]))
    }

    fn adopted(rows: &Value) -> Vec<Value> {
        rows.as_array().into_iter().flatten().filter(|p| p["kind"] == "adopted").cloned().collect()
    }

    /// The switch's forwards (`switch forward list`).
    pub fn forwards(&self) -> Vec<Value> {
        json(&["forward", "list", "--switch", &self.switch]).as_array().cloned().unwrap_or_default()
    }

    /// `switch ARGS --json`, or `Null` if it fails (the switch is not up: tear-down after a
    /// failure must go on).
    fn listed(args: &[&str]) -> Value {
        let mut cmd = Command::new(switch_bin());
        cmd.args(args).arg("--json");
        let out = cmd.output().ok().filter(|o| o.status.success()).map(|o| o.stdout).unwrap_or_default();
        serde_json::from_slice(&out).unwrap_or(Value::Null)
    }

    /// Addresses host-local has reserved on the network.
    pub fn reservations(&self) -> Vec<String> {
        crate::host_local_reservations(&self.env.dir().join("ipam").join(&self.switch))
    }

    /// libcni's cached ADD results of this network.
    pub fn cached_results(&self) -> Vec<PathBuf> {
        cached_results(&self.switch)
    }

    /// Host interfaces and network namespaces the pods had that still exist.
    pub fn pod_leftovers(&self) -> Vec<String> {
        let ifs = self.host_ifs.iter().filter(|i| Path::new("/sys/class/net").join(i).exists());
        let netns = self.netns.iter().filter(|n| Path::new(n).exists());
        ifs.chain(netns).cloned().collect()
    }

    /// Every CNI call the CRI plugin made so far, in order.
    pub fn cni_calls(&self) -> Vec<CniCall> {
        let mut files: Vec<PathBuf> = fs::read_dir(self.env.dir().join("cni-calls"))
            .into_iter()
            .flatten()
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| p.extension().is_none())
            .collect();
        files.sort();
        files.iter().map(|f| parse_call(&fs::read_to_string(f).unwrap_or_default())).collect()
    }

    /// Asks `addr:port` from the outside namespace with `nc`; what came back.
    pub fn ask_from_outside(&self, addr: &str, port: &str) -> String {
        let script = format!("echo hello | busybox nc -w 3 {addr} {port}");
        let o = Command::new("ip").args(["netns", "exec", &self.outside, "sh", "-c", &script]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    }

    /// Runs `cmd` in the outside namespace in the background (a server), once it printed
    /// `ready`; killed on drop.
    pub fn spawn_outside(&self, cmd: &[&str]) -> crate::Reaped {
        crate::spawn_until(Command::new("ip").args(["netns", "exec", &self.outside]).args(cmd), "ready")
    }

    /// Removes everything the environment made; returns what was left behind.
    fn teardown(&mut self) -> Vec<String> {
        let mut left = vec![];
        if self.env.started() && self.client.is_some() {
            for pod in self.client().pods().unwrap_or_default() {
                left.push(format!("pod {pod}"));
                let c = self.client();
                if let Err(e) = c.stop_pod(&pod).and_then(|()| c.remove_pod(&pod)) {
                    left.push(e.to_string());
                }
            }
        }
        let rows = Self::listed(&["ports", "--switch", &self.switch]);
        let ports: Vec<String> = Self::adopted(&rows).iter().map(|p| p["owner"].to_string()).collect();
        if !ports.is_empty() {
            left.push(format!("ports on {}: {ports:?}", self.switch));
        }
        let reserved = self.reservations();
        if !reserved.is_empty() {
            left.push(format!("IPAM reservations: {reserved:?}"));
        }
        for f in self.cached_results() {
            left.push(format!("libcni result {}", f.display()));
            let _ = fs::remove_file(f);
        }
        let forwards = Self::listed(&["forward", "list", "--switch", &self.switch]);
        if forwards.as_array().is_some_and(|f| !f.is_empty()) {
            left.push(format!("forwards: {forwards}"));
        }
        self.client = None;
        // The daemon first; then the pods' namespaces it left go with the switch.
        left.extend(self.env.stop());
        let stray = own_recorded_netns(self.env.dir());
        if !stray.is_empty() {
            left.push(format!("pod network namespaces: {stray:?}"));
        }
        left.extend(ledger::remove_owned(self.env.dir(), &switch_bin(), &[]));
        let pods = self.pod_leftovers();
        if !pods.is_empty() {
            left.push(format!("pod interfaces and namespaces: {pods:?}"));
        }
        left.extend(self.env.remove(DIRS_BEFORE.get().expect("recorded before the daemon started")));
        left
    }
}

/// Puts the network namespaces the recorder saw (in `dir`'s `cni-calls`) that still exist
/// into the environment's ledger, for removal: CRI keeps a pod's namespace when its DEL failed
/// (for kubelet to retry), and a killed run leaves every one. Returns their names.
fn own_recorded_netns(dir: &Path) -> BTreeSet<String> {
    let calls = fs::read_dir(dir.join("cni-calls")).into_iter().flatten().filter_map(Result::ok);
    let netns: BTreeSet<String> = calls
        .map(|f| parse_call(&fs::read_to_string(f.path()).unwrap_or_default()).netns)
        .filter(|n| n.starts_with("/var/run/netns/cni-") && Path::new(n).exists())
        .filter_map(|n| n.rsplit('/').next().map(str::to_owned))
        .collect();
    let owned = ledger::owned(dir, Owned::Netns);
    for n in netns.iter().filter(|n| !owned.contains(n)) {
        let _ = ledger::own(dir, Owned::Netns, n);
    }
    netns
}

/// A recorded call: `CNI_K=V` lines, then `CONF=` and the configuration.
fn parse_call(text: &str) -> CniCall {
    let (vars, conf) = text.split_once("CONF=").unwrap_or((text, "null"));
    let var = |k: &str| vars.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).unwrap_or_default().to_owned();
    CniCall {
        command: var("CNI_COMMAND"),
        container_id: var("CNI_CONTAINERID"),
        netns: var("CNI_NETNS"),
        args: var("CNI_ARGS"),
        conf: serde_json::from_str(conf.trim()).unwrap_or(Value::Null),
    }
}

impl Drop for Cri {
    fn drop(&mut self) {
        let left = self.teardown();
        crate::report_leftovers(&format!("CRI environment {}", self.prefix), &left);
    }
}
