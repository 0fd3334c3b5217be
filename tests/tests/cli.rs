//! The CLI contract: idempotent commands, clear one-line errors that change nothing, and a
//! teardown that leaves no trace.
use switch_tests::*;

datapath_matrix!(
    up_and_ns_add_are_idempotent,
    bad_input_gets_one_error_line_and_changes_nothing,
    down_removes_every_trace,
    ns_del_removes_the_port_and_forwarding_goes_on,
    concurrent_ns_adds_on_one_switch_all_land,
    a_mac_in_use_is_refused_on_every_path,
);

#[test]
fn tc_the_datapath_never_hands_a_reserved_mac_to_another_port() {
    the_datapath_never_hands_a_reserved_mac_to_another_port("tc");
}

#[test]
fn xdp_the_datapath_never_hands_a_reserved_mac_to_another_port() {
    the_datapath_never_hands_a_reserved_mac_to_another_port("xdp");
}

#[test]
fn userspace_the_datapath_never_hands_a_reserved_mac_to_another_port() {
    the_datapath_never_hands_a_reserved_mac_to_another_port("userspace");
}

fn up_and_ns_add_are_idempotent(dp: &str) {
    let mut sb = Sandbox::new();
    let sw = sb.switch("sw", dp, &["--ageing", "30"]);
    let again = json(&["up", "--name", &sw]);
    assert_eq!(again["created"], false);
    assert_eq!(again["ageing_secs"], 30);
    let e = fails(&["up", "--name", &sw, "--ageing", "60"], 2);
    assert!(e.contains("already up with ageing 30s"), "{e}");
    let e = fails(&["up", "--name", &sw, "--no-masquerade"], 2);
    assert!(e.contains("masquerade (asked for --no-masquerade)"), "{e}");
    let e = fails(&["up", "--name", &sw, "--max-learned", "7"], 2);
    assert!(e.contains("max-learned 1024 (asked for 7)"), "{e}");
    let e = fails(&["up", "--name", &sw, "--busy-poll", "50"], 2);
    assert!(e.contains("busy-poll 0 us (asked for 50 us)"), "{e}");
    let other = if dp == "tc" { "bridge" } else { "tc" };
    let e = fails(&["up", "--name", &sw, "--datapath", other], 2);
    assert!(e.contains("switching a running switch's datapath is not supported"), "{e}");
    assert_eq!(json(&["up", "--name", &sw, "--datapath", dp])["created"], false);

    let ns = sb.port(&sw, "a", "10.30.0.1/24", &[]);
    let r = json(&["ns", "add", &ns, "--ip", "10.30.0.1/24", "--switch", &sw]);
    assert_eq!(r["created"], false);
    let e = fails(&["ns", "add", &ns, "--ip", "10.30.0.9/24", "--switch", &sw], 2);
    assert!(e.contains("already exists"), "{e}");
    let list = json(&["list"]);
    let me = list.as_array().unwrap().iter().find(|s| s["name"] == sw.as_str()).unwrap().clone();
    assert_eq!(me["ports"], 1);
    assert_eq!(me["ready"], true);
    assert_eq!(me["datapath"], dp);
}

fn bad_input_gets_one_error_line_and_changes_nothing(dp: &str) {
    let mut sb = Sandbox::new();
    let sw = sb.switch("sw", dp, &[]);
    let taken = sb.port(&sw, "a", "10.31.0.1/24", &["--mac", "02:00:00:31:00:01"]);
    let fresh = sb.name("b");
    let long = format!("{}{}", sb.prefix, "x".repeat(64));
    let unknown_sw = sb.name("nosuch");
    // A namespace made by someone else.
    let foreign = sb.name("foreign");
    host("ip", &["netns", "add", &foreign]);

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["ns", "add", &fresh, "--ip", "10.31.0.300/24", "--switch", &sw], "invalid CIDR"),
        (vec!["ns", "add", &fresh, "--ip", "10.31.0.2", "--switch", &sw], "invalid CIDR"),
        (vec!["ns", "add", &fresh, "--ip", "10.31.0.2/40", "--switch", &sw], "invalid CIDR"),
        (vec!["ns", "add", &fresh, "--ip", "10.31.0.0/24", "--switch", &sw], "network address"),
        (
            vec!["ns", "add", &fresh, "--ip", "10.31.0.2/24", "--switch", &sw, "--mac", "zz:00:00:00:00:01"],
            "invalid MAC",
        ),
        (vec!["ns", "add", &fresh, "--ip", "10.31.0.2/24", "--switch", &sw, "--mac", "01:00:5e:00:00:01"], "unicast"),
        (
            vec!["ns", "add", &fresh, "--ip", "10.31.0.2/24", "--switch", &sw, "--mac", "02:00:00:31:00:01"],
            "already used by namespace",
        ),
        (vec!["ns", "add", &fresh, "--ip", "10.31.0.1/24", "--switch", &sw], "already used by namespace"),
        (vec!["ns", "add", &taken, "--ip", "10.31.0.5/24", "--switch", &sw], "already exists"),
        (vec!["ns", "add", &foreign, "--ip", "10.31.0.6/24", "--switch", &sw], "not made by switch"),
        (vec!["ns", "add", &fresh, "--ip", "10.31.0.2/24", "--switch", &unknown_sw], "does not exist"),
        (vec!["ns", "add", &long, "--ip", "10.31.0.2/24", "--switch", &sw], "longer than 64"),
        (vec!["ns", "add", "bad/name", "--ip", "10.31.0.2/24", "--switch", &sw], "not allowed"),
        (vec!["up", "--name", &long], "longer than 64"),
        (vec!["up", "--name", &fresh, "--ageing", "0"], "at least 1 second"),
        (vec!["up", "--name", &fresh, "--gateway", "10.0.0.1/7"], "shorter than /8"),
        (vec!["up", "--name", &fresh, "--gateway", "64.0.0.1/2"], "shorter than /8"),
        (vec!["up", "--name", &fresh, "--datapath", "xdp", "--redirect", "egress"], "only the tc datapath"),
        (vec!["up", "--name", &fresh, "--datapath", "nosuch"], "invalid value"),
        (vec!["up", "--name", &fresh, "--datapath", "tc", "--busy-poll", "50"], "only the userspace datapath"),
        // Without --datapath: the default one (tc) has nothing to poll either.
        (vec!["up", "--name", &fresh, "--busy-poll", "50"], "add --datapath userspace"),
        (vec!["up", "--name", &fresh, "--datapath", "userspace", "--busy-poll", "2000000"], "at most 1000000"),
        (vec!["ns", "del", &fresh], "not managed by switch"),
        (vec!["fdb", "--switch", &unknown_sw], "does not exist"),
        (vec!["stats", "--switch", &unknown_sw], "does not exist"),
        (vec!["ns", "exec", &fresh, "--", "true"], "does not exist"),
        (vec!["link", &fresh, &fresh, "--ip1", "10.32.0.1/24", "--ip2", "10.32.0.2/24"], "itself"),
    ];
    for (args, expect) in cases {
        let before = Snapshot::take(&sb.prefix);
        let r = switch(&args);
        assert_eq!(r.code, 2, "switch {args:?}: expected exit 2, got {}: {}{}", r.code, r.stdout, r.stderr);
        // One error line; clap's errors for malformed values add only its "--help" hint.
        let lines: Vec<&str> = r
            .stderr
            .lines()
            .filter(|l| {
                !l.trim().is_empty() && !l.starts_with("For more information") && !l.starts_with("  [possible values")
            })
            .collect();
        assert_eq!(lines.len(), 1, "switch {args:?}: {:?}", r.stderr);
        assert!(lines[0].starts_with("error: "), "switch {args:?}: {:?}", r.stderr);
        assert!(r.stderr.contains(expect), "switch {args:?}: expected {expect:?} in {:?}", r.stderr);
        assert_eq!(Snapshot::take(&sb.prefix), before, "switch {args:?} changed the system");
    }
    host("ip", &["netns", "del", &foreign]);
}

/// The MAC of `sw`'s gateway (the host's end, which the namespaces see), from `switch ports`.
fn gateway_mac(sw: &str) -> String {
    let rows = json(&["ports", "--switch", sw]);
    let gw = rows.as_array().unwrap().iter().find(|r| r["kind"] == "gateway").unwrap_or_else(|| panic!("{rows}"));
    gw["mac"].as_str().unwrap().to_owned()
}

fn a_mac_in_use_is_refused_on_every_path(dp: &str) {
    let mut sb = Sandbox::new();
    let sw = sb.switch("sw", dp, &["--gateway", "10.36.0.254/24"]);
    let other = sb.switch("o", dp, &["--gateway", "10.37.0.254/24"]);
    let (gw, other_gw) = (gateway_mac(&sw), gateway_mac(&other));
    let a_mac = "02:00:00:36:00:01";
    let a = sb.port(&sw, "a", "10.36.0.1/24", &["--mac", a_mac]);
    // A namespace made by someone else, for `ns attach`.
    let foreign = sb.name("f");
    host("ip", &["netns", "add", &foreign]);
    let path = format!("/run/netns/{foreign}");
    let fresh = sb.name("b");

    let cases: Vec<(Vec<&str>, String)> = vec![
        // The gateway's MAC would take the host's traffic of the segment.
        (
            vec!["ns", "add", &fresh, "--ip", "10.36.0.2/24", "--switch", &sw, "--mac", &gw],
            format!("already used by the gateway of switch '{sw}'"),
        ),
        // Another switch's gateway: the host's too.
        (
            vec!["ns", "add", &fresh, "--ip", "10.36.0.2/24", "--switch", &sw, "--mac", &other_gw],
            format!("already used by the gateway of switch '{other}'"),
        ),
        (
            vec!["ns", "attach", &fresh, "--netns", &path, "--ip", "10.36.0.2/24", "--switch", &sw, "--mac", &gw],
            format!("already used by the gateway of switch '{sw}'"),
        ),
        (
            vec!["ns", "attach", &fresh, "--netns", &path, "--ip", "10.36.0.2/24", "--switch", &sw, "--mac", a_mac],
            format!("already used by namespace '{a}'"),
        ),
        (
            vec!["ns", "attach", &fresh, "--netns", &path, "--ip", "10.37.0.2/24", "--switch", &other, "--mac", &gw],
            format!("already used by the gateway of switch '{sw}'"),
        ),
    ];
    for (args, expect) in cases {
        let before = Snapshot::take(&sb.prefix);
        let e = fails(&args, 2);
        assert!(e.contains(&expect), "switch {args:?}: expected {expect:?} in {e:?}");
        assert_eq!(Snapshot::take(&sb.prefix), before, "switch {args:?} changed the system");
    }
    // The gateway still answers for its MAC: nothing took its frames.
    assert!(ping(&a, "10.36.0.254", 2));
    host("ip", &["netns", "del", &foreign]);
}

/// Below the controller's check: a MAC the datapath has reserved for a port is never given to
/// another one, even when the controller does not know of it (the eBPF datapaths' BOUND is
/// only added to where absent; the userspace engine refuses a second port with a reserved MAC).
fn the_datapath_never_hands_a_reserved_mac_to_another_port(dp: &str) {
    let mut sb = Sandbox::new();
    let sw = sb.switch("sw", dp, &["--gateway", "10.38.0.254/24"]);
    let gw = gateway_mac(&sw);
    let a = sb.port(&sw, "a", "10.38.0.1/24", &[]);
    if dp == "userspace" {
        // A port asked of the engine directly, bound to the gateway's MAC.
        let (x0, x1) = (sb.name("x0"), sb.name("x1"));
        host("ip", &["link", "add", &x0, "type", "veth", "peer", "name", &x1]);
        let ifindex: u32 =
            std::fs::read_to_string(format!("/sys/class/net/{x0}/ifindex")).unwrap().trim().parse().unwrap();
        let mac: Vec<u8> = gw.split(':').map(|b| u8::from_str_radix(b, 16).unwrap()).collect();
        let request = serde_json::json!({
            "op": "add_port", "slot": 77, "ifindex": ifindex, "ifname": x0,
            "guard": {"flags": switch_common::PORT_F_BIND_MAC, "mac": mac, "ip": 0},
        });
        let mut sock = std::os::unix::net::UnixStream::connect(format!("/run/switch/{sw}.sock")).unwrap();
        std::io::Write::write_all(&mut sock, format!("{request}\n").as_bytes()).unwrap();
        let mut answer = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(&sock), &mut answer).unwrap();
        let answer: Value = serde_json::from_str(&answer).unwrap();
        if answer["status"] != "error" {
            let del = serde_json::json!({"op": "del_port", "slot": 77});
            std::io::Write::write_all(&mut sock, format!("{del}\n").as_bytes()).unwrap();
        }
        assert_eq!(answer["status"], "error", "the engine took the gateway's MAC for another port: {answer}");
        assert!(answer["message"].as_str().unwrap().contains(&format!("MAC address {gw} is already used")), "{answer}");
        host("ip", &["link", "del", &x0]);
    } else {
        // A reservation the controller does not know of, planted in BOUND.
        use aya::maps::{HashMap, Map, MapData};
        use switch_common::MacKey;
        let planted = [2, 0, 0, 0x38, 0, 0x99];
        let data = MapData::from_pin(format!("/sys/fs/bpf/switch/{sw}/BOUND")).unwrap();
        let mut bound: HashMap<_, MacKey, u32> = HashMap::try_from(Map::from_map_data(data).unwrap()).unwrap();
        bound.insert(MacKey::new(planted), 77, 0).unwrap();
        let before = Snapshot::take(&sb.prefix);
        let r = switch(&[
            "ns",
            "add",
            &sb.name("b"),
            "--ip",
            "10.38.0.2/24",
            "--switch",
            &sw,
            "--mac",
            "02:00:00:38:00:99",
        ]);
        let holder = bound.get(&MacKey::new(planted), 0);
        let _ = bound.remove(&MacKey::new(planted));
        assert_eq!(r.code, 2, "ns add with a MAC reserved in the datapath: {r:?}");
        assert!(r.stderr.contains("already used by port 77"), "{r:?}");
        assert_eq!(holder.ok(), Some(77), "the reservation was overwritten");
        assert_eq!(Snapshot::take(&sb.prefix), before, "the refused port was not rolled back");
    }
    // The gateway's reservation held: its frames still reach it.
    assert!(ping(&a, "10.38.0.254", 2));
}

fn down_removes_every_trace(dp: &str) {
    let mut sb = Sandbox::new();
    let sw = sb.switch("sw", dp, &[]);
    let a = sb.port(&sw, "a", "10.33.0.1/24", &[]);
    let b = sb.port(&sw, "b", "10.33.0.2/24", &[]);
    assert!(ping(&a, "10.33.0.2", 2));
    let host_ifs: Vec<String> =
        [&a, &b].iter().map(|n| ns_info(n)["host_interface"].as_str().unwrap().to_owned()).collect();
    let pin_dir = format!("/sys/fs/bpf/switch/{sw}");
    match dp {
        // A tc port's program is a filter of the veth's clsact qdisc; an XDP port's a pinned link.
        "tc" => assert!(host("tc", &["filter", "show", "dev", &host_ifs[0], "ingress"]).contains("switch_ingress")),
        "xdp" => assert!(std::path::Path::new(&pin_dir).join("links").join(&host_ifs[0]).exists()),
        _ => {}
    }
    let pid = switch_pid(&sw);
    assert_eq!(pid.is_some(), dp == "userspace", "pid file of the userspace process");
    // The ports go in one batch, an interface group of their own: the host's interfaces, in
    // the default group or in one of their own, stay.
    let (plain, grouped) = (sb.name("d0"), sb.name("d1"));
    host("ip", &["link", "add", &plain, "type", "veth", "peer", "name", &grouped]);
    host("ip", &["link", "set", &grouped, "group", "77"]);

    let r = json(&["down", "--name", &sw]);
    assert_eq!(r["existed"], true);
    assert_eq!(r["removed_namespaces"].as_array().unwrap().len(), 2);
    assert!(!std::path::Path::new(&pin_dir).exists(), "pins left behind");
    let links = host_links();
    for h in &host_ifs {
        assert!(!links.contains(h), "{h} left behind");
    }
    assert!(links.contains(&plain) && links.contains(&grouped), "down took the host's interfaces: {links:?}");
    host("ip", &["link", "del", &plain]);
    let ns = netns_list();
    assert!(!ns.contains(&a) && !ns.contains(&b), "namespaces left behind: {ns:?}");
    if let Some(pid) = pid {
        // Gone, or a zombie waiting for its new parent to reap it.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next().map(str::to_owned));
        assert!(matches!(state.as_deref(), None | Some("Z")), "userspace switch process {pid} still runs: {stat}");
    }
    let empty = Snapshot::take(&sb.prefix);
    assert_eq!(empty, Snapshot::take("\u{0}never"), "state or pins left behind: {empty:?}");
    // No program of ours is still loaded for this switch: the maps are gone with it.
    let again = json(&["down", "--name", &sw]);
    assert_eq!(again["existed"], false);
}

fn ns_del_removes_the_port_and_forwarding_goes_on(dp: &str) {
    let mut sb = Sandbox::new();
    let sw = sb.switch("sw", dp, &[]);
    let a = sb.port(&sw, "a", "10.34.0.1/24", &[]);
    let b = sb.port(&sw, "b", "10.34.0.2/24", &[]);
    let c = sb.port(&sw, "c", "10.34.0.3/24", &[]);
    assert!(ping(&a, "10.34.0.3", 2));
    let b_host = ns_info(&b)["host_interface"].as_str().unwrap().to_owned();
    ok(&["ns", "del", &b]);
    assert!(!netns_list().contains(&b));
    assert!(!host_links().contains(&b_host));
    assert!(ping(&a, "10.34.0.3", 2));
    assert!(ping(&c, "10.34.0.1", 2));
    // A new port reuses the slot and works.
    let d = sb.port(&sw, "d", "10.34.0.4/24", &[]);
    assert!(ping(&d, "10.34.0.1", 2));
    assert_eq!(fdb(&sw).len(), 3);
}

#[test]
fn help_teaches() {
    let top = ok(&["--help"]);
    for word in ["up", "down", "ns", "link", "fdb", "stats", "logs", "demo", "Quick start", "Exit status"] {
        assert!(top.contains(word), "--help lacks {word}");
    }
    let add = ok(&["ns", "add", "--help"]);
    assert!(add.contains("--ip") && add.contains("192.168.15.1/24") && add.contains("--mac"));
}

#[test]
fn a_reader_that_stops_reading_is_not_an_error() {
    // `switch list | head -0`: the pipe's reader is gone before the reply is written, so the
    // write fails with EPIPE (Rust ignores SIGPIPE). The command did its job: exit 0, no panic.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    for args in [&["list", "--json"][..], &["list"][..]] {
        let out = std::process::Command::new(switch_bin())
            .args(args)
            .stdout(writer.try_clone().expect("pipe"))
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("running switch");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && err.is_empty(), "switch {args:?} into a closed pipe: {:?} {err}", out.status);
    }
}

fn concurrent_ns_adds_on_one_switch_all_land(dp: &str) {
    let mut sb = Sandbox::new();
    let sw = sb.switch("sw", dp, &[]);
    // Six CLI processes at once: the state lock serialises them, each gets its own slot.
    let names: Vec<String> = (1..=6).map(|i| sb.name(&format!("p{i}"))).collect();
    let handles: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            std::process::Command::new(switch_bin())
                .args(["ns", "add", ns, "--ip", &format!("10.35.0.{}/24", i + 1), "--switch", &sw])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for h in handles {
        let o = h.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let list = json(&["ns", "list"]);
    let mine: Vec<&Value> = list.as_array().unwrap().iter().filter(|r| r["attached_to"] == sw.as_str()).collect();
    assert_eq!(mine.len(), 6);
    assert!(mine.iter().all(|r| r["ready"] == true));
    for i in 2..=6 {
        assert!(ping(&names[0], &format!("10.35.0.{i}"), 1), "p1 -> p{i}");
    }
}

#[test]
fn switch_run_serves_in_the_foreground_and_cleans_up_on_sigterm() {
    let mut sb = Sandbox::new();
    let (sw, mut child) = sb.switch_run("run");
    let a = sb.port(&sw, "a", "10.36.0.1/24", &[]);
    let _b = sb.port(&sw, "b", "10.36.0.2/24", &[]);
    assert!(ping(&a, "10.36.0.2", 3));
    assert_eq!(
        json(&["list"]).as_array().unwrap().iter().find(|s| s["name"] == sw.as_str()).unwrap()["datapath"],
        "userspace"
    );
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{status}: {err}");
    assert_eq!(Snapshot::take(&sb.prefix), Snapshot::take("\u{0}never"), "switch run left something behind");
}

#[test]
fn state_and_process_files_are_root_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let mut sb = Sandbox::new();
    let sw = sb.switch("files", "userspace", &[]);
    let mode = |p: &str| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777;
    // Another local user can neither read the state nor hold the lock (flock needs only a
    // read descriptor), nor talk to the switch process.
    assert_eq!(mode("/run/switch"), 0o700);
    for f in
        ["lock".to_owned(), "state.json".to_owned(), format!("{sw}.pid"), format!("{sw}.log"), format!("{sw}.sock")]
    {
        assert_eq!(mode(&format!("/run/switch/{f}")), 0o600, "{f}");
    }
}
