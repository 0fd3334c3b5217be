//! Helpers for the integration tests: run the real `switch` binary against the real kernel,
//! in sandboxes that clean up after themselves even when a test panics.
//!
//! Every sandbox has a unique prefix (process id + counter), so tests run in parallel without
//! touching each other or anything else on the machine. Nothing is attached to the machine's
//! own interfaces and traffic only goes to addresses inside namespaces the sandbox made.
pub mod bpf;
pub mod containerd;
pub mod cri;
pub mod docker;
pub mod frames;
pub mod hosts;
pub mod ipv4;
pub mod ipv6;
pub mod nat;
pub mod outside;
pub mod podman;

use std::{
    path::PathBuf,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

pub use serde_json::Value;

/// Path of the `switch` binary: `$SWITCH_BIN` (set by `cargo xtask test`) or the debug build.
pub fn switch_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SWITCH_BIN") {
        return p.into();
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/switch");
    assert!(p.exists(), "{} not built: run 'cargo xtask test'", p.display());
    p
}

/// Result of one CLI call.
#[derive(Debug)]
pub struct Run {
    /// Exit code (128+signal if killed).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        use std::os::unix::process::ExitStatusExt as _;
        Self {
            code: o.status.code().unwrap_or_else(|| 128 + o.status.signal().unwrap_or(0)),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Runs `switch ARGS` with extra environment.
pub fn switch_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(switch_bin());
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running switch").into()
}

/// Runs `switch ARGS`.
pub fn switch(args: &[&str]) -> Run {
    switch_env(args, &[])
}

/// Runs `switch ARGS` and asserts success; returns stdout.
pub fn ok(args: &[&str]) -> String {
    let r = switch(args);
    assert_eq!(r.code, 0, "switch {args:?} failed: {}{}", r.stdout, r.stderr);
    r.stdout
}

/// Runs `switch ARGS --json` and parses the output.
pub fn json(args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let out = ok(&a);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("switch {a:?} printed invalid JSON ({e}): {out}"))
}

/// Runs `switch ARGS`, asserts it fails with `code` and a single `error:` line; returns it.
pub fn fails(args: &[&str], code: i32) -> String {
    let r = switch(args);
    assert_eq!(r.code, code, "switch {args:?}: expected exit {code}, got {}: {}{}", r.code, r.stdout, r.stderr);
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "switch {args:?}: expected one error line, got {:?}", r.stderr);
    assert!(lines[0].starts_with("error: "), "switch {args:?}: {:?}", lines[0]);
    lines[0].to_owned()
}

/// Runs a command on the host and returns stdout (asserting success).
pub fn host(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    assert!(o.status.success(), "{cmd} {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Starts `cmd` with its standard output piped and waits until its first line is `first` (a
/// server saying it listens, a client that it is connected). The rest of the output stays in
/// the child's `stdout`; the child is killed when dropped.
pub fn spawn_until(cmd: &mut Command, first: &str) -> Reaped {
    let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.as_mut().unwrap()), &mut line).unwrap();
    let child = Reaped::new(child);
    assert_eq!(line.trim(), first, "{cmd:?}");
    child
}

/// A child process killed (if still running) and reaped when dropped, so a test that fails
/// half-way leaves none behind (a server outliving its deleted namespace, a monitor holding
/// a switch's events on). Derefs to the `Child`; `take` hands it back for a clean ending.
pub struct Reaped(Option<std::process::Child>);

impl Reaped {
    pub fn new(child: std::process::Child) -> Self {
        Self(Some(child))
    }

    /// The child, no longer killed on drop: the caller ends it (SIGINT, `wait_with_output`).
    pub fn take(mut self) -> std::process::Child {
        self.0.take().expect("a Reaped child is taken once")
    }
}

impl std::ops::Deref for Reaped {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        self.0.as_ref().expect("a Reaped child is taken once")
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.0.as_mut().expect("a Reaped child is taken once")
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Ends a reader the way a user does (Ctrl-C, so it turns off what it turned on), kills it if
/// it has not ended within `within`'s time, and reaps it. For the Drop of a reader's guard.
pub fn interrupt_and_reap(child: &mut std::process::Child) {
    if let Ok(None) = child.try_wait() {
        // SAFETY: signalling our own child, which has not been reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        if !within(|| matches!(child.try_wait(), Ok(Some(_)))) {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

/// Runs `CMD ARGS` inside namespace `ns` (through `switch ns exec`).
pub fn exec(ns: &str, cmd: &[&str]) -> Run {
    let mut a = vec!["ns", "exec", ns, "--"];
    a.extend_from_slice(cmd);
    switch(&a)
}

/// Pings `ip` from `ns` `count` times; returns whether every reply came back.
pub fn ping(ns: &str, ip: &str, count: u32) -> bool {
    let c = count.to_string();
    let r = exec(ns, &["ping", "-c", &c, "-i", "0.01", "-W", "1", "-q", ip]);
    r.code == 0 && r.stdout.contains(&format!("{count} received"))
}

/// Whether `CFG_F_*` flag `flag` is set in the pinned CONFIG of eBPF switch `sw` (events,
/// capture: what a reader turns on and must turn off).
pub fn config_flag(sw: &str, flag: u32) -> bool {
    use aya::maps::{Array, Map, MapData};
    let data = MapData::from_pin(format!("/sys/fs/bpf/switch/{sw}/CONFIG")).unwrap();
    let config: Array<MapData, switch_common::SwitchConfig> = Map::Array(data).try_into().unwrap();
    config.get(&0, 0).unwrap().flags & flag != 0
}

/// Polls `f` every 20 ms for up to 4 s; whether it became true.
pub fn within(mut f: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(4) {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}

/// `switch ARGS --switch SW` on a bridge and on a userspace switch made in `sb`: each refuses
/// with one line naming its datapath and saying that only tc and xdp have `what`, exit 2.
pub fn refused_by_bridge_and_userspace(sb: &mut Sandbox, args: &[&str], what: &str) {
    for dp in ["bridge", "userspace"] {
        let sw = sb.switch(&format!("r{}", &dp[..1]), dp, &[]);
        let mut a = args.to_vec();
        a.extend(["--switch", &sw]);
        let e = fails(&a, 2);
        assert!(
            e.contains(&format!("uses the {dp} datapath")) && e.contains(&format!("only tc and xdp have {what}")),
            "{e}"
        );
    }
}

/// A python3 program that moves 10 MB over TCP ("serve PORT give|take" or "send HOST:PORT
/// give|take") and checks they arrived intact: the receiver sends back the SHA-256 of what it
/// got and the sender prints "intact" or "corrupt" (with "take", the sender is the server).
pub const BULK_TCP: &str = r#"
import hashlib, socket, sys
data = bytes(range(256)) * (10 * 4096)
if sys.argv[1] == "serve":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(sys.argv[2]))); s.listen(1); s.settimeout(30); print("ready", flush=True)
    c, _ = s.accept(); c.settimeout(30)
    if sys.argv[3] == "give":
        c.sendall(data); c.shutdown(socket.SHUT_WR); c.recv(1)
    else:
        h = hashlib.sha256()
        while True:
            b = c.recv(65536)
            if not b: break
            h.update(b)
        c.sendall(h.hexdigest().encode())
else:
    host, port = sys.argv[2].split(":")
    c = socket.create_connection((host, int(port)), timeout=30)
    if sys.argv[3] == "take":
        h = hashlib.sha256()
        while True:
            b = c.recv(65536)
            if not b: break
            h.update(b)
        print("intact" if h.hexdigest() == hashlib.sha256(data).hexdigest() else "corrupt")
    else:
        c.sendall(data); c.shutdown(socket.SHUT_WR)
        print("intact" if c.recv(100).decode() == hashlib.sha256(data).hexdigest() else "corrupt")
"#;

/// Pid of switch `sw`'s userspace process, from its pid file (`PID START`).
pub fn switch_pid(sw: &str) -> Option<i32> {
    std::fs::read_to_string(format!("/run/switch/{sw}.pid")).ok()?.split_whitespace().next()?.parse().ok()
}

/// Names of the namespaces `ip netns list` shows.
pub fn netns_list() -> Vec<String> {
    host("ip", &["netns", "list"]).lines().filter_map(|l| l.split_whitespace().next()).map(str::to_owned).collect()
}

/// Names of the host's interfaces.
pub fn host_links() -> Vec<String> {
    host("ip", &["-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect()
}

/// Instantiates each listed `fn name(datapath: &str)` once per datapath, as
/// `tc::name`, `xdp::name`, `userspace::name` and `bridge::name`: one parametrised matrix
/// instead of four copies of every test.
#[macro_export]
macro_rules! datapath_matrix {
    ($($test:ident),* $(,)?) => {
        $crate::datapath_matrix!(@dp tc "tc" $($test),*);
        $crate::datapath_matrix!(@dp xdp "xdp" $($test),*);
        $crate::datapath_matrix!(@dp userspace "userspace" $($test),*);
        $crate::datapath_matrix!(@dp bridge "bridge" $($test),*);
    };
    (@dp $module:ident $dp:literal $($test:ident),*) => {
        mod $module {
            $(
                #[test]
                fn $test() {
                    super::$test($dp)
                }
            )*
        }
    };
}

/// Whether `datapath` is one of the eBPF datapaths (pinned maps, detailed counters, logs).
pub fn is_ebpf(datapath: &str) -> bool {
    matches!(datapath, "tc" | "xdp")
}

/// A counter of a `switch stats` row, or `None` where the datapath does not keep it.
pub fn counter(v: &Value, field: &str) -> Option<u64> {
    match &v[field] {
        Value::Null => None,
        x => Some(x.as_u64().unwrap_or_else(|| panic!("{field} is not a number in {v}"))),
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A test's own namespace of names, torn down on drop.
pub struct Sandbox {
    /// Unique prefix of every name this sandbox makes.
    pub prefix: String,
    switches: Vec<String>,
}

impl Sandbox {
    /// A new sandbox with a unique prefix.
    pub fn new() -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        // Seven characters: the host-side interface names start with the first seven
        // alphanumerics of the namespace name, so this keeps them unique per sandbox too.
        Self { prefix: format!("t{:04}{:02}", std::process::id() % 10_000, n % 100), switches: vec![] }
    }

    /// A name unique to this sandbox.
    pub fn name(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    /// Creates switch `suffix` on `datapath` with extra `up` arguments; returns its name.
    pub fn switch(&mut self, suffix: &str, datapath: &str, extra: &[&str]) -> String {
        let name = self.name(suffix);
        self.switches.push(name.clone());
        let mut a = vec!["up", "--switch", &name, "--datapath", datapath];
        a.extend_from_slice(extra);
        ok(&a);
        note_programs(&self.prefix);
        name
    }

    /// Adds namespace `suffix` to `switch` with `ip` (and extra args); returns its name.
    pub fn port(&self, switch: &str, suffix: &str, ip: &str, extra: &[&str]) -> String {
        let ns = self.name(suffix);
        let mut a = vec!["ns", "add", &ns, "--ip", ip, "--switch", switch];
        a.extend_from_slice(extra);
        ok(&a);
        ns
    }

    /// Starts `switch run --name PREFIX+suffix` (a userspace switch in the foreground, stderr
    /// piped) and waits until it is up; returns its name and the process.
    pub fn switch_run(&mut self, suffix: &str) -> (String, std::process::Child) {
        let name = self.name(suffix);
        self.adopt(&name);
        let child = Command::new(switch_bin())
            .args(["run", "--name", &name])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let ready = (0..100).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(50));
            json(&["list"]).as_array().unwrap().iter().any(|s| s["name"] == name.as_str() && s["ready"] == true)
        });
        assert!(ready, "switch run --name {name} did not come up");
        (name, child)
    }

    /// Registers a switch made outside `switch()` for cleanup.
    pub fn adopt(&mut self, switch: &str) {
        self.switches.push(switch.to_owned());
    }

    /// Removes everything this sandbox made. Safe to call more than once.
    pub fn teardown(&mut self) {
        for sw in self.switches.drain(..) {
            let _ = switch(&["down", "--name", &sw]);
            let _ = std::fs::remove_file(format!("/run/switch/{sw}.log"));
        }
        for ns in netns_list().into_iter().filter(|n| n.starts_with(&self.prefix)) {
            if switch(&["ns", "del", &ns]).code != 0 {
                let _ = Command::new("ip").args(["netns", "del", &ns]).status();
            }
        }
        // Interfaces a test made on the host itself (stand-ins for the host's own).
        for link in host_links().into_iter().filter(|l| l.starts_with(&self.prefix)) {
            let _ = Command::new("ip").args(["link", "del", &link]).status();
        }
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// A port's row of `switch stats --json`.
/// xorshift64*: deterministic pseudo-random numbers for the randomised runs (seeded per run,
/// no dependency).
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The row whose `field` is `value` in the JSON list `switch ARGS --json` prints.
fn row(args: &[&str], field: &str, value: &str) -> Value {
    let v = json(args);
    // `switch stats` puts its rows under "ports", beside the switch-wide drops.
    let v = if v["ports"].is_array() { v["ports"].clone() } else { v };
    v.as_array()
        .unwrap_or_else(|| panic!("switch {args:?} printed no list: {v}"))
        .iter()
        .find(|r| r[field] == value)
        .unwrap_or_else(|| panic!("no row with {field} {value}: {v}"))
        .clone()
}

/// The `switch tables` row of `table` (`fdb` or `conntrack`).
pub fn table_stats(switch_name: &str, table: &str) -> Value {
    row(&["tables", "--switch", switch_name], "table", table)
}

/// The `switch stats` row of namespace `ns`.
pub fn port_stats(switch_name: &str, ns: &str) -> Value {
    row(&["stats", "--switch", switch_name], "namespace", ns)
}

/// The switch-wide drops of `switch stats` (`unsolicited_routed`, `nat_refused`, `icmp_refused`, ...).
pub fn switch_drops(switch_name: &str) -> Value {
    json(&["stats", "--switch", switch_name])["switch"].clone()
}

/// The MAC of `ns`'s interface on its switch (`switch ns list`).
pub fn ns_mac(ns: &str) -> String {
    ns_info(ns)["mac"].as_str().unwrap_or_else(|| panic!("{ns} has no MAC")).to_owned()
}

/// `switch ns list --json` row of `ns`.
pub fn ns_info(ns: &str) -> Value {
    let v = json(&["ns", "list"]);
    v.as_array()
        .expect("ns list is a list")
        .iter()
        .find(|r| r["namespace"] == ns)
        .unwrap_or_else(|| panic!("no ns list row for {ns}: {v}"))
        .clone()
}

/// The FDB of `switch` as (mac, namespace, type) triples.
pub fn fdb(switch_name: &str) -> Vec<(String, String, String)> {
    json(&["fdb", "--switch", switch_name])
        .as_array()
        .expect("fdb is a list")
        .iter()
        .map(|r| {
            (
                r["mac"].as_str().unwrap().to_owned(),
                r["namespace"].as_str().unwrap().to_owned(),
                r["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A snapshot of everything the tool can change on the host, for "nothing changed" and
/// "leaves nothing" checks: namespaces, interfaces, the state's records (switches, namespaces,
/// ports of every kind, forwards), bpffs pins (links included), BPF links of the sandbox's
/// programs, IPv4 forwarding sysctls the switch may have turned on, and userspace switch files.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    netns: Vec<String>,
    links: Vec<String>,
    state: String,
    pins: Vec<String>,
    bpf_links: Vec<String>,
    sysctls: Vec<String>,
    run_files: Vec<String>,
}

/// Program ids seen pinned under each sandbox prefix: the BPF links of those programs are the
/// sandbox's, whatever the kernel attached them to (interfaces, the cgroup root).
static PROGRAMS: std::sync::Mutex<std::collections::BTreeMap<String, std::collections::BTreeSet<u32>>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Every file below `dir`, as paths relative to `base`.
fn files_below(dir: &std::path::Path, base: &std::path::Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.filter_map(Result::ok) {
        let path = e.path();
        out.push(path.strip_prefix(base).unwrap_or(&path).display().to_string());
        if path.is_dir() {
            files_below(&path, base, out);
        }
    }
}

/// Records the ids of the programs pinned by switches named with `prefix`.
pub fn note_programs(prefix: &str) {
    let mut pins = vec![];
    let root = std::path::Path::new("/sys/fs/bpf/switch");
    for d in std::fs::read_dir(root).into_iter().flatten().filter_map(Result::ok) {
        if d.file_name().to_string_lossy().starts_with(prefix) {
            files_below(&d.path(), root, &mut pins);
        }
    }
    let ids: Vec<u32> = pins
        .iter()
        .filter(|p| p.rsplit('/').next().is_some_and(|f| f.starts_with("prog_")))
        .filter_map(|p| aya::programs::ProgramInfo::from_pin(root.join(p)).ok())
        .map(|i| i.id())
        .collect();
    PROGRAMS.lock().unwrap_or_else(|e| e.into_inner()).entry(prefix.to_owned()).or_default().extend(ids);
}

impl Snapshot {
    /// Takes a snapshot restricted to names starting with `prefix` (other tests run in
    /// parallel and change their own names).
    pub fn take(prefix: &str) -> Self {
        note_programs(prefix);
        let mut netns: Vec<String> = netns_list().into_iter().filter(|n| n.starts_with(prefix)).collect();
        netns.sort();
        let state = std::fs::read_to_string("/run/switch/state.json").unwrap_or_default();
        let v: Value = serde_json::from_str(&state).unwrap_or(Value::Null);
        let mine = |m: &Value| -> Vec<String> {
            m.as_object()
                .map(|o| o.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(k, v)| format!("{k}={v}")).collect())
                .unwrap_or_default()
        };
        let of_switch = |list: &Value| -> Vec<String> {
            list.as_array()
                .map(|a| {
                    a.iter()
                        .filter(|r| r["switch"].as_str().is_some_and(|s| s.starts_with(prefix)))
                        .map(Value::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut st = mine(&v["switches"]);
        st.extend(mine(&v["namespaces"]));
        st.extend(of_switch(&v["ports"]));
        st.extend(of_switch(&v["forwards"]));
        let root = std::path::Path::new("/sys/fs/bpf/switch");
        let mut pins = vec![];
        for d in std::fs::read_dir(root).into_iter().flatten().filter_map(Result::ok) {
            if d.file_name().to_string_lossy().starts_with(prefix) {
                pins.push(d.file_name().to_string_lossy().into_owned());
                files_below(&d.path(), root, &mut pins);
            }
        }
        pins.sort();
        let programs = PROGRAMS.lock().unwrap_or_else(|e| e.into_inner()).get(prefix).cloned().unwrap_or_default();
        let mut bpf_links: Vec<String> = aya::programs::loaded_links()
            .filter_map(Result::ok)
            .filter(|l| programs.contains(&l.program_id()))
            .map(|l| format!("link {} of program {}", l.id(), l.program_id()))
            .collect();
        bpf_links.sort();
        // Host ends of ports ("s" + namespace or switch), bridges and gateways ("b" and "g" +
        // switch name), test uplinks ("u" + prefix).
        let mine = |l: &String| ["s", "b", "g", "u"].iter().any(|p| l.starts_with(&format!("{p}{prefix}")));
        let mut links: Vec<String> = host_links().into_iter().filter(mine).collect();
        links.sort();
        // Forwarding the switch turned on and did not give back: any value but the default
        // a new interface gets.
        let sysctl = |dev: &str| std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{dev}/forwarding"));
        let default = sysctl("default").unwrap_or_default();
        let sysctls: Vec<String> = links
            .iter()
            .filter_map(|l| sysctl(l).ok().filter(|v| *v != default).map(|v| format!("{l}.forwarding={}", v.trim())))
            .collect();
        // The test uplinks are the test's own, not the switch's: only their sysctls count.
        links.retain(|l| !l.starts_with(&format!("u{prefix}")));
        // Userspace switch processes' pid files, sockets and logs.
        let mut run_files: Vec<String> = std::fs::read_dir("/run/switch")
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.starts_with(prefix)).collect()
            })
            .unwrap_or_default();
        run_files.sort();
        Self { netns, links, state: st.join(","), pins, bpf_links, sysctls, run_files }
    }
}

/// Ends the tear-down of a test environment (`what`) that found `left` behind and removed it:
/// fails the test, or only reports when the test is failing already (a panic in a panic aborts).
pub fn report_leftovers(what: &str, left: &[String]) {
    if left.is_empty() {
        return;
    }
    let msg = format!("{what} left (and it was removed): {left:#?}");
    if std::thread::panicking() {
        eprintln!("{msg}");
    } else {
        panic!("{msg}");
    }
}

/// The addresses host-local has reserved in its data directory `dir` (a file per address,
/// beside its lock and its last-reserved markers), sorted.
pub fn host_local_reservations(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n != "lock" && !n.starts_with("last_reserved_ip"))
        .collect();
    v.sort();
    v
}
