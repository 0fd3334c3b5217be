//! `switch-cni install` and `uninstall`, the way a Kubernetes DaemonSet runs them: into
//! directories of the test (never the machine's /opt/cni/bin or /etc/cni/net.d), checked
//! byte for byte and by file identity; and the userspace switch's process, started by the
//! plugin from inside a runtime's cgroup, surviving the kill of that whole cgroup.
use std::{
    fs,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::Duration,
};

use serde_json::json;
use switch_tests::*;

/// `switch-cni`, next to the `switch` binary under test.
fn cni_bin() -> PathBuf {
    switch_bin().with_file_name("switch-cni")
}

/// A scratch directory with a plugin and a configuration directory, removed on drop. Under
/// cargo's target directory, beside the built binaries: a second source links to them.
struct Dirs {
    root: PathBuf,
    bin: PathBuf,
    conf: PathBuf,
}

impl Dirs {
    fn new(tag: &str) -> Self {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("ins{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let (bin, conf) = (root.join("opt-cni-bin"), root.join("etc-cni-net.d"));
        fs::create_dir_all(&bin).unwrap();
        fs::create_dir_all(&conf).unwrap();
        Self { root, bin, conf }
    }

    fn dir_args(&self) -> Vec<String> {
        ["--bin-dir", self.bin.to_str().unwrap(), "--conf-dir", self.conf.to_str().unwrap()].map(String::from).to_vec()
    }

    /// Every file of both directories with its content, for "nothing changed".
    fn listing(&self) -> Vec<(PathBuf, u64, Vec<u8>)> {
        let mut out = vec![];
        for dir in [&self.bin, &self.conf] {
            for e in fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                let m = fs::metadata(&p).unwrap();
                // The binaries by identity (inode, change time) rather than their 100 MB.
                let content = if m.len() > 1 << 20 { vec![] } else { fs::read(&p).unwrap() };
                out.push((p, m.ino() ^ m.ctime_nsec() as u64, content));
            }
        }
        out.sort();
        out
    }
}

impl Drop for Dirs {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// Runs `BIN ARGS` (a switch-cni command line) with no CNI variables.
fn cli(bin: &Path, args: &[String]) -> Run {
    Command::new(bin).args(args).env_remove("CNI_COMMAND").output().unwrap().into()
}

/// `switch-cni install|uninstall ... --json` from `bin`, asserting success; the report.
fn report(bin: &Path, command: &str, dirs: &Dirs, more: &[&str]) -> Value {
    let mut args = vec![command.to_owned()];
    args.extend(dirs.dir_args());
    args.extend(more.iter().map(|s| s.to_string()));
    args.push("--json".into());
    let r = cli(bin, &args);
    assert_eq!(r.code, 0, "switch-cni {args:?}: {}{}", r.stdout, r.stderr);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.stdout))
}

/// Each file's action in a report, by file name.
fn actions(r: &Value) -> Vec<(String, String)> {
    r["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let name = Path::new(f["path"].as_str().unwrap()).file_name().unwrap().to_string_lossy().into_owned();
            (name, f["action"].as_str().unwrap().to_owned())
        })
        .collect()
}

fn expect(r: &Value, want: &[(&str, &str)]) {
    let want: Vec<(String, String)> = want.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    assert_eq!(actions(r), want, "{r}");
}

/// The installed plugin answers VERSION as a runtime calls it.
fn version_runs(plugin: &Path) -> Result<(), String> {
    let out = Command::new(plugin)
        .env_clear()
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("exec {}: {e}", plugin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match serde_json::from_str::<Value>(&text) {
        Ok(v) if out.status.success() && v["supportedVersions"].is_array() => Ok(()),
        _ => Err(format!(
            "{} answered {:?} ({}): {text}",
            plugin.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

const SUBNET: [&str; 4] = ["--subnet", "10.150.0.0/16", "--range", "10.150.7.0/24"];

#[test]
fn install_puts_both_binaries_and_the_conf_in_place_and_uninstall_takes_only_them() {
    let d = Dirs::new("install");
    fs::write(d.bin.join("bridge"), b"someone else's plugin").unwrap();
    fs::write(d.conf.join("87-podman-bridge.conflist"), b"{}").unwrap();
    let r = report(&cni_bin(), "install", &d, &SUBNET);
    expect(&r, &[("switch-cni", "installed"), ("switch", "installed"), ("10-switch.conflist", "installed")]);
    assert_eq!(r["changed"], true);
    for (name, built) in [("switch-cni", cni_bin()), ("switch", switch_bin())] {
        let installed = d.bin.join(name);
        assert!(fs::read(&installed).unwrap() == fs::read(&built).unwrap(), "{name} differs from the built one");
        assert_eq!(fs::metadata(&installed).unwrap().permissions().mode() & 0o777, 0o755, "{name}");
    }
    version_runs(&d.bin.join("switch-cni")).unwrap();
    // The default conflist: host-local over the subnet, handing out the range, gateway first.
    let conf: Value = serde_json::from_slice(&fs::read(d.conf.join("10-switch.conflist")).unwrap()).unwrap();
    let plugin = &conf["plugins"][0];
    assert_eq!((conf["name"].as_str(), plugin["type"].as_str()), (Some("switch"), Some("switch-cni")));
    assert_eq!(
        plugin["ipam"]["ranges"][0][0],
        json!({"subnet": "10.150.0.0/16", "rangeStart": "10.150.7.2", "rangeEnd": "10.150.7.254", "gateway": "10.150.7.1"})
    );
    // Again: nothing changes, and it says so (not a single file touched).
    let before = d.listing();
    let r = report(&cni_bin(), "install", &d, &SUBNET);
    expect(&r, &[("switch-cni", "unchanged"), ("switch", "unchanged"), ("10-switch.conflist", "unchanged")]);
    assert_eq!(r["changed"], false);
    assert_eq!(d.listing(), before);
    // A binary that lost its mode is put back, by a new file like any other change.
    fs::set_permissions(d.bin.join("switch"), fs::Permissions::from_mode(0o644)).unwrap();
    let r = report(&cni_bin(), "install", &d, &SUBNET);
    expect(&r, &[("switch-cni", "unchanged"), ("switch", "replaced"), ("10-switch.conflist", "unchanged")]);
    assert_eq!(fs::metadata(d.bin.join("switch")).unwrap().permissions().mode() & 0o777, 0o755);
    let mut text = vec!["install".to_owned()];
    text.extend(d.dir_args());
    text.extend(SUBNET.map(String::from));
    assert!(cli(&cni_bin(), &text).stdout.contains("nothing changed"));
    // Another conflist replaces the configuration (a new file renamed over it), nothing else.
    let mine = d.root.join("mine.conflist");
    let body = json!({"cniVersion": "0.4.0", "name": "pods", "plugins": [
        {"type": "switch-cni", "switch": "insk8s", "ipam": {"type": "host-local", "subnet": "10.150.9.0/24"}},
        {"type": "portmap", "capabilities": {"portMappings": true}}]});
    fs::write(&mine, serde_json::to_vec_pretty(&body).unwrap()).unwrap();
    let old_ino = fs::metadata(d.conf.join("10-switch.conflist")).unwrap().ino();
    let r = report(&cni_bin(), "install", &d, &["--conf", mine.to_str().unwrap()]);
    expect(&r, &[("switch-cni", "unchanged"), ("switch", "unchanged"), ("10-switch.conflist", "replaced")]);
    assert_eq!(fs::read(d.conf.join("10-switch.conflist")).unwrap(), fs::read(&mine).unwrap());
    assert_ne!(fs::metadata(d.conf.join("10-switch.conflist")).unwrap().ino(), old_ino, "not written in place");
    // Uninstall: ours go, the foreign files stay; a second one finds nothing.
    let r = report(&cni_bin(), "uninstall", &d, &[]);
    expect(&r, &[("10-switch.conflist", "removed"), ("switch-cni", "removed"), ("switch", "removed")]);
    let left = |dir: &Path| -> Vec<String> {
        let mut v: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    };
    assert_eq!(left(&d.bin), ["bridge"], "only the foreign plugin is left");
    assert_eq!(left(&d.conf), ["87-podman-bridge.conflist"], "only the foreign configuration is left");
    let r = report(&cni_bin(), "uninstall", &d, &[]);
    expect(&r, &[("10-switch.conflist", "absent"), ("switch-cni", "absent"), ("switch", "absent")]);
    assert_eq!(r["changed"], false);
}

#[test]
fn uninstall_leaves_a_file_install_did_not_write() {
    let d = Dirs::new("foreign");
    report(&cni_bin(), "install", &d, &SUBNET);
    // Someone edits the configuration, and puts their own switch binary in place.
    fs::write(d.conf.join("10-switch.conflist"), b"{\"edited\": true}").unwrap();
    let theirs = d.bin.join("switch");
    fs::remove_file(&theirs).unwrap();
    fs::write(&theirs, b"#!/bin/sh\n").unwrap();
    let r = report(&cni_bin(), "uninstall", &d, &[]);
    expect(&r, &[("10-switch.conflist", "left-alone"), ("switch-cni", "removed"), ("switch", "left-alone")]);
    assert_eq!(fs::read(d.conf.join("10-switch.conflist")).unwrap(), b"{\"edited\": true}");
    assert_eq!(fs::read(&theirs).unwrap(), b"#!/bin/sh\n");
}

#[test]
fn bad_input_is_one_line_and_changes_nothing() {
    let d = Dirs::new("bad");
    report(&cni_bin(), "install", &d, &SUBNET);
    let not_ours = d.root.join("bridge.conflist");
    fs::write(&not_ours, br#"{"cniVersion": "1.0.0", "name": "b", "plugins": [{"type": "bridge"}]}"#).unwrap();
    let not_json = d.root.join("broken.conflist");
    fs::write(&not_json, b"{\"cniVersion\": ").unwrap();
    let single = d.root.join("single.conf");
    fs::write(&single, br#"{"cniVersion": "1.0.0", "name": "s", "type": "switch-cni"}"#).unwrap();
    let dirs = d.dir_args();
    let no_bin_dir = ["--bin-dir", "/nonexistent/ins", "--conf-dir", &dirs[3], "--subnet", "10.150.0.0/24"];
    let cases: Vec<(Vec<String>, &str)> = vec![
        (no_bin_dir.map(String::from).to_vec(), "/nonexistent/ins"),
        (with(&dirs, &["--conf", not_ours.to_str().unwrap()]), "switch-cni"),
        (with(&dirs, &["--conf", not_json.to_str().unwrap()]), "not JSON"),
        (with(&dirs, &["--conf", single.to_str().unwrap()]), "conflist"),
        (with(&dirs, &["--conf", "/nonexistent/ins.conflist"]), "/nonexistent/ins.conflist"),
        (with(&dirs, &["--subnet", "10.150.7.1/24"]), "network address"),
        (with(&dirs, &["--subnet", "10.150.0.0/16", "--range", "10.151.0.0/24"]), "not inside"),
        (with(&dirs, &[]), "--subnet"),
        (with(&dirs, &["--conf", not_ours.to_str().unwrap(), "--subnet", "10.150.0.0/24"]), "cannot be used"),
    ];
    let before = d.listing();
    for (args, says) in cases {
        let mut a = vec!["install".to_owned()];
        a.extend(args);
        let r = cli(&cni_bin(), &a);
        assert_eq!(r.code, 2, "{a:?}: {}{}", r.stdout, r.stderr);
        assert!(r.stdout.is_empty() && r.stderr.lines().count() == 1, "{a:?}: not one line: {}{}", r.stdout, r.stderr);
        assert!(r.stderr.contains(says), "{a:?}: {}", r.stderr);
        assert_eq!(d.listing(), before, "{a:?} changed something");
    }
    let r = cli(
        &cni_bin(),
        &["uninstall".into(), "--bin-dir".into(), "/nonexistent/ins".into(), "--conf-dir".into(), dirs[3].clone()],
    );
    assert_eq!((r.code, r.stderr.lines().count()), (2, 1), "{}", r.stderr);
    assert_eq!(d.listing(), before);
}

fn with(dirs: &[String], more: &[&str]) -> Vec<String> {
    let mut v = dirs.to_vec();
    v.extend(more.iter().map(|s| s.to_string()));
    v
}

/// A runtime may run the plugin at any moment: an install replacing it must never let an exec
/// fail (ETXTBSY from a file still open for writing, or a half-written binary).
#[test]
fn install_while_the_plugin_runs_never_breaks_an_exec() {
    let d = Dirs::new("busy");
    report(&cni_bin(), "install", &d, &SUBNET);
    // A second source: the same binaries, switch-cni with a byte appended (an ELF file runs with
    // trailing bytes), so that each install from the other source replaces the plugin.
    let other = d.root.join("other");
    fs::create_dir(&other).unwrap();
    if fs::hard_link(switch_bin(), other.join("switch")).is_err() {
        fs::copy(switch_bin(), other.join("switch")).unwrap(); // another file system
    }
    let mut bytes = fs::read(cni_bin()).unwrap();
    bytes.push(0);
    fs::write(other.join("switch-cni"), bytes).unwrap();
    fs::set_permissions(other.join("switch-cni"), fs::Permissions::from_mode(0o755)).unwrap();
    let (stop, execs) = (AtomicBool::new(false), AtomicU64::new(0));
    let installed = d.bin.join("switch-cni");
    let failures: Vec<String> = std::thread::scope(|s| {
        let runner = s.spawn(|| {
            let mut failures = vec![];
            while !stop.load(Ordering::Relaxed) {
                if let Err(e) = version_runs(&installed) {
                    failures.push(e);
                }
                execs.fetch_add(1, Ordering::Relaxed);
            }
            failures
        });
        for round in 0..6 {
            let source = if round % 2 == 0 { other.join("switch-cni") } else { cni_bin() };
            let r = report(&source, "install", &d, &SUBNET);
            assert_eq!(actions(&r)[0], ("switch-cni".to_owned(), "replaced".to_owned()), "{r}");
        }
        // Let the runner see the last one too.
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
        runner.join().unwrap()
    });
    let n = execs.load(Ordering::Relaxed);
    eprintln!("{n} execs of the plugin during 6 installs replacing it");
    assert!(failures.is_empty(), "{} of {n} execs failed, first: {}", failures.len(), failures[0]);
    assert!(n >= 20, "the plugin ran only {n} times: the test saw too little");
    assert!(fs::read(&installed).unwrap() == fs::read(cni_bin()).unwrap());
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on
/// a hybrid machine).
fn cgroup_v2_root() -> PathBuf {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    let line = mounts.lines().find(|l| l.split_whitespace().nth(2) == Some("cgroup2")).expect("no cgroup2 mount");
    PathBuf::from(line.split_whitespace().nth(1).unwrap())
}

/// A cgroup standing for a container runtime's (the unit systemd kills whole when containerd
/// restarts), made by the test under the v2 root; killed and removed on drop.
struct RuntimeCgroup(PathBuf);

impl RuntimeCgroup {
    fn new(name: &str) -> Self {
        let dir = cgroup_v2_root().join(name);
        fs::create_dir(&dir).unwrap();
        Self(dir)
    }

    /// `program args` started inside the cgroup (a shell moves itself in, then execs it).
    fn command(&self, program: &Path, args: &[&str]) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c").arg(r#"echo $$ > "$0/cgroup.procs" && exec "$@""#).arg(&self.0).arg(program).args(args);
        c
    }

    fn pids(&self) -> Vec<i32> {
        fs::read_to_string(self.0.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect()
    }

    /// Kills every process in it, as systemd stops a unit; waits until none is left.
    fn kill(&self) {
        fs::write(self.0.join("cgroup.kill"), "1").unwrap();
        assert!(within(|| self.pids().is_empty()), "cgroup.kill left {:?}", self.pids());
    }
}

impl Drop for RuntimeCgroup {
    fn drop(&mut self) {
        let _ = fs::write(self.0.join("cgroup.kill"), "1");
        within(|| fs::remove_dir(&self.0).is_ok());
    }
}

/// The userspace switch, its containers and the leases of the test, removed on drop.
struct UserspaceNet {
    switch: String,
    containers: Vec<String>,
    data_dir: PathBuf,
}

impl Drop for UserspaceNet {
    fn drop(&mut self) {
        let _ = switch(&["down", "--switch", &self.switch]);
        for ns in &self.containers {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = fs::remove_dir_all(&self.data_dir);
    }
}

/// Whether process `pid` runs (not a zombie).
fn running(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
}

/// Runs the plugin with `command` for container `ns` (its namespace made by `ip netns add`),
/// through `cmd` (inside a cgroup or not); returns its stdout as JSON.
fn run_plugin(mut cmd: Command, command: &str, ns: &str, conf: &Value) -> Value {
    use std::io::Write as _;
    let netns = format!("/run/netns/{ns}");
    let id = format!("{ns}-id");
    let mut child = cmd
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs([("CNI_COMMAND", command), ("CNI_CONTAINERID", &id), ("CNI_NETNS", &netns)])
        .envs([("CNI_IFNAME", "eth0"), ("CNI_PATH", "/usr/lib/cni")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(conf.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{command} of {ns}: {text}");
    if text.trim().is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() }
}

/// The installed plugin brings a userspace switch up from inside the runtime's cgroup, with
/// the installed `switch` beside it; the switch's process must not be in that cgroup: killing
/// the whole cgroup (a containerd restart under systemd) leaves the switch forwarding. `down`
/// removes the switch process's own cgroup.
#[test]
#[ignore = "needs root"]
fn a_userspace_switch_started_by_the_plugin_outlives_the_runtime_s_cgroup() {
    let tag = format!("ins{}", std::process::id() % 100_000);
    let installed = Dirs::new("runtime");
    report(&cni_bin(), "install", &installed, &SUBNET);
    let plugin = installed.bin.join("switch-cni");
    let net = UserspaceNet {
        switch: format!("{tag}us"),
        containers: vec![format!("{tag}a"), format!("{tag}b")],
        data_dir: Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{tag}-leases")),
    };
    for ns in &net.containers {
        host("ip", &["netns", "add", ns]);
    }
    let conf = json!({
        "cniVersion": "1.0.0", "name": format!("{tag}net"), "type": "switch-cni",
        "switch": net.switch, "datapath": "userspace",
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.151.0.0/24", "gateway": "10.151.0.1"}]],
                 "dataDir": net.data_dir},
    });
    let runtime = RuntimeCgroup::new(&format!("{tag}-runtime"));
    let mut containerd = Reaped::new(runtime.command(Path::new("/bin/sleep"), &["600"]).spawn().unwrap());
    assert!(within(|| runtime.pids().contains(&(containerd.id() as i32))), "the stand-in is not in the cgroup");
    let mut ips = vec![];
    for ns in &net.containers {
        let r = run_plugin(runtime.command(&plugin, &[]), "ADD", ns, &conf);
        ips.push(r["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_owned());
    }
    let daemon = switch_pid(&net.switch).expect("no userspace switch process");
    let exe = fs::read_link(format!("/proc/{daemon}/exe")).unwrap();
    assert_eq!(exe, installed.bin.join("switch"), "the plugin did not start the switch installed beside it");
    assert!(ping(&net.containers[0], &ips[1], 1), "no forwarding to begin with");
    // containerd restarted by systemd: every process of its cgroup killed.
    runtime.kill();
    let status = containerd.wait().unwrap();
    assert!(!status.success(), "the stand-in was not killed: {status:?}");
    assert!(running(daemon), "the switch process died with the runtime's cgroup");
    assert!(ping(&net.containers[0], &ips[1], 3), "no forwarding after the runtime's cgroup was killed");
    assert!(ping(&net.containers[1], "10.151.0.1", 1), "the gateway does not answer");
    let own = format!("0::/switch/{}", net.switch);
    let cgroup = fs::read_to_string(format!("/proc/{daemon}/cgroup")).unwrap();
    assert!(cgroup.lines().any(|l| l == own), "the switch process is in {cgroup}, not {own}");
    for ns in &net.containers {
        run_plugin(Command::new(&plugin), "DEL", ns, &conf);
    }
    ok(&["down", "--switch", &net.switch]);
    assert!(!cgroup_v2_root().join("switch").join(&net.switch).exists(), "down left the switch process's cgroup");
    assert!(within(|| !running(daemon)), "down left the switch process running");
}
