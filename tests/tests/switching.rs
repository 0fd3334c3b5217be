//! Forwarding behaviour on real namespaces: learning, flooding, known unicast, ageing, MAC
//! moves, isolation between switches.
use std::{thread::sleep, time::Duration};

use switch_tests::{
    frames::{Sniffer, send_raw, tagged},
    *,
};

datapath_matrix!(
    two_namespaces_ping_and_fdb_shows_ports,
    broadcast_reaches_all_known_unicast_only_its_port,
    ageing_removes_entries_and_traffic_relearns,
    mac_move_is_followed,
    static_entries_are_not_moved_or_aged,
    two_switches_are_isolated,
    frames_with_invalid_source_are_dropped_counted_and_not_learned,
    datapath_log_streams_while_asked_for,
    tcp_and_udp_payloads_arrive_intact,
    gateway_connects_the_host_and_the_namespaces,
);

fn u(v: &Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or_else(|| panic!("{field} missing in {v}"))
}

fn two_namespaces_ping_and_fdb_shows_ports(dp: &str) {
    let mut sb = Sandbox::new();
    let sw = sb.switch("sw", dp, &[]);
    let red = sb.port(&sw, "red", "192.168.15.1/24", &[]);
    let blue = sb.port(&sw, "blue", "192.168.15.2/24", &[]);
    assert!(ping(&red, "192.168.15.2", 3), "red -> blue");
    assert!(ping(&blue, "192.168.15.1", 3), "blue -> red");

    let red_info = ns_info(&red);
    let blue_info = ns_info(&blue);
    let rows = json(&["fdb", "--switch", &sw]);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    for info in [&red_info, &blue_info] {
        let row =
            rows.iter().find(|r| r["mac"] == info["mac"]).unwrap_or_else(|| panic!("{info} not learned: {rows:?}"));
        assert_eq!(row["namespace"], info["namespace"]);
        assert_eq!(row["interface"], info["host_interface"]);
        assert_eq!(row["type"], "dynamic");
        assert!(row["age_secs"].as_f64().unwrap() < 10.0);
    }
    // The learned MAC is the one the namespace really has.
    let link = exec(&red, &["ip", "-o", "link", "show", "eth0"]).stdout;
    assert!(link.contains(red_info["mac"].as_str().unwrap()), "{link}");
    // Counters saw the traffic both ways.
    let s = port_stats(&sw, &red);
    assert!(u(&s, "rx_packets") >= 6 && u(&s, "tx_packets") >= 6, "{s}");
    assert_eq!(counter(&s, "malformed").unwrap_or(0), 0);
    assert_eq!(counter(&s, "malformed").is_some(), dp != "bridge", "bridge counters come from the interface");
}

fn broadcast_reaches_all_known_unicast_only_its_port(dp: &str) {
    let mut sb = Sandbox::new();
    let sw = sb.switch("sw", dp, &[]);
    let a = sb.port(&sw, "a", "10.20.0.1/24", &[]);
    let b = sb.port(&sw, "b", "10.20.0.2/24", &[]);
    let c = sb.port(&sw, "c", "10.20.0.3/24", &[]);

    // The first ping needs ARP: a broadcast, so c must receive a copy.
    let c0 = port_stats(&sw, &c);
    assert!(ping(&a, "10.20.0.2", 1));
    let c1 = port_stats(&sw, &c);
    assert!(u(&c1, "tx_packets") > u(&c0, "tx_packets"), "ARP broadcast did not reach c: {c0} -> {c1}");
    let a1 = port_stats(&sw, &a);
    if let Some(flooded) = counter(&a1, "flooded") {
        assert!(flooded >= 1, "{a1}");
    }

    // Now a and b know each other: 200 echo requests and replies must not reach c.
    let b1 = port_stats(&sw, &b);
    assert!(ping(&a, "10.20.0.2", 200));
    let c2 = port_stats(&sw, &c);
    let b2 = port_stats(&sw, &b);
    assert!(u(&b2, "tx_packets") - u(&b1, "tx_packets") >= 200, "{b1} -> {b2}");
    assert!(u(&c2, "tx_packets") - u(&c1, "tx_packets") <= 2, "known unicast leaked to c: {c1} -> {c2}");
    // c's own interface agrees with the counters (it saw no ICMP).
    let rx = exec(&c, &["cat", "/sys/class/net/eth0/statistics/rx_packets"]).stdout;
    assert!(rx.trim().parse::<u64>().unwrap() <= u(&c2, "tx_packets"), "c rx {rx} vs switch {c2}");
    // And c can still reach both.
    assert!(ping(&c, "10.20.0.1", 2));
    assert!(ping(&c, "10.20.0.2", 2));
}

fn ageing_removes_entries_and_traffic_relearns(dp: &str) {
    let mut sb = Sandbox::new();
    let sw = sb.switch("sw", dp, &["--ageing", "2"]);
    let a = sb.port(&sw, "a", "10.21.0.1/24", &[]);
    let _b = sb.port(&sw, "b", "10.21.0.2/24", &[]);
    assert!(ping(&a, "10.21.0.2", 2));
    assert_eq!(fdb(&sw).len(), 2);
    sleep(Duration::from_millis(3500));
    assert_eq!(fdb(&sw), vec![], "entries older than the ageing time must be gone");
    assert!(ping(&a, "10.21.0.2", 2), "forwarding works after ageing");
    assert_eq!(fdb(&sw).len(), 2);
}

fn mac_move_is_followed(dp: &str) {
    let mut sb = Sandbox::new();
    let sw = sb.switch("sw", dp, &[]);
    // A station that moves between ports: ports without port security (port security binds
    // each port to its own MAC; see port_security_stops_spoofing).
    let free = ["--no-port-security"];
    let a = sb.port(&sw, "a", "10.22.0.1/24", &["--mac", "02:00:00:22:00:01", free[0]]);
    let b = sb.port(&sw, "b", "10.22.0.2/24", &["--mac", "02:00:00:22:00:02"]);
    let c = sb.port(&sw, "c", "10.22.0.3/24", &["--mac", "02:00:00:22:00:03", free[0]]);
    assert!(ping(&a, "10.22.0.2", 2));
    assert!(fdb(&sw).contains(&("02:00:00:22:00:01".into(), a.clone(), "dynamic".into())));

    // The station with a's MAC now lives behind c's port (as when a VM migrates).
    assert_eq!(exec(&a, &["ip", "link", "set", "eth0", "address", "02:00:00:22:00:0a"]).code, 0);
    assert_eq!(exec(&c, &["ip", "link", "set", "eth0", "address", "02:00:00:22:00:01"]).code, 0);
    assert!(ping(&c, "10.22.0.2", 3), "c with the moved MAC reaches b");
    let table = fdb(&sw);
    assert!(table.contains(&("02:00:00:22:00:01".into(), c.clone(), "dynamic".into())), "{table:?}");
    assert!(!table.iter().any(|(m, ns, _)| m == "02:00:00:22:00:01" && ns == &a), "{table:?}");
    // b's replies follow the move: they reach c, not a.
    assert!(ping(&c, "10.22.0.2", 20));
    let _ = b;
}

fn static_entries_are_not_moved_or_aged(dp: &str) {
    let mut sb = Sandbox::new();
    let sw = sb.switch("sw", dp, &["--ageing", "1"]);
    let a = sb.port(&sw, "a", "10.23.0.1/24", &[]);
    let b = sb.port(&sw, "b", "10.23.0.2/24", &[]);
    ok(&["fdb", "add", "02:00:00:23:00:99", "--ns", &b]);
    sleep(Duration::from_millis(1500));
    let table = fdb(&sw);
    assert!(table.contains(&("02:00:00:23:00:99".into(), b.clone(), "static".into())), "{table:?}");
    // A frame from a claiming that MAC does not move the static entry.
    let a_mac = ns_info(&a)["mac"].as_str().unwrap().to_owned();
    assert_eq!(exec(&a, &["ip", "link", "set", "eth0", "address", "02:00:00:23:00:99"]).code, 0);
    let _ = ping(&a, "10.23.0.2", 1);
    assert!(fdb(&sw).contains(&("02:00:00:23:00:99".into(), b.clone(), "static".into())));
    // Give a its own MAC back so nothing relearns the address, then delete the entry.
    assert_eq!(exec(&a, &["ip", "link", "set", "eth0", "address", &a_mac]).code, 0);
    sleep(Duration::from_millis(100));
    ok(&["fdb", "del", "02:00:00:23:00:99", "--switch", &sw]);
    assert!(!fdb(&sw).iter().any(|(m, _, _)| m == "02:00:00:23:00:99"));
    let e = fails(&["fdb", "del", "02:00:00:23:00:99", "--switch", &sw], 2);
    assert!(e.contains("not in the FDB"), "{e}");
}

fn two_switches_are_isolated(dp: &str) {
    let mut sb = Sandbox::new();
    let s1 = sb.switch("one", dp, &[]);
    let s2 = sb.switch("two", dp, &[]);
    // Same subnet on purpose: only the switch boundary separates them.
    let a1 = sb.port(&s1, "a1", "10.24.0.1/24", &[]);
    let _a2 = sb.port(&s1, "a2", "10.24.0.2/24", &[]);
    let b1 = sb.port(&s2, "b1", "10.24.0.3/24", &[]);
    let b2 = sb.port(&s2, "b2", "10.24.0.4/24", &[]);
    let before = port_stats(&s2, &b1);
    assert!(ping(&a1, "10.24.0.2", 2));
    assert!(!ping(&a1, "10.24.0.3", 2), "a1 on switch one reached b1 on switch two");
    let after = port_stats(&s2, &b1);
    assert_eq!(u(&before, "tx_packets"), u(&after, "tx_packets"), "switch one's ARP leaked into switch two");
    assert!(ping(&b2, "10.24.0.3", 2));
    let a1_mac = ns_info(&a1)["mac"].as_str().unwrap().to_owned();
    assert!(!fdb(&s2).iter().any(|(m, _, _)| m == &a1_mac), "switch two learned a MAC of switch one");
    assert_eq!(fdb(&s1).len(), 2);
}

#[test]
fn direct_link_connects_two_namespaces() {
    let sb = Sandbox::new();
    let (x, y) = (sb.name("x"), sb.name("y"));
    ok(&["link", &x, &y, "--ip1", "10.25.0.1/24", "--ip2", "10.25.0.2/24"]);
    assert!(ping(&x, "10.25.0.2", 3));
    let rows = json(&["ns", "list"]);
    let kinds: Vec<_> =
        rows.as_array().unwrap().iter().filter(|r| r["namespace"] == x.as_str()).map(|r| r["kind"].clone()).collect();
    assert_eq!(kinds, vec![Value::from("link")]);
    let e = fails(&["link", &x, &y, "--ip1", "10.25.0.1/24", "--ip2", "10.25.0.2/24"], 2);
    assert!(e.contains("already linked"), "{e}");
    ok(&["ns", "del", &x]);
    assert!(!netns_list().contains(&x));
    // y lost its end of the pair with x.
    assert_eq!(exec(&y, &["ip", "link", "show", &format!("veth-{x}")]).code, 1);
    ok(&["ns", "del", &y]);
    assert!(!netns_list().contains(&y));
}

fn datapath_log_streams_while_asked_for(dp: &str) {
    use std::{io::Read as _, process::Stdio};
    let mut sb = Sandbox::new();
    let sw = sb.switch("sw", dp, &[]);
    let a = sb.port(&sw, "a", "10.26.0.1/24", &[]);
    let _b = sb.port(&sw, "b", "10.26.0.2/24", &[]);
    if !is_ebpf(dp) {
        let e = fails(&["logs", "--switch", &sw], 2);
        assert!(e.contains("only tc and xdp have a datapath log"), "{e}");
        return;
    }
    let mut child = logs_reader(&sw, Stdio::piped());
    sleep(Duration::from_millis(700));
    assert!(ping(&a, "10.26.0.2", 3));
    sleep(Duration::from_millis(300));
    // SIGINT, as Ctrl-C: the command turns logging off again and exits cleanly.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(status.success(), "{status}: {out}");
    assert!(out.contains("flooded"), "no flood record: {out}");
    assert!(out.contains("known unicast"), "no unicast record: {out}");
}

fn frames_with_invalid_source_are_dropped_counted_and_not_learned(dp: &str) {
    let mut sb = Sandbox::new();
    let sw = sb.switch("sw", dp, &[]);
    // The valid frame at the end comes from a station behind a's port, not a itself.
    let a = sb.port(&sw, "a", "10.27.0.1/24", &["--no-port-security"]);
    let b = sb.port(&sw, "b", "10.27.0.2/24", &[]);
    let a0 = port_stats(&sw, &a);
    let b0 = port_stats(&sw, &b);
    let payload = "00".repeat(46);
    // EtherType 0x88b5 (local experimental): the frames are not IP, so nothing on the way
    // (br_netfilter with the bridge datapath) parses and drops them for other reasons.
    // Broadcast destination, multicast source; then an all-zero source.
    send_raw(&a, &format!("ffffffffffff01000000000188b5{payload}"));
    send_raw(&a, &format!("ffffffffffff00000000000088b5{payload}"));
    std::thread::sleep(Duration::from_millis(200));
    let a1 = port_stats(&sw, &a);
    let b1 = port_stats(&sw, &b);
    if let (Some(d0), Some(d1)) = (counter(&a0, "dropped"), counter(&a1, "dropped")) {
        assert_eq!(d1 - d0, 2, "{a0} -> {a1}");
    }
    assert_eq!(u(&a1, "rx_packets") - u(&a0, "rx_packets"), 2);
    assert_eq!(u(&b1, "tx_packets"), u(&b0, "tx_packets"), "an invalid frame was forwarded: {b0} -> {b1}");
    // (a and b announced their own addresses when they were made: those are learned.)
    let learned = fdb(&sw);
    assert!(learned.iter().all(|(mac, _, _)| !mac.starts_with("01:") && !mac.starts_with("00:")), "{learned:?}");
    // A valid frame from the same socket path is switched and learned.
    send_raw(&a, &format!("ffffffffffff0200000027aa88b5{payload}"));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(u(&port_stats(&sw, &b), "tx_packets"), u(&b1, "tx_packets") + 1);
    assert!(fdb(&sw).contains(&("02:00:00:00:27:aa".into(), a.clone(), "dynamic".into())));
}

const TCP_SERVER: &str = "
import hashlib, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 5001)); s.listen(1); s.settimeout(20)
c, _ = s.accept(); h = hashlib.sha256(); n = 0
while True:
    d = c.recv(1 << 16)
    if not d: break
    h.update(d); n += len(d)
print(n, h.hexdigest())
";

const TCP_CLIENT: &str = "
import hashlib, socket, sys, time
data = bytes(range(256)) * (1 << 15)  # 8 MiB
for _ in range(50):
    try:
        c = socket.create_connection((sys.argv[1], 5001), timeout=5); break
    except OSError:
        time.sleep(0.1)
c.sendall(data); c.close()
print(len(data), hashlib.sha256(data).hexdigest())
";

const UDP_ECHO: &str = "
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', 5002)); s.settimeout(20)
for _ in range(3):
    d, a = s.recvfrom(65535); s.sendto(d, a)
";

const UDP_CLIENT: &str = "
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
for size in (1, 1400, 8000):
    msg = bytes([size % 251]) * size
    for _ in range(20):
        s.sendto(msg, (sys.argv[1], 5002))
        try:
            d, _ = s.recvfrom(65535); break
        except socket.timeout:
            continue
    assert d == msg, size
print('ok')
";

/// Runs python `script` with `args` inside `ns` in the background.
fn spawn_py(ns: &str, script: &str, args: &[&str]) -> Reaped {
    Reaped::new(
        std::process::Command::new(switch_bin())
            .args(["ns", "exec", ns, "--", "python3", "-c", script])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

fn tcp_and_udp_payloads_arrive_intact(dp: &str) {
    // 8 MiB over TCP (checksummed end to end: on the xdp datapath this only works because the
    // controller turned tx checksum offload off on the namespace ends), then UDP datagrams up
    // to 8000 bytes (fragmented) echoed back.
    let mut sb = Sandbox::new();
    let sw = sb.switch("sw", dp, &[]);
    let a = sb.port(&sw, "a", "10.28.0.1/24", &[]);
    let b = sb.port(&sw, "b", "10.28.0.2/24", &[]);
    let server = spawn_py(&b, TCP_SERVER, &[]);
    let client = exec(&a, &["python3", "-c", TCP_CLIENT, "10.28.0.2"]);
    assert_eq!(client.code, 0, "{client:?}");
    let got = server.take().wait_with_output().unwrap();
    let got = String::from_utf8_lossy(&got.stdout);
    assert_eq!(got.trim(), client.stdout.trim(), "TCP payload differs");

    let echo = spawn_py(&b, UDP_ECHO, &[]);
    let udp = exec(&a, &["python3", "-c", UDP_CLIENT, "10.28.0.2"]);
    let _ = echo.take().wait_with_output();
    assert_eq!(udp.stdout.trim(), "ok", "{udp:?}");
}

fn gateway_connects_the_host_and_the_namespaces(dp: &str) {
    // A subnet per datapath: the matrix runs in parallel and gateways may not overlap.
    let net = match dp {
        "tc" => "10.51.0",
        "xdp" => "10.52.0",
        "userspace" => "10.53.0",
        _ => "10.54.0",
    };
    let gw = format!("{net}.254/24");
    let mut sb = Sandbox::new();
    let sw = sb.switch("sw", dp, &["--gateway", &gw]);
    let a = sb.port(&sw, "a", &format!("{net}.1/24"), &[]);
    let b = sb.port(&sw, "b", &format!("{net}.2/24"), &[]);
    the_host_and_a_namespace_reach_each_other(net, &a);
    // The host's port shows up as "host".
    assert!(fdb(&sw).iter().any(|(_, ns, _)| ns == "host"), "{:?}", fdb(&sw));
    let stats = json(&["stats", "--switch", &sw]);
    assert!(
        stats["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["namespace"] == "host" && r["rx_packets"].as_u64().unwrap() > 0)
    );
    an_address_moved_to_a_new_namespace_is_announced(dp, net, &sb, &sw, [&a, &b]);
    // Addresses off the segment, or the gateway's own, are refused.
    let e = fails(&["ns", "add", &sb.name("c"), "--ip", "10.59.0.1/24", "--switch", &sw], 2);
    assert!(e.contains("segment"), "{e}");
    let e = fails(&["ns", "add", &sb.name("c"), "--ip", &gw, "--switch", &sw], 2);
    assert!(e.contains("gateway address"), "{e}");
    assert_eq!(json(&["up", "--name", &sw, "--datapath", dp, "--gateway", &gw])["created"], false);
    let e = fails(&["up", "--name", &sw, "--gateway", &format!("{net}.253/24")], 2);
    assert!(e.contains("asked for gateway"), "{e}");
    // Another switch may not take an overlapping segment.
    let e = fails(&["up", "--name", &sb.name("other"), "--datapath", dp, "--gateway", &format!("{net}.100/16")], 2);
    assert!(e.contains("overlaps"), "{e}");
    ok(&["down", "--name", &sw]);
    assert_eq!(Snapshot::take(&sb.prefix), Snapshot::take("\u{0}never"), "gateway left behind");
}

/// Host -> namespace `a` (at `net`.1) and `a` -> host, as with a bridge's own address; `a`
/// routes by the gateway, and reaches a TCP server on the host's gateway address.
fn the_host_and_a_namespace_reach_each_other(net: &str, a: &str) {
    let o = std::process::Command::new("ping")
        .args(["-c", "3", "-i", "0.1", "-W", "1", &format!("{net}.1")])
        .output()
        .unwrap();
    assert!(o.status.success(), "host -> {a}: {}", String::from_utf8_lossy(&o.stdout));
    assert!(ping(a, &format!("{net}.254"), 3), "{a} -> host");
    let route = exec(a, &["ip", "route", "show", "default"]).stdout;
    assert!(route.contains(&format!("default via {net}.254 dev eth0")), "{route}");
    // TCP from a namespace to a server on the host's gateway address.
    let server = std::net::TcpListener::bind(format!("{net}.254:0")).unwrap();
    let port = server.local_addr().unwrap().port().to_string();
    let accept = std::thread::spawn(move || {
        let (mut c, peer) = server.accept().unwrap();
        let mut buf = String::new();
        std::io::Read::read_to_string(&mut c, &mut buf).unwrap();
        (peer.ip().to_string(), buf)
    });
    let client = format!(
        "import socket; s = socket.create_connection(('{net}.254', {port})); s.sendall(b'hello from a'); s.close()"
    );
    assert_eq!(exec(a, &["python3", "-c", &client]).code, 0);
    let (peer, got) = accept.join().unwrap();
    assert_eq!((peer.as_str(), got.as_str()), (format!("{net}.1").as_str(), "hello from a"));
}

/// The address of `a` goes to a new namespace with another MAC: the host and `b`, which both
/// hold the old MAC, take the new one from the new port's announcement, at once rather than
/// after seconds of sending to the old one.
fn an_address_moved_to_a_new_namespace_is_announced(dp: &str, net: &str, sb: &Sandbox, sw: &str, [a, b]: [&str; 2]) {
    assert!(ping(b, &format!("{net}.1"), 2), "{b} -> {a}");
    let old_mac = ns_info(a)["mac"].as_str().unwrap().to_owned();
    ok(&["ns", "del", a]);
    let a2 = sb.port(sw, "a2", &format!("{net}.1/24"), &[]);
    let new_mac = ns_info(&a2)["mac"].as_str().unwrap().to_owned();
    assert_ne!(old_mac, new_mac);
    let neighbour = |inside: Option<&str>| {
        let args = ["neigh", "show", &format!("{net}.1")];
        match inside {
            None => host("ip", &args),
            Some(ns) => exec(ns, &[&["ip"][..], &args[..]].concat()).stdout,
        }
    };
    // Not through the Linux bridge: it enables a new port only when the kernel's link watcher
    // reports the veth's carrier, after the namespace's end came up and announced itself.
    let announced = if dp == "bridge" { vec![] } else { vec![None, Some(b)] };
    for who in announced {
        let updated = (0..50).any(|_| {
            sleep(Duration::from_millis(20));
            neighbour(who).contains(&new_mac)
        });
        assert!(updated, "{}: {} (old {old_mac}, new {new_mac})", who.unwrap_or("host"), neighbour(who));
    }
    if dp != "bridge" {
        let o = std::process::Command::new("ping").args(["-c", "1", "-W", "1", &format!("{net}.1")]).output().unwrap();
        assert!(o.status.success(), "host -> {a2} at once: {}", String::from_utf8_lossy(&o.stdout));
    }
}

/// Whether the datapath of `sw` logs now (CFG_F_LOG in its pinned CONFIG).
fn logging_on(sw: &str) -> bool {
    config_flag(sw, switch_common::CFG_F_LOG)
}

#[test]
fn a_killed_logs_is_turned_off_by_the_next_command() {
    use std::process::Stdio;
    let mut sb = Sandbox::new();
    let sw = sb.switch("log", "tc", &[]);
    let _a = sb.port(&sw, "a", "10.27.0.1/24", &[]);
    let spawn = || logs_reader(&sw, Stdio::null());
    let on_within = |want: bool| {
        (0..100).any(|_| {
            sleep(Duration::from_millis(20));
            logging_on(&sw) == want
        })
    };
    assert!(!logging_on(&sw), "logging is off unless asked for");
    // Two readers: one leaving keeps the other's logging on.
    let (mut first, mut second) = (spawn(), spawn());
    let readers = || {
        let state: Value = serde_json::from_str(&std::fs::read_to_string("/run/switch/state.json").unwrap()).unwrap();
        state["switches"][&sw]["log_followers"].as_array().map_or(0, Vec::len)
    };
    assert!(
        (0..200).any(|_| {
            sleep(Duration::from_millis(20));
            readers() == 2
        }),
        "both readers recorded"
    );
    assert!(on_within(true), "switch logs turned logging on");
    unsafe { libc::kill(first.id() as i32, libc::SIGINT) };
    assert!(first.wait().unwrap().success());
    assert!(logging_on(&sw), "the other reader still reads");
    // Killed: nobody turns it off on the way out ...
    second.kill().unwrap();
    let _ = second.wait();
    assert!(logging_on(&sw), "a killed reader cannot clean up");
    // ... until the next command of the switch that changes something.
    ok(&["up", "--switch", &sw]);
    assert!(!logging_on(&sw), "logging left on after its reader was killed");
}

/// `aa:bb:cc:dd:ee:ff` as the 12 hex digits of a frame.
fn mac_hex(mac: &str) -> String {
    mac.replace(':', "")
}

/// An IPv4 address as 8 hex digits.
fn ip_hex(ip: &str) -> String {
    ip.split('.').map(|o| format!("{:02x}", o.parse::<u8>().unwrap())).collect()
}

/// A minimal IPv4/UDP frame (checksums zero: the switch does not care, the receiver drops it).
fn udp_frame(dst_mac: &str, src_mac: &str, src_ip: &str, dst_ip: &str) -> String {
    format!(
        "{}{}0800450000200000400040110000{}{}d431d4310000000000000000",
        mac_hex(dst_mac),
        mac_hex(src_mac),
        ip_hex(src_ip),
        ip_hex(dst_ip)
    )
}

/// A gratuitous ARP reply claiming `ip` for `mac`, broadcast from `src_mac`.
fn arp_claim(src_mac: &str, mac: &str, ip: &str) -> String {
    format!(
        "ffffffffffff{}08060001080006040002{}{}ffffffffffff{}{}",
        mac_hex(src_mac),
        mac_hex(mac),
        ip_hex(ip),
        ip_hex(ip),
        "00".repeat(18)
    )
}

/// Attacks from real namespaces against port security (on by default), on the datapaths
/// that enforce it (tc, xdp, userspace; the Linux bridge is the unprotected baseline): the
/// victim's traffic keeps flowing, the attacker gets none of it, and every dropped frame is
/// counted by reason.
/// c sends IPv4 as a (its own MAC): dropped and counted; a DHCP-style 0.0.0.0 source passes.
fn spoofed_ip_is_dropped_but_dhcp_passes(sw: &str, [b, c]: [&str; 2], ip: &dyn Fn(u8) -> String) {
    let spoofed = |ns: &str, what: &str| u(&port_stats(sw, ns), what);
    let (b_mac, c_mac) = (ns_mac(b), ns_mac(c));
    let before_b = u(&port_stats(sw, b), "tx_packets");
    let spoof = udp_frame(&b_mac, &c_mac, &ip(1), &ip(2));
    let at_b = Sniffer::start(b, &spoof);
    send_raw(c, &spoof);
    sleep(Duration::from_millis(200));
    assert_eq!(spoofed(c, "spoofed_ip"), 1);
    assert_eq!(at_b.count(), 0, "a spoofed packet reached b");
    // The same sniffer sees a frame that is delivered: its 0 above is no blind spot.
    let dhcp = udp_frame("ff:ff:ff:ff:ff:ff", &c_mac, "0.0.0.0", "255.255.255.255");
    let at_b = Sniffer::start(b, &dhcp);
    send_raw(c, &dhcp);
    sleep(Duration::from_millis(200));
    assert_eq!(spoofed(c, "spoofed_ip"), 1, "a 0.0.0.0 source (DHCP) was taken for a spoof");
    assert_eq!(at_b.count(), 1, "the 0.0.0.0 broadcast was not flooded to b");
    assert!(u(&port_stats(sw, b), "tx_packets") > before_b, "the 0.0.0.0 broadcast was not counted");
}

/// `switch logs` of `sw` in the background, its output to `stdout`.
fn logs_reader(sw: &str, stdout: std::process::Stdio) -> Reaped {
    Reaped::new(
        std::process::Command::new(switch_bin())
            .args(["logs", "--switch", sw])
            .stdout(stdout)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn port_security_stops_spoofing(dp: &str, net: u8) {
    let ip = |host: u8| format!("10.{net}.0.{host}");
    let cidr = |host: u8| format!("10.{net}.0.{host}/24");
    let mut sb = Sandbox::new();
    let sw = sb.switch("sec", dp, &["--gateway", &cidr(254)]);
    let a = sb.port(&sw, "a", &cidr(1), &[]);
    let b = sb.port(&sw, "b", &cidr(2), &[]);
    let c = sb.port(&sw, "c", &cidr(3), &[]);
    // A port that legitimately carries other stations (a nested bridge): no port security.
    let d = sb.port(&sw, "d", &cidr(4), &["--no-port-security"]);
    let (a_mac, b_mac, c_mac) = (ns_mac(&a), ns_mac(&b), ns_mac(&c));
    let (gw_mac, _) = gateway(&sw);
    let kinds: Vec<(String, String)> = json(&["ports", "--switch", &sw])
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["owner"].as_str().unwrap().to_owned(), p["security"].as_str().unwrap().to_owned()))
        .collect();
    assert!(kinds.contains(&(a.clone(), "mac+ip".into())) && kinds.contains(&(d.clone(), "off".into())), "{kinds:?}");
    assert!(kinds.contains(&("host".into(), "mac reserved".into())), "{kinds:?}");
    assert!(ping(&b, &ip(1), 2));
    let spoofed = |ns: &str, what: &str| u(&port_stats(&sw, ns), what);
    let to_c = || u(&port_stats(&sw, &c), "tx_packets");

    // c takes a's MAC, then the gateway's: everything it sends is dropped, a and the host
    // keep their traffic, and c receives none of it.
    for stolen in [&a_mac, &gw_mac] {
        assert_eq!(exec(&c, &["ip", "link", "set", "eth0", "address", stolen]).code, 0);
        let before = (spoofed(&c, "spoofed_mac"), to_c());
        assert!(!ping(&c, &ip(2), 2), "c got through with a stolen MAC");
        assert!(ping(&b, &ip(1), 20), "the victim's traffic stopped");
        assert!(ping(&a, &ip(254), 5), "a lost the gateway");
        assert!(spoofed(&c, "spoofed_mac") >= before.0 + 2, "spoofed frames not counted");
        // Broadcast (ARP) may reach c; none of the 20 + 5 unicast replies may.
        assert!(to_c() < before.1 + 10, "c received the victim's traffic: {} -> {}", before.1, to_c());
        assert!(fdb(&sw).contains(&(a_mac.clone(), a.clone(), "dynamic".into())));
    }
    assert_eq!(exec(&c, &["ip", "link", "set", "eth0", "address", &c_mac]).code, 0);
    assert!(ping(&c, &ip(2), 2), "c with its own MAC again");

    spoofed_ip_is_dropped_but_dhcp_passes(&sw, [&b, &c], &ip);

    // ARP poisoning: c claims a's address (with its own MAC, then with a's): dropped, counted,
    // and b still reaches a at a's MAC.
    send_raw(&c, &arp_claim(&c_mac, &c_mac, &ip(1)));
    send_raw(&c, &arp_claim(&c_mac, &a_mac, &ip(1)));
    sleep(Duration::from_millis(200));
    assert_eq!(spoofed(&c, "spoofed_arp"), 2);
    let neigh = exec(&b, &["ip", "neigh", "show", &ip(1)]).stdout;
    assert!(!neigh.contains(&c_mac), "b's ARP cache was poisoned: {neigh}");
    assert!(ping(&b, &ip(1), 2));

    // A port without port security may send other stations' frames, but never a bound MAC:
    // learning does not move a's entry to it, and the frame goes nowhere.
    let before_a = u(&port_stats(&sw, &a), "tx_packets");
    send_raw(&d, &udp_frame(&a_mac, "02:00:00:29:00:44", &ip(44), &ip(1)));
    send_raw(&d, &udp_frame(&b_mac, &a_mac, &ip(1), &ip(2)));
    sleep(Duration::from_millis(200));
    assert_eq!(spoofed(&d, "spoofed_mac"), 1);
    // At least that frame reached a (a neighbour probe of the host or b may come on top when
    // the machine is slow); the station being learned on d says the frame was taken.
    assert!(u(&port_stats(&sw, &a), "tx_packets") > before_a, "d's own station's frame was not switched");
    let table = fdb(&sw);
    assert!(table.contains(&(a_mac.clone(), a.clone(), "dynamic".into())), "a's MAC moved: {table:?}");
    assert!(table.contains(&("02:00:00:29:00:44".into(), d.clone(), "dynamic".into())), "{table:?}");
    assert!(ping(&b, &ip(1), 2));
}

#[test]
fn tc_port_security_stops_spoofing() {
    port_security_stops_spoofing("tc", 29);
}

#[test]
fn xdp_port_security_stops_spoofing() {
    port_security_stops_spoofing("xdp", 37);
}

#[test]
fn userspace_port_security_stops_spoofing() {
    port_security_stops_spoofing("userspace", 38);
}

/// VLAN tags around port security: a port with port security sends no tagged frame at all
/// (one tag or two stacked, 802.1Q, 802.1ad, 0x9100, VID 0 or not). Linux receivers strip a
/// priority tag and take the inner frame, so without this rule a tagged ARP claim poisons a
/// neighbour's entry for the gateway and the host's entry for another namespace. Where the
/// tag is: in the bytes for XDP; in the skb's metadata for tc and in the ring's
/// `tp_vlan_tci` for the userspace engine (the kernel's receive path takes the outer tag out
/// of the bytes before either sees the frame), the inner one of two in the bytes. (A VLAN
/// device in the namespace would put the tag in the metadata from the start; this kernel
/// has no 802.1Q devices.) A port without port security carries tags as before.
fn tagged_frames_do_not_get_around_port_security(dp: &str, net: u8) {
    let ip = |host: u8| format!("10.{net}.0.{host}");
    let cidr = |host: u8| format!("10.{net}.0.{host}/24");
    let mut sb = Sandbox::new();
    let sw = sb.switch("tag", dp, &["--gateway", &cidr(254)]);
    let a = sb.port(&sw, "a", &cidr(1), &[]);
    let b = sb.port(&sw, "b", &cidr(2), &[]);
    let d = sb.port(&sw, "d", &cidr(4), &["--no-port-security"]);
    let (a_mac, b_mac, d_mac) = (ns_mac(&a), ns_mac(&b), ns_mac(&d));
    let (gw_mac, gw_if) = gateway(&sw);
    // b knows the gateway's MAC, the host knows b's; then past the neighbour lock time, in
    // which Linux would ignore a new claim anyway.
    assert!(ping(&b, &ip(254), 2));
    sleep(Duration::from_millis(1100));
    let tags = ["81000000", "81000005", "88a8000081000000", "8100000081000000", "91000000", "88a80000"];
    let claims = [arp_claim(&a_mac, &a_mac, &ip(254)), arp_claim(&a_mac, &a_mac, &ip(2))];
    let tagged_count = || u(&port_stats(&sw, &a), "tagged");
    let before = tagged_count();
    for tag in tags {
        for claim in &claims {
            send_raw(&a, &tagged(claim, tag));
        }
    }
    sleep(Duration::from_millis(300));
    let sent = tags.len() * claims.len();
    let neigh = exec(&b, &["ip", "neigh", "show", &ip(254)]).stdout;
    assert!(neigh.contains(&gw_mac) && !neigh.contains(&a_mac), "b's entry for the gateway was poisoned: {neigh}");
    let neigh = host("ip", &["neigh", "show", &ip(2), "dev", &gw_if]);
    assert!(!neigh.contains(&a_mac), "the host's entry for b was poisoned: {neigh}");
    assert!(ping(&b, &ip(254), 2), "b lost the gateway");
    assert!(tagged_count() >= before + sent as u64, "tagged frames counted: {} of {sent}", tagged_count() - before);

    // Without port security, tags are carried: d's tagged frame to b is switched, not dropped.
    let to_b = u(&port_stats(&sw, &b), "tx_packets");
    send_raw(&d, &tagged(&udp_frame(&b_mac, &d_mac, &ip(4), &ip(2)), "81000007"));
    sleep(Duration::from_millis(200));
    assert_eq!(u(&port_stats(&sw, &d), "tagged"), 0, "a port without port security had a tag dropped");
    assert!(u(&port_stats(&sw, &b), "tx_packets") > to_b, "d's tagged frame was not switched");
}

/// The MAC of switch `sw`'s gateway and the host interface that has it (the gateway's host
/// end, where the host's neighbour entries for the segment are).
fn gateway(sw: &str) -> (String, String) {
    let ports = json(&["ports", "--switch", sw]);
    let gw = ports.as_array().unwrap().iter().find(|p| p["kind"] == "gateway").expect("a gateway port").clone();
    let mac = gw["mac"].as_str().unwrap().to_owned();
    let links = host("ip", &["-o", "link", "show"]);
    let line = links.lines().find(|l| l.contains(&mac)).unwrap_or_else(|| panic!("no interface with {mac}"));
    let name = line.split(':').nth(1).unwrap().trim().split('@').next().unwrap().to_owned();
    (mac, name)
}

#[test]
fn tc_tagged_frames_do_not_get_around_port_security() {
    tagged_frames_do_not_get_around_port_security("tc", 200);
}

#[test]
fn xdp_tagged_frames_do_not_get_around_port_security() {
    tagged_frames_do_not_get_around_port_security("xdp", 201);
}

#[test]
fn userspace_tagged_frames_do_not_get_around_port_security() {
    tagged_frames_do_not_get_around_port_security("userspace", 202);
}

/// Sends `count` broadcast frames from `ns`, each from its own made-up source MAC
/// (02:00:00:NN:xx:xx): a MAC flood.
fn mac_flood(ns: &str, net: u8, count: u16) {
    let script = format!(
        "import socket; s=socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind(('eth0', 0))\n\
         for i in range({count}):\n    \
         s.send(bytes.fromhex('ffffffffffff020000{net:02x}%04x' % i + '88b5' + '00' * 46))"
    );
    let r = exec(ns, &["python3", "-c", &script]);
    assert_eq!(r.code, 0, "flooding MACs: {r:?}");
}

/// A MAC flood from a port without port security: the port learns no more than its limit
/// (`up --max-learned`), the rest is dropped and counted, and the other stations' and the
/// static entries stay where they are.
fn mac_flood_is_limited(dp: &str, net: u8) {
    let cidr = |host: u8| format!("10.{net}.0.{host}/24");
    let mut sb = Sandbox::new();
    let sw = sb.switch("lim", dp, &["--max-learned", "20"]);
    let a = sb.port(&sw, "a", &cidr(1), &[]);
    let b = sb.port(&sw, "b", &cidr(2), &[]);
    let d = sb.port(&sw, "d", &cidr(4), &["--no-port-security"]);
    let static_mac = "02:00:00:aa:bb:cc";
    ok(&["fdb", "add", static_mac, "--ns", &b]);
    assert!(ping(&a, &format!("10.{net}.0.2"), 2));
    mac_flood(&d, net, 200);
    sleep(Duration::from_millis(300));
    let table = fdb(&sw);
    let learned_on_d = table.iter().filter(|(_, ns, _)| *ns == d).count();
    assert!((1..=20).contains(&learned_on_d), "{learned_on_d} stations learned on d, limit 20");
    let stats = port_stats(&sw, &d);
    // d's own MAC may have been one of its 20 before the flood (an IPv6 or ARP frame).
    assert!(u(&stats, "mac_limit") >= 180, "{stats}");
    assert!(u(&stats, "dropped") >= u(&stats, "mac_limit"), "{stats}");
    assert!(table.contains(&(static_mac.into(), b.clone(), "static".into())), "{table:?}");
    let a_mac = ns_info(&a)["mac"].as_str().unwrap().to_owned();
    assert!(table.iter().any(|(m, ns, _)| *m == a_mac && *ns == a), "{table:?}");
    assert!(ping(&a, &format!("10.{net}.0.2"), 2), "a and b after the flood");
}

#[test]
fn tc_mac_flood_is_limited() {
    mac_flood_is_limited("tc", 113);
}

#[test]
fn xdp_mac_flood_is_limited() {
    mac_flood_is_limited("xdp", 114);
}

#[test]
fn userspace_mac_flood_is_limited() {
    mac_flood_is_limited("userspace", 115);
}
