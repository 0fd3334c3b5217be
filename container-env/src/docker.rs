//! A private dockerd: a daemon of its own (data root, exec root, pid file, socket and
//! configuration in its directory), with its iptables on as users run it, driven through the
//! `docker` client; never the machine's Docker service or its /var/lib/docker.
//!
//! dockerd starts its own containerd (state under the exec root) whose shims name the exec
//! root on their command lines, so [`daemon::processes_of`] finds all of them. What dockerd
//! changes on the host beyond its directory is its [`WATCH`]: `net.ipv4.ip_forward` (on), the
//! filter FORWARD policy (DROP), its DOCKER chains in filter and nat, and /run/docker (where
//! it looks for plugins, as every dockerd does: /run/docker/plugins is not configurable).
//! [`HostState`](crate::host::HostState) records them before the first daemon and gives
//! them back after the last.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use crate::{
    Error, Result,
    command::{installed, output_as, quiet, wait_until},
    daemon::{self, Daemon},
    host::Watch,
    image, workdir,
};

/// What dockerd 20.10 leaves on the host.
pub const WATCH: Watch = Watch {
    dirs: &["/run/docker", "/etc/docker"],
    nat_chains: &[],
    netns_prefixes: &[],
    chains: &[
        ("filter", "DOCKER-USER"),
        ("filter", "DOCKER-ISOLATION-STAGE-1"),
        ("filter", "DOCKER-ISOLATION-STAGE-2"),
        ("filter", "DOCKER"),
        ("nat", "DOCKER"),
    ],
};

/// Where every dockerd looks for the sockets of plugins (`NAME.sock` serves driver NAME).
pub const PLUGIN_DIR: &str = "/run/docker/plugins";

/// Docker's own client of the package when there is one: it speaks the daemon's API version.
fn client() -> &'static str {
    if Path::new("/usr/bin/docker").exists() { "/usr/bin/docker" } else { "docker" }
}

/// Why dockerd cannot run on this machine, if it cannot.
pub fn unavailable() -> Option<String> {
    for bin in ["dockerd", "docker", "runc", "containerd", "iptables"] {
        if !installed(bin) {
            return Some(format!("'{bin}' is not installed (cargo xtask setup installs docker.io)"));
        }
    }
    None
}

/// One private dockerd.
pub struct Env {
    dir: PathBuf,
    daemon: Option<Daemon>,
}

impl Env {
    /// Makes the environment's directory at `dir`; the daemon is not started yet.
    pub fn create(dir: &Path) -> Result<Self> {
        for d in ["data", "exec", "image"] {
            fs::create_dir_all(dir.join(d)).map_err(Error::io(format!("creating {}/{d}", dir.display())))?;
        }
        // The machine's /etc/docker/daemon.json is not read; `{}` is every default.
        fs::write(dir.join("daemon.json"), "{}\n").map_err(Error::io("writing daemon.json"))?;
        Ok(Self { dir: dir.to_owned(), daemon: None })
    }

    /// Replaces the daemon's configuration (`daemon.json`, e.g. `{"userland-proxy": false}`);
    /// it applies from the daemon's next start.
    pub fn configure(&self, daemon_json: &str) -> Result<()> {
        fs::write(self.dir.join("daemon.json"), daemon_json).map_err(Error::io("writing daemon.json"))
    }

    /// The environment's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The daemon's socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    /// `unix://SOCKET`, for `docker -H` and `DOCKER_HOST`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// Starts dockerd (its iptables on, no default bridge) and waits until it answers.
    pub fn start(&mut self) -> Result<()> {
        let d = &self.dir;
        let mut cmd = Command::new("dockerd");
        cmd.arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("dockerd.pid"))
            .arg("-H")
            .arg(self.host())
            // No overlay mounts to leave behind; the tests' images are tiny.
            .args(["--storage-driver", "vfs", "--bridge", "none"]);
        let daemon = Daemon::spawn("dockerd", &mut cmd, &d.join("dockerd.log"))?;
        let ready = daemon.wait_ready(60, || {
            self.command(&["version"]).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
        });
        self.daemon = Some(daemon);
        ready
    }

    /// `docker ARGS` against this daemon, to be run by the caller.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(client());
        cmd.arg("-H").arg(self.host()).args(args).stdin(Stdio::null());
        cmd
    }

    /// Runs `docker ARGS`; its stdout.
    pub fn output(&self, args: &[&str]) -> Result<String> {
        output_as(&mut self.command(args), || format!("docker {}", args.join(" ")))
    }

    /// Imports busybox-static's root file system as image `name` (`CMD /bin/sh`, `PATH=/bin`).
    pub fn import_busybox(&self, name: &str) -> Result<()> {
        let (rootfs, tar) = (self.dir.join("image/rootfs"), self.dir.join("image/rootfs.tar"));
        image::busybox_rootfs(&rootfs)?;
        image::tar(&rootfs, &tar)?;
        let tar_s = tar.to_string_lossy();
        self.output(&["import", "-c", "ENV PATH=/bin", "-c", r#"CMD ["/bin/sh"]"#, &tar_s, name])?;
        let _ = fs::remove_dir_all(&rootfs);
        let _ = fs::remove_file(&tar);
        Ok(())
    }

    /// Stops the daemon (its containers stop with it; 10 s each for a process that ignores
    /// SIGTERM), SIGKILL after `secs`. Returns a complaint if it had to be killed.
    pub fn stop(&mut self, secs: u64) -> Option<String> {
        self.daemon.take().and_then(|d| d.stop(secs))
    }

    /// Whether the daemon runs.
    pub fn running(&self) -> bool {
        self.daemon.as_ref().is_some_and(|d| d.exited().is_none())
    }

    /// Once its containers and networks are gone: stops the daemon and removes what is left
    /// (processes, the containers' namespace mounts, the directory). Returns complaints.
    pub fn remove(&mut self) -> Vec<String> {
        let mut left: Vec<String> = self.stop(30).into_iter().collect();
        left.extend(clean_dir(&self.dir));
        left
    }
}

/// Removes what is left of an environment whose daemon is stopped: its processes (containerd,
/// shims, containers), mounts (the containers' namespaces under the exec root) and directory.
fn clean_dir(dir: &Path) -> Vec<String> {
    let mut left = vec![];
    if !wait_until(Duration::from_secs(5), || daemon::processes_of(dir).is_empty()) {
        let pids = daemon::processes_of(dir);
        daemon::kill_with_children(&pids);
        left.push(format!("processes: {pids:?}"));
    }
    // dockerd unmounts its namespaces itself; a killed one does not.
    for m in workdir::mounts_below(dir) {
        quiet("umount", &["-l", &m]);
    }
    left.extend(workdir::remove(dir));
    left
}

/// Removes the environment at `dir` (one a killed process left, or one whose daemon is
/// stopped): its processes, mounts and directory. Returns complaints; nothing there is fine.
pub fn remove_at(dir: &Path) -> Vec<String> {
    if !dir.exists() {
        return vec![];
    }
    daemon::kill_with_children(&daemon::processes_of(dir));
    clean_dir(dir)
}

/// Removes the environments `TMP/PREFIX-PID-...` of killed processes: their daemons and
/// containers, mounts and directories. Returns the directories.
pub fn sweep_stale(prefix: &str) -> Vec<PathBuf> {
    let stale = workdir::stale(prefix);
    for dir in &stale {
        let pids = daemon::processes_of(dir);
        daemon::kill_with_children(&pids);
        clean_dir(dir);
    }
    stale
}
