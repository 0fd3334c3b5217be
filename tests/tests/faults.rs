//! Faults: a command killed half-way (SIGABRT at a failpoint, as kill -9 would leave it), a
//! step failing half-way (rollback), and machines that cannot run the switch.
use switch_tests::*;

const KILLED: i32 = 128 + libc::SIGABRT;

datapath_matrix!(
    up_killed_half_way_converges,
    ns_add_killed_half_way_converges_and_traffic_keeps_flowing,
    ns_add_failing_half_way_rolls_back,
);

fn up_killed_half_way_converges(dp: &str) {
    let mut sb = Sandbox::new();
    let sw = sb.name("sw");
    sb.adopt(&sw);
    let r = switch_env(&["up", "--name", &sw, "--datapath", dp], &[("SWITCH_FAILPOINT", "up:made")]);
    assert_eq!(r.code, KILLED, "{r:?}");
    let list = json(&["list"]);
    let me = list.as_array().unwrap().iter().find(|s| s["name"] == sw.as_str()).expect("recorded").clone();
    assert_eq!(me["ready"], false, "an interrupted up is not reported as up");
    // Re-running converges to a working switch.
    let again = json(&["up", "--name", &sw, "--datapath", dp]);
    assert_eq!(again["created"], true);
    let a = sb.port(&sw, "a", "10.40.0.1/24", &[]);
    let _b = sb.port(&sw, "b", "10.40.0.2/24", &[]);
    assert!(ping(&a, "10.40.0.2", 2));
    // And `down` after a killed `up` leaves nothing.
    ok(&["down", "--name", &sw]);
    let r = switch_env(&["up", "--name", &sw, "--datapath", dp], &[("SWITCH_FAILPOINT", "up:made")]);
    assert_eq!(r.code, KILLED);
    ok(&["down", "--name", &sw]);
    assert_eq!(Snapshot::take(&sb.prefix), Snapshot::take("\u{0}never"));
}

fn ns_add_killed_half_way_converges_and_traffic_keeps_flowing(dp: &str) {
    let mut sb = Sandbox::new();
    let sw = sb.switch("sw", dp, &[]);
    let a = sb.port(&sw, "a", "10.41.0.1/24", &[]);
    let b = sb.port(&sw, "b", "10.41.0.2/24", &[]);
    for point in ["ns-add:veth", "ns-add:attached"] {
        let c = sb.name("c");
        // c is re-made several times; a fixed MAC keeps b's ARP cache right across them (a
        // new random MAC would leave b sending to the old one until its neighbour entry
        // goes stale, with a Linux bridge as with this switch).
        let mac_args = ["--mac", "02:00:00:41:00:03"];
        let add = |env: &[(&str, &str)]| {
            let mut args = vec!["ns", "add", &c, "--ip", "10.41.0.3/24", "--switch", &sw];
            args.extend_from_slice(&mac_args);
            switch_env(&args, env)
        };
        let r = add(&[("SWITCH_FAILPOINT", point)]);
        assert_eq!(r.code, KILLED, "{point}: {r:?}");
        assert_eq!(ns_info(&c)["ready"], false, "{point}");
        // Existing ports keep forwarding: the datapath does not depend on the CLI.
        assert!(ping(&a, "10.41.0.2", 3), "{point}: traffic between existing ports broke");
        // Re-running the same command converges.
        let r = add(&[]);
        assert_eq!(r.code, 0, "{point}: {r:?}");
        assert!(ping(&c, "10.41.0.1", 2), "{point}");
        assert!(ping(&b, "10.41.0.3", 2), "{point}");
        // Killed again, then removed with ns del: nothing of c is left.
        ok(&["ns", "del", &c]);
        let r = add(&[("SWITCH_FAILPOINT", point)]);
        assert_eq!(r.code, KILLED);
        ok(&["ns", "del", &c]);
        assert!(!netns_list().contains(&c), "{point}");
    }
    ok(&["down", "--name", &sw]);
    assert_eq!(Snapshot::take(&sb.prefix), Snapshot::take("\u{0}never"));
}

fn ns_add_failing_half_way_rolls_back(dp: &str) {
    let mut sb = Sandbox::new();
    let sw = sb.switch("sw", dp, &[]);
    let a = sb.port(&sw, "a", "10.42.0.1/24", &[]);
    let _b = sb.port(&sw, "b", "10.42.0.2/24", &[]);
    let before = Snapshot::take(&sb.prefix);
    for point in ["ns-add:veth:error", "ns-add:attached:error"] {
        let c = sb.name("c");
        let r = switch_env(&["ns", "add", &c, "--ip", "10.42.0.3/24", "--switch", &sw], &[("SWITCH_FAILPOINT", point)]);
        assert_eq!(r.code, 1, "{point}: {r:?}");
        assert!(r.stderr.contains("failpoint"), "{point}: {}", r.stderr);
        assert_eq!(Snapshot::take(&sb.prefix), before, "{point}: not rolled back");
        assert!(ping(&a, "10.42.0.2", 2));
    }
    let r = switch_env(&["up", "--name", &sb.name("sw2"), "--datapath", dp], &[("SWITCH_FAILPOINT", "up:made:error")]);
    assert_eq!(r.code, 1);
    assert_eq!(Snapshot::take(&sb.prefix), before, "failed up not rolled back");
}

/// Whether a TCP SYN from outside to host port `port` comes out of `nat_ingress` translated.
fn forwarded(bed: &nat::NatBed, sport: u16, port: u16) -> bool {
    let syn = ipv4::packet(ipv4::TCP, bed.client, bed.uplink_ip, sport, port, ipv4::SYN, false);
    let out = bpf::run_tc(&bed.nat_in, &syn, bed.ifindex).unwrap();
    ipv4::inspect(&out.data).dst == bed.target
}

#[test]
fn forward_add_killed_half_way_converges() {
    let bed = nat::NatBed::new(114, 11480);
    let web = bed.sb.name("web");
    let add = |range: &str, env: &[(&str, &str)]| {
        let to = format!("{web}:{range}");
        switch_env(&["forward", "add", "--proto", "tcp", "--host-port", range, "--to", &to, "--switch", &bed.sw], env)
    };
    let listed = || json(&["forward", "list", "--switch", &bed.sw]).as_array().unwrap().len();
    assert_eq!(listed(), 2);
    // Killed after the first port of the range is written: not listed, the existing forward
    // still works, and the next mutating command of the switch takes the stray entry out.
    let r = add("11490-11499", &[("SWITCH_FAILPOINT", "forward-add:map")]);
    assert_eq!(r.code, KILLED, "{r:?}");
    assert!(forwarded(&bed, 40000, 11480), "the existing forward broke");
    assert_eq!(listed(), 2, "a killed forward add was listed");
    ok(&["up", "--switch", &bed.sw]);
    assert!(!forwarded(&bed, 40001, 11490), "a stray entry of a killed forward add still forwards");
    // Re-running the same command converges: the whole range forwards.
    let r = add("11490-11499", &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(forwarded(&bed, 40002, 11490) && forwarded(&bed, 40003, 11499));
    assert_eq!(listed(), 3);
    // A step failing half-way rolls back what it wrote.
    let r = add("11500-11509", &[("SWITCH_FAILPOINT", "forward-add:map:error")]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(!forwarded(&bed, 40004, 11500), "a failed forward add was not rolled back");
    // Killed again, then `down`: nothing is left.
    let r = add("11500-11509", &[("SWITCH_FAILPOINT", "forward-add:map")]);
    assert_eq!(r.code, KILLED);
    ok(&["down", "--name", &bed.sw]);
    assert_eq!(Snapshot::take(&bed.sb.prefix), Snapshot::take("\u{0}never"));
}

#[test]
fn not_root_is_one_clear_line() {
    // A copy in a world-readable place: the clone may live under a directory (such as
    // /root) that an unprivileged user cannot enter.
    use std::os::unix::fs::PermissionsExt as _;
    let dir = std::env::temp_dir().join(format!("switch-nonroot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.join("switch");
    std::fs::copy(switch_bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&bin)
        .args(["up", "--name", "nonroot"])
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.trim(), "error: switch must run as root: it creates namespaces and loads eBPF programs");
}

#[test]
fn missing_bpffs_is_one_clear_line() {
    // A private mount namespace without bpffs: the host's mount is untouched.
    let bin = switch_bin();
    let o = std::process::Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "umount /sys/fs/bpf 2>/dev/null; mount -t tmpfs none /sys/fs/bpf; exec \"$0\" up --name nobpffs",
        ])
        .arg(&bin)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.trim().starts_with("error: bpffs is not mounted at /sys/fs/bpf"), "{err}");
    assert_eq!(err.trim().lines().count(), 1);
}

fn kill9_and_wait(pid: i32) {
    // SAFETY: kill(2) on the switch process this test made.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    for _ in 0..100 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.is_empty() || stat.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z')) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("process {pid} survived SIGKILL");
}

#[test]
fn userspace_switch_process_killed_converges() {
    let mut sb = Sandbox::new();
    let sw = sb.switch("us", "userspace", &[]);
    let a = sb.port(&sw, "a", "10.43.0.1/24", &[]);
    let _b = sb.port(&sw, "b", "10.43.0.2/24", &[]);
    assert!(ping(&a, "10.43.0.2", 2));
    kill9_and_wait(switch_pid(&sw).unwrap());
    // The CLI says what is wrong in one line instead of hanging.
    let e = fails(&["stats", "--switch", &sw], 1);
    assert!(e.contains("userspace switch"), "{e}");
    // `up` again restarts the process and hands it the existing ports.
    let r = json(&["up", "--name", &sw, "--datapath", "userspace"]);
    assert_eq!(r["created"], true);
    assert!(ping(&a, "10.43.0.2", 2), "forwarding after the restart");
    assert_eq!(fdb(&sw).len(), 2);
    ok(&["down", "--name", &sw]);
    assert_eq!(Snapshot::take(&sb.prefix), Snapshot::take("\u{0}never"));
}

#[test]
fn down_leaves_alone_a_stranger_a_stale_pid_file_names() {
    let mut sb = Sandbox::new();
    let sw = sb.switch("stale", "userspace", &[]);
    let pid_file = format!("/run/switch/{sw}.pid");
    let mut stranger = Reaped::new(std::process::Command::new("sleep").arg("60").spawn().unwrap());
    // The switch process dies and its pid goes to an unrelated process: the file names the
    // stranger's pid with the dead process's start time, or (an older file) a bare pid.
    for bare in [false, true] {
        let line = std::fs::read_to_string(&pid_file).unwrap();
        let start = line.split_whitespace().nth(1).unwrap().to_owned();
        kill9_and_wait(switch_pid(&sw).unwrap());
        let forged = if bare { stranger.id().to_string() } else { format!("{} {start}", stranger.id()) };
        std::fs::write(&pid_file, forged).unwrap();
        ok(&["down", "--switch", &sw]);
        assert!(stranger.try_wait().unwrap().is_none(), "down signalled an unrelated process (bare pid: {bare})");
        if !bare {
            ok(&["up", "--switch", &sw, "--datapath", "userspace"]);
        }
    }
    let _ = stranger.kill();
    let _ = stranger.wait();
    assert_eq!(Snapshot::take(&sb.prefix), Snapshot::take("\u{0}never"));
}

#[test]
fn foreground_switch_run_killed_then_down_converges() {
    let mut sb = Sandbox::new();
    let (sw, mut child) = sb.switch_run("run");
    let a = sb.port(&sw, "a", "10.44.0.1/24", &[]);
    kill9_and_wait(child.id() as i32);
    let _ = child.wait();
    // Killed: nothing was torn down, and `down` converges from there.
    assert!(netns_list().contains(&a));
    ok(&["down", "--name", &sw]);
    assert_eq!(Snapshot::take(&sb.prefix), Snapshot::take("\u{0}never"));
}

/// A switch made by another version of the binary, whose maps have other value sizes (a
/// counter added to a shared type): `down` still takes all of it away, namespaces, veths and
/// pins, rather than failing on the first table it cannot read. Planted here by replacing the
/// pinned STATS map with one of the old, shorter per-port counters.
#[test]
fn down_removes_a_switch_whose_tables_another_version_made() {
    let mut sb = Sandbox::new();
    let sw = sb.switch("old", "tc", &["--gateway", "10.203.0.254/24"]);
    let a = sb.port(&sw, "a", "10.203.0.1/24", &[]);
    let old_size = (std::mem::size_of::<switch_common::PortStats>() - 8) as u32;
    switch_tests::bpf::pin_percpu_array(&format!("/sys/fs/bpf/switch/{sw}/STATS"), old_size, switch_common::MAX_PORTS)
        .expect("planting an old STATS map");
    let r = switch(&["stats", "--switch", &sw]);
    assert_ne!(r.code, 0, "stats read a map of another layout: {r:?}");
    ok(&["down", "--switch", &sw]);
    assert!(!std::path::Path::new(&format!("/sys/fs/bpf/switch/{sw}")).exists(), "pins left");
    assert!(!netns_list().contains(&a), "namespace left");
    assert!(json(&["list"]).as_array().unwrap().iter().all(|s| s["name"] != sw.as_str()), "still listed");
}
