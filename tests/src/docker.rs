//! A Docker test environment: a private dockerd (container-env's [`docker`] environment: its
//! own data root, exec root, socket, iptables on as users run it) with the busybox image
//! imported, and `switch docker-plugin` serving a driver of a name unique to the test.
//!
//! Every dockerd looks for plugins in /run/docker/plugins, whatever its roots: the driver of
//! a test is `dkPIDN`, served on /run/docker/plugins/dkPIDN.sock, so tests (and other
//! processes' dockerds) never find each other's. The driver's network records are in the
//! environment's directory (`--data-dir`), its endpoint records in /run/switch/docker.
//!
//! Tear-down (on drop, also after a panic) removes every container and network through
//! Docker (so the driver is called as users would have it), checks that no switch, port,
//! veth, forward, endpoint record or iptables rule of the driver is left (and removes what is),
//! stops the plugin and the daemon, removes the directory, and gives the host back (ip_forward,
//! the FORWARD policy, Docker's chains, /run/docker) when the last environment of the machine
//! goes.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Mutex, MutexGuard, OnceLock, atomic::AtomicU32},
    time::Duration,
};

use container_env::{
    command::wait_until,
    docker::{self, Env, PLUGIN_DIR, WATCH},
    host::{GivenBack, Shared},
    workdir,
};

use crate::{Reaped, Run, Value, interrupt_and_reap, switch, switch_bin};

/// The image every test container runs: busybox (`PATH=/bin`, `CMD /bin/sh`).
pub const IMAGE: &str = "switch-test-busybox";

/// Environments live in `switch-docker-PID-N` under the temporary directory.
const DIR_PREFIX: &str = "switch-docker-";

static ENVS: AtomicU32 = AtomicU32::new(0);
static HOST: Shared = Shared::new(DIR_PREFIX, WATCH);
/// The watched directories as they were before this process's first daemon.
static DIRS_BEFORE: OnceLock<BTreeSet<PathBuf>> = OnceLock::new();
/// One dockerd at a time per process: each is heavy, and all of them share the host's tables.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A container serving HTTP on port 80: `/` answers its `NAME`, `/cgi-bin/peer` the address
/// the request came from (`peer ADDR`).
pub fn server(name: &str) -> String {
    format!(
        "mkdir -p /www/cgi-bin && echo {name} > /www/index.html && \
         printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho peer $REMOTE_ADDR\\n' > /www/cgi-bin/peer && \
         chmod +x /www/cgi-bin/peer && exec httpd -f -p 80 -h /www"
    )
}

/// The body of `GET PATH` from `addr:port` sent with busybox nc from inside a container (its
/// wget crashes in this image: static NSS).
pub fn http_get_cmd(addr: &str, port: u16, path: &str) -> String {
    format!("printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {addr} {port} | tail -n 1")
}

/// One test's dockerd and driver.
pub struct Docker {
    env: Env,
    /// The driver's name (`docker network create -d DRIVER`).
    pub driver: String,
    plugin: Option<Reaped>,
    /// Networks made through [`Docker::network`], by name, with their IDs.
    networks: Vec<(String, String)>,
    _one: MutexGuard<'static, ()>,
}

impl Docker {
    /// A running dockerd with [`IMAGE`] and the test's driver. Panics, saying why, when Docker
    /// cannot run here.
    pub fn new() -> Self {
        if let Some(why) = docker::unavailable() {
            panic!("Docker cannot run on this machine: {why}");
        }
        let one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let dirs = DIRS_BEFORE
            .get_or_init(|| {
                for dir in docker::sweep_stale(DIR_PREFIX) {
                    eprintln!("docker: removed {} left by a killed test process", dir.display());
                }
                container_env::host::existing_dirs(WATCH.dirs)
            })
            .clone();
        if let Some(done) = HOST.acquire(dirs).unwrap_or_else(|e| panic!("{e}")) {
            let left = given_back(done);
            if !left.is_empty() {
                eprintln!("docker: after a killed test process: {left:?}");
            }
        }
        let (dir, k) = workdir::next(DIR_PREFIX, &ENVS);
        let driver = format!("dk{:04}{:02}", std::process::id() % 10_000, k % 100);
        let env = Env::create(&dir).unwrap_or_else(|e| panic!("{e}"));
        // Constructed before anything runs, so a failure below still tears down.
        let mut d = Self { env, driver, plugin: None, networks: vec![], _one: one };
        d.start_plugin();
        d.env.start().unwrap_or_else(|e| panic!("{e}"));
        d.env.import_busybox(IMAGE).unwrap_or_else(|e| panic!("{e}"));
        d
    }

    /// The driver's socket.
    pub fn socket(&self) -> PathBuf {
        Path::new(PLUGIN_DIR).join(format!("{}.sock", self.driver))
    }

    /// Starts `switch docker-plugin` for the test's driver and waits until it serves.
    pub fn start_plugin(&mut self) {
        assert!(self.plugin.is_none(), "the plugin runs already");
        let log = std::fs::File::create(self.env.dir().join("plugin.log")).unwrap();
        let child = Command::new(switch_bin())
            .args(["-v", "docker-plugin", "--socket"])
            .arg(self.socket())
            .arg("--data-dir")
            .arg(self.env.dir().join("driver"))
            .arg("--docker-host")
            .arg(self.env.host())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting switch docker-plugin: {e}"));
        self.plugin = Some(Reaped::new(child));
        let sock = self.socket();
        let serving = wait_until(Duration::from_secs(10), || std::os::unix::net::UnixStream::connect(&sock).is_ok());
        assert!(serving, "switch docker-plugin does not serve {}: {}", sock.display(), self.plugin_log());
    }

    /// Stops the plugin with SIGTERM; asserts that it removed its socket.
    pub fn stop_plugin(&mut self) {
        let mut child = self.plugin.take().expect("the plugin runs").take();
        // SAFETY: signals the plugin this environment started and has not reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let ended = wait_until(Duration::from_secs(10), || child.try_wait().ok().flatten().is_some());
        if !ended {
            interrupt_and_reap(&mut child);
        }
        assert!(ended, "switch docker-plugin did not stop on SIGTERM: {}", self.plugin_log());
        assert!(!self.socket().exists(), "the plugin left its socket {}", self.socket().display());
    }

    /// What the plugin logged.
    pub fn plugin_log(&self) -> String {
        std::fs::read_to_string(self.env.dir().join("plugin.log")).unwrap_or_default()
    }

    /// Stops dockerd (its containers stop with it) and starts it again.
    pub fn restart_daemon(&mut self) {
        if let Some(complaint) = self.env.stop(60) {
            panic!("{complaint}");
        }
        self.env.start().unwrap_or_else(|e| panic!("{e}"));
    }

    /// Stops dockerd (its containers stop with it); returns a complaint if it had to be
    /// killed.
    pub fn stop_daemon(&mut self) -> Option<String> {
        self.env.stop(60)
    }

    /// Starts dockerd after [`Docker::stop_daemon`].
    pub fn start_daemon(&mut self) {
        self.env.start().unwrap_or_else(|e| panic!("{e}"));
    }

    /// `docker ARGS`.
    pub fn docker(&self, args: &[&str]) -> Run {
        self.env.command(args).output().unwrap_or_else(|e| panic!("docker {args:?}: {e}")).into()
    }

    /// `docker ARGS`, asserting success; returns stdout, trimmed.
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.docker(args);
        assert_eq!(r.code, 0, "docker {args:?} failed: {}{}\nplugin log:\n{}", r.stdout, r.stderr, self.plugin_log());
        r.stdout.trim().to_owned()
    }

    /// `docker network create -d DRIVER --subnet SUBNET [-o OPT]... NAME`; returns its ID.
    pub fn network(&mut self, name: &str, subnet: &str, opts: &[&str]) -> String {
        let mut a = vec!["network", "create", "-d", &self.driver, "--subnet", subnet];
        for o in opts {
            a.extend(["-o", o]);
        }
        a.push(name);
        let a: Vec<String> = a.into_iter().map(str::to_owned).collect();
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let id = self.ok(&a);
        self.networks.push((name.to_owned(), id.clone()));
        id
    }

    /// `docker run -d --name NAME --network NET EXTRA... IMAGE sh -c SCRIPT`; waits until it
    /// runs.
    pub fn run(&self, name: &str, net: &str, extra: &[&str], script: &str) {
        let mut a = vec!["run", "-d", "--name", name, "--network", net];
        a.extend_from_slice(extra);
        a.extend([IMAGE, "sh", "-c", script]);
        self.ok(&a);
    }

    /// [`Docker::run`] of a [`server`] named `name`; waits until it listens.
    pub fn serve(&self, name: &str, net: &str, extra: &[&str]) {
        self.run(name, net, extra, &server(name));
        let listens = wait_until(Duration::from_secs(20), || {
            self.exec(name, "test -x /www/cgi-bin/peer && netstat -ltn | grep -q ':80 '").code == 0
        });
        assert!(listens, "{name} does not listen on port 80");
    }

    /// `docker exec NAME sh -c SCRIPT`.
    pub fn exec(&self, name: &str, script: &str) -> Run {
        self.docker(&["exec", name, "sh", "-c", script])
    }

    /// Container `name`'s address on network `net`.
    pub fn address(&self, name: &str, net: &str) -> String {
        self.ok(&["inspect", "-f", &format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}"), name])
    }

    /// Container `name`'s endpoint ID on network `net`.
    pub fn endpoint(&self, name: &str, net: &str) -> String {
        self.ok(&["inspect", "-f", &format!("{{{{(index .NetworkSettings.Networks \"{net}\").EndpointID}}}}"), name])
    }

    /// The IDs of every container, running or not.
    pub fn containers(&self) -> Vec<String> {
        self.ok(&["ps", "-aq"]).lines().map(str::to_owned).collect()
    }

    /// The environment's directory.
    pub fn dir(&self) -> &Path {
        self.env.dir()
    }

    /// Removes everything; returns what was left (and removed anyway).
    fn teardown(&mut self) -> Vec<String> {
        let mut left = vec![];
        let daemon = self.env.running();
        if daemon && self.plugin.is_none() {
            self.start_plugin();
        }
        if daemon {
            let ids = self.containers();
            if !ids.is_empty() {
                let mut a = vec!["rm", "-f"];
                a.extend(ids.iter().map(String::as_str));
                let r = self.docker(&a);
                if r.code != 0 {
                    left.push(format!("docker rm -f: {}", r.stderr.trim()));
                }
            }
            for (name, _) in self.networks.clone() {
                let r = self.docker(&["network", "rm", &name]);
                if r.code != 0 && !r.stderr.contains("No such network") {
                    left.push(format!("docker network rm {name}: {}", r.stderr.trim()));
                }
            }
        }
        for (_, id) in &self.networks {
            left.extend(network_leftovers(id));
        }
        if let Some(p) = self.plugin.take() {
            drop(p);
        }
        let _ = std::fs::remove_file(self.socket());
        left.extend(self.env.remove());
        left.extend(HOST.release().map_or_else(|e| vec![e.to_string()], given_back));
        left
    }
}

/// The switch of network `id`, as the driver names it.
pub fn switch_of(id: &str) -> String {
    format!("dk-{}", &id[..12])
}

/// What is left of network `id` (its switch, its iptables rule), removed.
pub fn network_leftovers(id: &str) -> Vec<String> {
    let sw = switch_of(id);
    let mut left = vec![];
    let list: Value = serde_json::from_str(&switch(&["list", "--json"]).stdout).unwrap_or(Value::Null);
    if list.as_array().into_iter().flatten().any(|s| s["name"] == sw.as_str()) {
        left.push(format!("switch {sw}"));
        let _ = switch(&["down", "--switch", &sw]);
    }
    for rule in container_env::iptables::rules_with("filter", &format!("network {sw}\"")) {
        left.push(format!("iptables rule {rule}"));
        container_env::iptables::delete("filter", &rule);
    }
    left
}

/// Prints what giving the host back did; returns what it could not give back.
fn given_back(done: GivenBack) -> Vec<String> {
    for note in &done.notes {
        eprintln!("docker: {note}");
    }
    done.errors
}

impl Default for Docker {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        let left = self.teardown();
        crate::report_leftovers(&format!("docker environment {}", self.driver), &left);
    }
}
