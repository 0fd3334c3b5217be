//! Open vSwitch's userspace datapath as a contender: the peer a user would pick for a switch
//! in userspace (Debian's openvswitch-switch). This kernel has no openvswitch module, so the
//! bridge has `datapath_type=netdev` and the host ends of the two veths are its ports as
//! `system` interfaces, which OVS reads and writes through AF_PACKET sockets (netdev-linux).
//!
//! The contender runs daemons of its own and leaves the host's Open vSwitch alone: a database
//! created from the package's schema in a private directory with a fixed name (so that a later
//! run's clean-up finds what a killed one left), and ovsdb-server and ovs-vswitchd with their
//! sockets, pid files and logs there, never the system's database or /var/run/openvswitch.
//! Everything it makes on the host is named with [`PREFIX`].
//!
//! OVS is left at its defaults but for one thing it needs to forward TCP at all: without
//! `userspace-tso-enable` it reads frames from AF_PACKET without their offload state, so the
//! namespaces' veths send with tx checksum offload (and with it TSO) off, as they would for
//! any AF_PACKET forwarder; otherwise segments larger than the MTU and frames with partial
//! checksums reach the server, which drops them.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::{command_output, run_quiet};
use crate::error::{Context as _, Error, Result};

/// Prefix of the contender's bridge (a tap OVS makes), host-side veths and namespaces.
pub const PREFIX: &str = "benchovs";
/// The tap the netdev datapath makes for itself: OVS's name, not ours.
const DATAPATH_TAP: &str = "ovs-netdev";
/// The database schema Debian's openvswitch-common installs.
const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
/// The programs it runs.
const PROGRAMS: [&str; 4] = ["ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl"];
/// The daemons, by their process names.
const DAEMONS: [&str; 2] = ["ovsdb-server", "ovs-vswitchd"];

/// The run's directory: database, sockets, pid files, logs.
pub fn dir() -> PathBuf {
    std::env::temp_dir().join("switch-bench-ovs")
}

/// Why the contender cannot run on this machine (Open vSwitch not installed), if it cannot.
pub fn missing() -> Option<String> {
    let found = |p: &str| {
        std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).chain([PathBuf::from("/usr/sbin")]).any(|d| d.join(p).is_file()))
            .unwrap_or(false)
    };
    let absent: Vec<&str> = PROGRAMS.iter().copied().filter(|p| !found(p)).collect();
    if !absent.is_empty() || !Path::new(SCHEMA).is_file() {
        return Some(
            "Open vSwitch is not installed (Debian's openvswitch-switch; 'cargo xtask setup' installs it)".into(),
        );
    }
    None
}

/// A command with the run's directories: OVS puts its run-time files (bridge management
/// sockets among them) under OVS_RUNDIR, /var/run/openvswitch by default.
fn ovs(program: &str) -> Command {
    let mut cmd = Command::new(program);
    let dir = dir();
    for var in ["OVS_RUNDIR", "OVS_LOGDIR", "OVS_DBDIR", "OVS_SYSCONFDIR"] {
        cmd.env(var, &dir);
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// `ovs-vsctl ARGS` against the private database; waits for ovs-vswitchd to apply a change.
async fn vsctl(args: &[&str]) -> Result<String> {
    let db = format!("--db=unix:{}", dir().join("db.sock").display());
    let mut cmd = ovs("ovs-vsctl");
    cmd.args([db.as_str(), "--timeout=10"]).args(args);
    command_output(cmd).await
}

/// Starts daemon `name` with its files in the run's directory. It inherits no descriptor but
/// the standard three: one left behind by a killed run must not hold what its caller held
/// (e.g. the `flock` of /tmp/switch-machine.lock that wraps the benchmark).
fn daemon(name: &str, first: &str) -> Result<Child> {
    let dir = dir();
    let file = |what: &str| format!("--{what}={}", dir.join(format!("{name}.{what}")).display());
    let mut cmd = ovs(name);
    cmd.arg(first).args([
        file("pidfile"),
        file("unixctl"),
        format!("--log-file={}", dir.join(format!("{name}.log")).display()),
    ]);
    if name == "ovsdb-server" {
        cmd.arg(format!("--remote=punix:{}", dir.join("db.sock").display()));
    }
    cmd.arg("-vconsole:off").stdout(Stdio::null()).stderr(Stdio::null());
    // SAFETY: close_range is async-signal-safe; CLOSE_RANGE_CLOEXEC (kernel 5.11) marks every
    // inherited descriptor from 3 up close-on-exec, std's own exec-error pipe included (it is
    // already), so exec failures are still reported.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
            if libc::syscall(libc::SYS_close_range, 3 as libc::c_uint, libc::c_uint::MAX, CLOSE_RANGE_CLOEXEC) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().context(format!("starting {name}"))
}

/// Brings up the daemons, the bridge and the two namespaces (`client` and `server`, each with
/// `eth0` at its address, the host end named like the namespace), and checks that the client
/// reaches the server through OVS. Returns the daemons, to stop with [`remove`].
pub async fn build(client: &str, server: &str, client_cidr: &str, server_cidr: &str) -> Result<Vec<Child>> {
    if let Some(why) = missing() {
        return Err(Error::Command(why));
    }
    let dir = dir();
    crate::sys::files::private_dir(&dir)?;
    let db = dir.join("conf.db");
    let mut create = ovs("ovsdb-tool");
    create.arg("create").arg(&db).arg(SCHEMA);
    let out = tokio::process::Command::from(create).output().await.context("running ovsdb-tool")?;
    if !out.status.success() {
        return Err(Error::Command(format!(
            "ovsdb-tool create failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let mut daemons = vec![daemon("ovsdb-server", &db.to_string_lossy())?];
    let started = async {
        let sock = dir.join("db.sock");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !sock.exists() {
            if Instant::now() > deadline {
                return Err(Error::Command(format!("ovsdb-server made no {} within 5 s", sock.display())));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        vsctl(&["--no-wait", "init"]).await?;
        daemons.push(daemon("ovs-vswitchd", &format!("unix:{}", sock.display()))?);
        for (ns, cidr) in [(client, client_cidr), (server, server_cidr)] {
            run_quiet("ip", &["netns", "add", ns]).await?;
            run_quiet("ip", &["link", "add", ns, "type", "veth", "peer", "name", "eth0", "netns", ns]).await?;
            run_quiet("ip", &["link", "set", ns, "up"]).await?;
            run_quiet("ip", &["-n", ns, "addr", "add", cidr, "dev", "eth0"]).await?;
            run_quiet("ip", &["-n", ns, "link", "set", "eth0", "up"]).await?;
            run_quiet("ip", &["-n", ns, "link", "set", "lo", "up"]).await?;
            // Partial checksums and TSO segments do not survive AF_PACKET (see the module).
            run_quiet("ip", &["netns", "exec", ns, "ethtool", "-K", "eth0", "tx", "off"]).await?;
        }
        // One bridge in the userspace datapath with its default flow (NORMAL: MAC learning).
        // Its own interface, a tap, stays down and without addresses: nothing on the host
        // talks through it.
        vsctl(&[
            "add-br",
            PREFIX,
            "--",
            "set",
            "bridge",
            PREFIX,
            "datapath_type=netdev",
            "--",
            "add-port",
            PREFIX,
            client,
            "--",
            "add-port",
            PREFIX,
            server,
        ])
        .await?;
        let server_ip = server_cidr.split('/').next().unwrap_or(server_cidr);
        reaches(client, server_ip).await
    }
    .await;
    match started {
        Ok(()) => Ok(daemons),
        Err(e) => {
            remove(daemons, client, server).await;
            Err(e)
        }
    }
}

/// Whether `ns` reaches `ip` (a few tries: the ports may take a moment to come up in OVS).
async fn reaches(ns: &str, ip: &str) -> Result<()> {
    let mut last = None;
    for _ in 0..5 {
        match run_quiet("ip", &["netns", "exec", ns, "ping", "-c", "1", "-W", "1", ip]).await {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(Error::Command(format!(
        "{ns} does not reach {ip} through Open vSwitch: {}",
        last.map_or_else(String::new, |e| e.to_string())
    )))
}

/// Stops the daemons (`children`, and whatever a killed run left, found by the pid files in
/// the run's directory), removes the bridge's taps, the veths and the namespaces, and the
/// directory. Nothing there is fine.
pub async fn remove(children: Vec<Child>, client: &str, server: &str) {
    let _ = crate::sys::blocking(move || {
        stop(children);
        Ok(())
    })
    .await;
    for ns in [client, server] {
        let _ = run_quiet("ip", &["netns", "del", ns]).await;
    }
    if let Ok(nl) = crate::sys::netlink::Netlink::new() {
        let links = nl.links().await.map(|l| l.into_keys().collect::<Vec<_>>()).unwrap_or_default();
        // The datapath's tap is OVS's, not ours: only when no other ovs-vswitchd may own it.
        let others = !running(&[]).is_empty();
        for link in links.iter().filter(|l| l.starts_with(PREFIX) || (**l == DATAPATH_TAP && !others)) {
            let _ = nl.delete(link).await;
        }
    }
    let _ = std::fs::remove_dir_all(dir());
}

/// Stops `children` and any daemon of an earlier run (SIGTERM, SIGKILL after 2 s) and reaps
/// the children.
fn stop(mut children: Vec<Child>) {
    let dir = dir();
    let mut pids: Vec<i32> = children.iter().map(|c| c.id() as i32).collect();
    for name in DAEMONS {
        let Ok(text) = std::fs::read_to_string(dir.join(format!("{name}.pidfile"))) else { continue };
        let Ok(pid) = text.trim().parse::<i32>() else { continue };
        // Only a running daemon of this contender: a reused pid must not be signalled.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let ours = String::from_utf8_lossy(&cmdline).contains(&*dir.to_string_lossy());
        if ours && running(&[name]).contains(&pid) && !pids.contains(&pid) {
            pids.push(pid);
        }
    }
    let signal = |sig, pids: &[i32]| {
        for pid in pids {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), sig);
        }
    };
    signal(nix::sys::signal::Signal::SIGTERM, &pids);
    let deadline = Instant::now() + Duration::from_secs(2);
    while pids.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Only those still running: an earlier run's daemon that exited may be reaped by now and
    // its pid reused (a child of ours stays a zombie until it is waited for below).
    let left: Vec<i32> = pids.iter().copied().filter(|p| alive(*p)).collect();
    signal(nix::sys::signal::Signal::SIGKILL, &left);
    for child in &mut children {
        let _ = child.wait();
    }
}

/// Pids of the running Open vSwitch daemons named in `names` (all of them if empty).
pub fn running(names: &[&str]) -> Vec<i32> {
    let Ok(proc) = std::fs::read_dir("/proc") else { return vec![] };
    proc.filter_map(|e| e.ok())
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            let comm = comm.trim();
            let ours = if names.is_empty() { DAEMONS.contains(&comm) } else { names.contains(&comm) };
            (ours && alive(pid)).then_some(pid)
        })
        .collect()
}

/// Whether process `pid` exists and has not exited (a zombie has: what is left of it is its
/// parent's to reap).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(')').next().is_some_and(|r| !r.trim_start().starts_with('Z')))
}
