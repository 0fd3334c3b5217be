//! A private containerd: a daemon of its own, driven through `ctr`, without touching the
//! machine's containerd or CNI set-up.
//!
//! Every environment has a directory holding everything of its daemon: the configuration
//! (root, state, gRPC and ttrpc sockets, the `opt` plugin's directory; the CRI plugin off, or on:
//! [`Env::create_cri`]),
//! its image store and snapshots, runc's state (`runc`, for `--runc-root`), the IO FIFOs
//! (`fifo`), the CNI configuration (`net.d`) and plugins (`bin`). The daemon is a child
//! process ([`Daemon`]), never a service, and never reads /etc/containerd or writes
//! /var/lib/containerd.
//!
//! `ctr` 1.6 has no flag for its CNI directories: it loads the lexically first configuration
//! in /etc/cni/net.d and runs plugins from /opt/cni/bin and /usr/lib/cni. So every `ctr` runs
//! in a mount namespace of its own (`unshare --mount`, private propagation) in which `net.d`
//! is bind-mounted over /etc/cni/net.d and `bin` over those plugin directories; the machine's
//! files are never changed and nobody else sees the mounts. The plugins share everything else
//! with the host (/run/switch, bpffs, /proc).
//!
//! What containerd and libcni write at built-in locations whatever the configuration says is
//! given back: the shims' sockets (/run/containerd/s), libcni's result cache
//! (/var/lib/cni/results/NETWORK-*), and the containers' parent cgroups (named after the ctr
//! namespace). The directories are removed if they were not there before and are empty.
use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use crate::{
    Error, Result,
    command::{installed, output_as, run, wait_until},
    daemon::{self, Daemon},
    image, ledger, toml_str, workdir,
};

/// Where ctr's libcni caches ADD results (`results/NETWORK-CONTAINERID-IFNAME`); not
/// configurable through ctr.
const LIBCNI_CACHE: &str = "/var/lib/cni";
/// Where the runc shims of every containerd put their sockets (`s/HASH`); not configurable.
const SHIM_SOCKETS: &str = "/run/containerd";
/// Directories ctr runs CNI plugins from, in its search order.
const PLUGIN_DIRS: [&str; 2] = ["/opt/cni/bin", "/usr/lib/cni"];
/// The only directory ctr reads CNI configurations from.
const CONF_DIR: &str = "/etc/cni/net.d";
/// The file of an environment naming the parent cgroup of its containers (for the sweep after
/// a killed process): its ctr namespace, or the cgroup parent of its CRI pods.
const NAMESPACE_FILE: &str = "namespace";
/// The containerd namespace the CRI plugin keeps its pods, containers and images in.
pub const CRI_NAMESPACE: &str = "k8s.io";

/// Why containerd cannot run on this machine, if it cannot: the packages and directories an
/// environment needs.
pub fn unavailable() -> Option<String> {
    for bin in ["containerd", "ctr", "containerd-shim-runc-v2", "runc", "unshare"] {
        if !installed(bin) {
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
    let out = run(Command::new("ctr").arg("--version")).map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    // "ctr github.com/containerd/containerd 1.6.20~ds1"
    let out = out.unwrap_or_default();
    let v = out.split_whitespace().last().unwrap_or_default();
    let mut n = v.split(['.', '~', '-', '+']).map(|p| p.trim_start_matches('v').parse::<u32>().unwrap_or(0));
    (n.next().unwrap_or(0), n.next().unwrap_or(0))
}

/// The built-in directories that exist now (recorded before a process's first daemon).
pub fn builtin_dirs() -> BTreeSet<PathBuf> {
    crate::host::existing_dirs(&[LIBCNI_CACHE, SHIM_SOCKETS])
}

/// Removes the built-in directories that are not in `before`, if they are empty (another
/// environment may be using them).
pub fn remove_builtin_dirs(before: &BTreeSet<PathBuf>) {
    for (d, sub) in [(LIBCNI_CACHE, "results"), (SHIM_SOCKETS, "s")] {
        if !before.contains(Path::new(d)) {
            let _ = fs::remove_dir(Path::new(d).join(sub));
            let _ = fs::remove_dir(d);
        }
    }
}

/// libcni's cached ADD results of network `net`.
pub fn cached_results(net: &str) -> Vec<PathBuf> {
    fs::read_dir(Path::new(LIBCNI_CACHE).join("results"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&format!("{net}-")))
        .map(|e| e.path())
        .collect()
}

/// The daemon's configuration: everything below `dir`; the CRI plugin off (it would want its
/// own CNI set-up and serve Kubernetes) unless `cri` configures it.
fn config_toml(dir: &Path, cri: Option<&str>) -> Result<String> {
    let cri = match cri {
        Some(sandbox_image) => cri_toml(dir, sandbox_image)?,
        None => "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n".to_owned(),
    };
    Ok(format!(
        r#"# Written by switch for one private containerd.
version = 2
root = {root}
state = {state}
{cri}
[grpc]
  address = {sock}

[ttrpc]
  address = {ttrpc}

[plugins."io.containerd.internal.v1.opt"]
  path = {opt}
"#,
        root = toml_str(&dir.join("root"))?,
        state = toml_str(&dir.join("state"))?,
        sock = toml_str(&dir.join("containerd.sock"))?,
        ttrpc = toml_str(&dir.join("containerd.sock.ttrpc"))?,
        opt = toml_str(&dir.join("opt"))?,
    ))
}

/// The CRI plugin's section, as kubelet's containerd runs it, with what this machine kind needs
/// (see ../shared notes: containers.md): pods run `sandbox_image` (imported, never pulled), the
/// CNI configuration and plugins come from `net.d` and `bin` only, runc keeps its state in
/// `runc`, the `native` snapshotter (no overlay on every file system), and an oom_score_adj a
/// process without CAP_SYS_RESOURCE may set (CRI gives sandboxes -998: runc fails to lower it
/// here). The streaming server (exec/attach/port-forward URLs) listens on loopback only.
fn cri_toml(dir: &Path, sandbox_image: &str) -> Result<String> {
    let image = toml_str(Path::new(sandbox_image))?;
    Ok(format!(
        r#"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = {image}
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = {runc}
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = {bin}
    conf_dir = {conf}
    max_conf_num = 1
"#,
        runc = toml_str(&dir.join("runc"))?,
        bin = toml_str(&dir.join("bin"))?,
        conf = toml_str(&dir.join("net.d"))?,
    ))
}

/// One private containerd and its ctr namespace.
pub struct Env {
    dir: PathBuf,
    namespace: String,
    /// The parent cgroup of its containers (`/NAME/ID` on every hierarchy).
    cgroup: String,
    daemon: Option<Daemon>,
}

impl Env {
    /// Makes the environment's directory and configuration at `dir`; its containers go into
    /// ctr namespace `namespace`. The daemon is not started yet ([`Env::start`]).
    pub fn create(dir: &Path, namespace: &str) -> Result<Self> {
        Self::create_with(dir, namespace, namespace, None)
    }

    /// Makes an environment as [`Env::create`] does, with the CRI plugin on: kubelet's
    /// containerd, serving the CRI gRPC API on the daemon's socket ([`Env::socket`]), its pods
    /// running `sandbox_image` ([`Env::import_pause`]) and networked by the CNI configuration in
    /// [`Env::net_d`] with the plugins in `bin` ([`Env::add_plugin`]). Its pods must have
    /// `/CGROUP` as their cgroup parent (found again after a killed run).
    pub fn create_cri(dir: &Path, cgroup: &str, sandbox_image: &str) -> Result<Self> {
        Self::create_with(dir, CRI_NAMESPACE, cgroup, Some(sandbox_image))
    }

    fn create_with(dir: &Path, namespace: &str, cgroup: &str, cri: Option<&str>) -> Result<Self> {
        for d in ["root", "state", "opt", "net.d", "bin", "ipam", "fifo", "runc", "logs", "image"] {
            fs::create_dir_all(dir.join(d)).map_err(Error::io(format!("creating {}/{d}", dir.display())))?;
        }
        let write = |file: &str, s: &str| fs::write(dir.join(file), s).map_err(Error::io(format!("writing {file}")));
        write(NAMESPACE_FILE, cgroup)?;
        write("config.toml", &config_toml(dir, cri)?)?;
        Ok(Self { dir: dir.to_owned(), namespace: namespace.to_owned(), cgroup: cgroup.to_owned(), daemon: None })
    }

    /// The environment's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CNI configuration directory ctr sees as /etc/cni/net.d.
    pub fn net_d(&self) -> PathBuf {
        self.dir.join("net.d")
    }

    /// Makes CNI plugin `plugin` available to ctr: a link, or (`copy`) a copy, the plugin
    /// directories it replaces being hidden behind `bin`.
    pub fn add_plugin(&self, plugin: &Path, copy: bool) -> Result<()> {
        let name = plugin.file_name().unwrap_or_default();
        let to = self.dir.join("bin").join(name);
        let what = format!("installing {} (package containernetworking-plugins?)", plugin.display());
        if copy { fs::copy(plugin, &to).map(drop) } else { std::os::unix::fs::symlink(plugin, &to) }
            .map_err(Error::io(what))
    }

    /// The daemon's gRPC socket (containerd's API, and CRI's when the plugin is on).
    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// Starts the daemon and waits (up to 15 s) until it answers.
    pub fn start(&mut self) -> Result<()> {
        let mut cmd = Command::new("containerd");
        cmd.arg("--config").arg(self.dir.join("config.toml"));
        let daemon = self.daemon.insert(Daemon::spawn("containerd", &mut cmd, &self.dir.join("logs/containerd.log"))?);
        let sock = self.dir.join("containerd.sock");
        daemon.wait_ready(15, || {
            sock.exists()
                && run(Command::new("ctr").arg("--address").arg(&sock).arg("version")).is_ok_and(|o| o.status.success())
        })
    }

    /// Whether the daemon was started (and not stopped).
    pub fn started(&self) -> bool {
        self.daemon.is_some()
    }

    /// `ctr ARGS` against this environment's daemon and namespace, in a mount namespace where
    /// /etc/cni/net.d and the plugin directories are this environment's; to be run by the caller.
    pub fn ctr_command(&self, args: &[&str]) -> Command {
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
            .args(["--namespace", &self.namespace])
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Imports busybox-static as image `name` (an OCI archive made in `image`).
    pub fn import_busybox(&self, name: &str) -> Result<()> {
        self.import(&image::busybox_oci_archive(&self.dir.join("image"), name)?)
    }

    /// Imports the sandbox image of CRI pods as `name` (see [`image::pause_oci_archive`]).
    pub fn import_pause(&self, name: &str) -> Result<()> {
        self.import(&image::pause_oci_archive(&self.dir.join("image"), name)?)
    }

    fn import(&self, archive: &Path) -> Result<()> {
        let mut cmd = self.ctr_command(&["image", "import", &archive.to_string_lossy()]);
        output_as(&mut cmd, || "ctr image import".into()).map(drop)
    }

    /// Stops the daemon; returns complaints.
    pub fn stop(&mut self) -> Vec<String> {
        self.daemon.take().and_then(|d| d.stop(10)).into_iter().collect()
    }

    /// Once its containers are gone: stops the daemon and removes what is left of the
    /// environment (processes, mounts, cgroups, the directory) and the built-in directories
    /// not in `builtin_before`. Returns complaints.
    pub fn remove(&mut self, builtin_before: &BTreeSet<PathBuf>) -> Vec<String> {
        let mut left = self.stop();
        left.extend(clean_dir(&self.dir, &self.cgroup));
        remove_builtin_dirs(builtin_before);
        left
    }
}

/// The socket a shim listens on, from its command line (`-namespace NS -id ID -address A`):
/// /run/containerd/s/ followed by the SHA-256 of `A/NS/ID` in hex, as containerd 1.6 names it.
fn shim_socket(pid: u32) -> Option<PathBuf> {
    let args = daemon::cmdline(pid)?;
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

/// Kills the processes of `dir` (daemon, shims) and their children (the containers), and
/// removes the shims' sockets (a killed shim leaves its socket). Returns the processes.
fn kill_processes_of(dir: &Path) -> Vec<u32> {
    let pids = daemon::processes_of(dir);
    let sockets: Vec<PathBuf> = pids.iter().filter_map(|p| shim_socket(*p)).collect();
    daemon::kill_with_children(&pids);
    for s in sockets {
        let _ = fs::remove_file(s);
    }
    pids
}

/// The parent cgroups runc made for ctr namespace `ns` (`/NS/ID` on every hierarchy).
fn cgroups_of(ns: &str) -> Vec<PathBuf> {
    if ns.is_empty() {
        // Not the hierarchies themselves.
        return vec![];
    }
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
/// cgroups of ctr namespace `ns`, the directory. Returns complaints.
fn clean_dir(dir: &Path, ns: &str) -> Vec<String> {
    let mut left = vec![];
    // A shim exits on its own shortly after its task is deleted.
    if !wait_until(Duration::from_secs(5), || daemon::processes_of(dir).is_empty()) {
        left.push(format!("processes: {:?}", kill_processes_of(dir)));
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
    left.extend(workdir::remove(dir));
    left
}

/// Removes the environment at `dir` whoever made it (a killed process, a benchmark run):
/// its daemon, shims and containers, the switches its ledger lists (`switch_bin` takes them
/// down, with the ports of their containers) and those networks' cached results, what else
/// the ledger lists, mounts, cgroups and the directory. Nothing there is fine. Returns
/// complaints.
pub fn remove_at(dir: &Path, switch_bin: &Path) -> Vec<String> {
    if !dir.exists() {
        return vec![];
    }
    kill_processes_of(dir);
    for sw in ledger::owned(dir, ledger::Owned::Switch) {
        for f in cached_results(&sw) {
            let _ = fs::remove_file(f);
        }
    }
    let mut left = ledger::remove_owned(dir, switch_bin, &[]);
    let ns = fs::read_to_string(dir.join(NAMESPACE_FILE)).unwrap_or_default();
    left.extend(clean_dir(dir, ns.trim()));
    left
}

/// Removes the environments `TMP/PREFIX-PID-...` of killed processes: their daemons, shims and
/// containers, the switches their ledgers list (`switch_bin` takes them down, with the ports
/// of their containers) and those networks' cached results, mounts, cgroups and directories.
/// Returns the directories.
pub fn sweep_stale(prefix: &str, switch_bin: &Path) -> Vec<PathBuf> {
    let stale = workdir::stale(prefix);
    for dir in &stale {
        remove_at(dir, switch_bin);
    }
    if !stale.is_empty() {
        // Made by the killed process, as far as can be told: empty ones hold nothing of anybody.
        remove_builtin_dirs(&BTreeSet::new());
    }
    stale
}
