//! What only the userspace datapath can show: its exact flood accounting, and how its engine
//! treats ports (one port per interface, adding a port again changes nothing, removing one
//! forgets its stations). The behaviour every datapath shares (learning, flooding, known
//! unicast, ageing, moves, static entries, removal while traffic flows) is tested once per
//! datapath in switching.rs, cli.rs and soak.rs.
//!
//! Port handling is checked on the switch process's control socket (JSON lines on
//! `/run/switch/NAME.sock`, the protocol the CLI itself speaks): the CLI never asks for what
//! these tests ask for, and `switch fdb` hides entries of ports it no longer knows, so only the
//! engine's own answer shows that a removed port's stations are gone.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    time::Duration,
};

use serde_json::json;
use switch_tests::*;

fn u(v: &Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or_else(|| panic!("{field} missing in {v}"))
}

/// Sends one request to the process of userspace switch `sw` and returns its answer.
fn control(sw: &str, request: &Value) -> Value {
    let path = format!("/run/switch/{sw}.sock");
    let mut stream = UnixStream::connect(&path).unwrap_or_else(|e| panic!("connecting to {path}: {e}"));
    // A switch that never answers fails the test instead of hanging it.
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    writeln!(stream, "{request}").unwrap_or_else(|e| panic!("sending {request} to {path}: {e}"));
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap_or_else(|e| panic!("reading the answer to {request}: {e}"));
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("answer to {request} is not JSON ({e}): {line:?}"))
}

/// The engine's counters of port `slot`.
fn slot_stats(sw: &str, slot: u64) -> Value {
    let answer = control(sw, &json!({"op": "stats", "slot": slot}));
    assert_eq!(answer["status"], "stats", "{answer}");
    answer["stats"].clone()
}

/// Interface indexes of the engine's FDB entries, unfiltered.
fn fdb_ifindexes(sw: &str) -> Vec<u64> {
    let answer = control(sw, &json!({"op": "fdb"}));
    assert_eq!(answer["status"], "fdb", "{answer}");
    answer["entries"].as_array().unwrap().iter().map(|e| u(e, "ifindex")).collect()
}

fn host_ifindex(ns: &str) -> (String, u64) {
    let host_if = ns_info(ns)["host_interface"].as_str().unwrap().to_owned();
    let index = std::fs::read_to_string(format!("/sys/class/net/{host_if}/ifindex")).unwrap();
    (host_if, index.trim().parse().unwrap())
}

#[test]
fn userspace_floods_reach_every_other_port_exactly_once_and_unicast_stays_away() {
    // The namespaces are quiet (the controller turns IPv6 off on both ends of each port), so
    // every frame a and b send is one of the ping's: ARP, then echo requests and replies.
    let mut sb = Sandbox::new();
    let sw = sb.switch("sw", "userspace", &[]);
    let a = sb.port(&sw, "a", "10.71.0.1/24", &[]);
    let b = sb.port(&sw, "b", "10.71.0.2/24", &[]);
    let c = sb.port(&sw, "c", "10.71.0.3/24", &[]);
    // c is read first: a flood is counted on its ingress port before it is sent, so every copy
    // c has counted by then is already in a's or b's count.
    let snapshot = || {
        let c = port_stats(&sw, &c);
        (port_stats(&sw, &a), port_stats(&sw, &b), c)
    };
    let (a0, b0, c0) = snapshot();
    assert!(ping(&a, "10.71.0.2", 3), "a -> b");
    let (a1, b1, c1) = snapshot();
    let delta = |before: &Value, after: &Value, field: &str| u(after, field) - u(before, field);

    // ARP request and three echo requests in at a; the same four out to b.
    assert!(delta(&a0, &a1, "rx_packets") >= 4, "{a0} -> {a1}");
    assert!(delta(&b0, &b1, "tx_packets") >= 4, "{b0} -> {b1}");
    assert!(delta(&a0, &a1, "flooded") >= 1, "the first ARP request is flooded: {a0} -> {a1}");
    // c gets one copy of every frame a or b flooded, and none of their unicast.
    let floods = delta(&a0, &a1, "flooded") + delta(&b0, &b1, "flooded");
    let to_c = delta(&c0, &c1, "tx_packets") + delta(&c0, &c1, "tx_errors");
    assert_eq!(to_c, floods, "a {a0} -> {a1}, b {b0} -> {b1}, c {c0} -> {c1}");
}

#[test]
fn userspace_engine_takes_an_interface_once_readds_idempotently_and_forgets_removed_ports() {
    let mut sb = Sandbox::new();
    let sw = sb.switch("sw", "userspace", &[]);
    let a = sb.port(&sw, "a", "10.72.0.1/24", &[]);
    let b = sb.port(&sw, "b", "10.72.0.2/24", &[]);
    assert!(ping(&a, "10.72.0.2", 3));
    let (a_if, a_index) = host_ifindex(&a);
    let (_, b_index) = host_ifindex(&b);
    let learned = fdb_ifindexes(&sw);
    assert!(learned.contains(&a_index) && learned.contains(&b_index), "{learned:?}");

    // One interface, one port: a's interface is refused in a free slot, and the answer names
    // the port that has it.
    let add = |slot: u64| control(&sw, &json!({"op": "add_port", "slot": slot, "ifindex": a_index, "ifname": a_if}));
    let refused = add(255);
    assert_eq!(refused["status"], "error", "{refused}");
    let message = refused["message"].as_str().unwrap();
    let slot: u64 = message
        .split_once("is already port ")
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no port named in {message:?}"));
    // That slot really is a's port: the CLI's counters of a are the engine's of that slot.
    let before = slot_stats(&sw, slot);
    let cli = port_stats(&sw, &a);
    assert_eq!((u(&before, "rx_packets"), u(&before, "tx_packets")), (u(&cli, "rx_packets"), u(&cli, "tx_packets")));

    // Adding the same interface to its own slot again is a no-op: same socket, counters and
    // stations kept (a replaced port would start from zero and lose its FDB entries).
    assert_eq!(add(slot), json!({"status": "ok"}));
    assert!(fdb_ifindexes(&sw).contains(&a_index), "re-adding the port forgot its stations");
    assert!(ping(&a, "10.72.0.2", 3), "a -> b after the refused and the repeated add");
    let after = slot_stats(&sw, slot);
    assert!(u(&after, "rx_packets") >= u(&before, "rx_packets") + 3, "counters restarted: {before} -> {after}");

    // Removing the port (what `ns del` asks the engine for) forgets its stations at once, not
    // when they age out, and its slot's counters with it; the other port's stay.
    ok(&["ns", "del", &a]);
    let left = fdb_ifindexes(&sw);
    assert!(!left.contains(&a_index), "stations of the removed port are still in the FDB: {left:?}");
    assert!(left.contains(&b_index), "{left:?}");
    let gone = slot_stats(&sw, slot);
    assert!(gone.as_object().unwrap().values().all(|v| v == 0), "counters of the removed port: {gone}");
}

#[test]
fn frames_others_send_out_of_a_port_are_not_switched() {
    // The engine's sockets see a port's interface in both directions. What leaves it towards
    // its namespace was sent by someone else (here the host, on a raw socket) or by the
    // engine itself; neither is a frame the port received, and switching it would send the
    // host's frames to every other port. (A fanout group of sockets needs its own flag for
    // this: the sockets' PACKET_IGNORE_OUTGOING does not apply to the group's hook.)
    let mut sb = Sandbox::new();
    let sw = sb.switch("sw", "userspace", &[]);
    let a = sb.port(&sw, "a", "10.74.0.1/24", &[]);
    let b = sb.port(&sw, "b", "10.74.0.2/24", &[]);
    let (a_if, _) = host_ifindex(&a);
    let (a0, b0) = (port_stats(&sw, &a), port_stats(&sw, &b));
    let script = "
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
frame = b'\\xff' * 6 + bytes([2, 0, 0, 0, 0x74, 1]) + b'\\x08\\x06' + bytes(46)
for _ in range(20):
    s.send(frame)
";
    let out = std::process::Command::new("python3").args(["-c", script, &a_if]).output().unwrap();
    assert!(out.status.success(), "sending out of {a_if}: {}", String::from_utf8_lossy(&out.stderr));
    // Give a switched copy time to show up in the counters.
    std::thread::sleep(Duration::from_millis(300));
    let (a1, b1) = (port_stats(&sw, &a), port_stats(&sw, &b));
    assert_eq!(u(&a1, "rx_packets"), u(&a0, "rx_packets"), "a received the host's frames: {a0} -> {a1}");
    assert_eq!(u(&b1, "tx_packets"), u(&b0, "tx_packets"), "b was sent the host's frames: {b0} -> {b1}");
    assert!(ping(&a, "10.74.0.2", 2), "a -> b");
}

#[test]
fn a_port_that_could_not_send_sends_again_once_its_interface_is_back() {
    // While b's host interface is down, the engine's sends to b's port fail: the kernel leaves
    // them in the port's transmit ring. The engine must take those slots back in step with
    // the kernel, which stops at the first slot it could not send: a ring left out of step
    // would never send to b again, though b's interface is back.
    let mut sb = Sandbox::new();
    let sw = sb.switch("sw", "userspace", &[]);
    let a = sb.port(&sw, "a", "10.75.0.1/24", &[]);
    let b = sb.port(&sw, "b", "10.75.0.2/24", &[]);
    let (b_if, _) = host_ifindex(&b);
    assert!(ping(&a, "10.75.0.2", 1), "a -> b before");
    let b0 = port_stats(&sw, &b);
    host("ip", &["link", "set", &b_if, "down"]);
    // a knows b's MAC by now: its echo requests are unicast to b's port, and cannot leave it.
    assert!(!ping(&a, "10.75.0.2", 2), "a -> b while b's port is down");
    let b1 = port_stats(&sw, &b);
    host("ip", &["link", "set", &b_if, "up"]);
    assert!(u(&b1, "tx_errors") > u(&b0, "tx_errors"), "sends to a port that is down fail: {b0} -> {b1}");
    assert!(within(|| ping(&a, "10.75.0.2", 1)), "a -> b once b's port is up again");
    // Many more frames than a transmit ring has slots (256 per lane): the rings go round and
    // keep sending. A loaded machine may lose a few, never most.
    let run = exec(&a, &["ping", "-q", "-f", "-c", "3000", "10.75.0.2"]);
    let received: u32 = run
        .stdout
        .split(", ")
        .find_map(|part| part.strip_suffix(" received")?.parse().ok())
        .unwrap_or_else(|| panic!("no ping summary: {} {}", run.stdout, run.stderr));
    assert!(received >= 2900, "flood ping a -> b: {}", run.stdout);
}

/// CPU time (in clock ticks) the lane threads of the userspace switch `sw` have used so far.
fn lane_cpu_ticks(sw: &str) -> u64 {
    let pid = switch_pid(sw).expect("the switch's process");
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    let mut ticks = 0;
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("switch-lane") {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the command name (which ends with the last ')'): state is field 3,
        // utime and stime are fields 14 and 15.
        let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("").split_whitespace().collect();
        ticks += fields.get(11).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        ticks += fields.get(12).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    }
    ticks
}

#[test]
fn busy_polling_lanes_spin_after_a_frame_then_sleep_again() {
    // With --busy-poll, a lane keeps looking at its rings after a frame instead of sleeping
    // (the next one is switched without a wake-up), and sleeps once none came for that long.
    // Shown by the lanes' CPU time: a second of polling after the ping burns a good part of a
    // CPU second; the seconds after it, quiet, burn next to nothing.
    let mut sb = Sandbox::new();
    let sw = sb.switch("bp", "userspace", &["--busy-poll", "1000000"]);
    let a = sb.port(&sw, "a", "10.76.0.1/24", &[]);
    let _b = sb.port(&sw, "b", "10.76.0.2/24", &[]);
    let up = json(&["up", "--name", &sw, "--busy-poll", "1000000"]);
    assert_eq!(up["created"], false, "the same settings again: {up}");
    assert_eq!(up["busy_poll_us"], 1_000_000, "{up}");
    // Quiet first: whatever polling bringing the ports up started is over.
    std::thread::sleep(Duration::from_millis(1500));
    let quiet = lane_cpu_ticks(&sw);
    std::thread::sleep(Duration::from_secs(1));
    let idle = lane_cpu_ticks(&sw) - quiet;
    assert!(ping(&a, "10.76.0.2", 1), "a -> b through a busy-polling switch");
    let start = lane_cpu_ticks(&sw);
    std::thread::sleep(Duration::from_millis(900));
    let polling = lane_cpu_ticks(&sw) - start;
    std::thread::sleep(Duration::from_millis(1500));
    let after = lane_cpu_ticks(&sw);
    std::thread::sleep(Duration::from_secs(1));
    let idle_again = lane_cpu_ticks(&sw) - after;
    // Clock ticks are 10 ms: polling for 0.9 s on at least one lane is tens of ticks even on
    // a loaded machine; sleeping lanes use none or one.
    assert!(polling >= 10, "lanes polled after the ping: {polling} ticks in 0.9 s");
    assert!(idle <= 3 && idle_again <= 3, "lanes slept when quiet: {idle} and {idle_again} ticks in 1 s");
    assert!(ping(&a, "10.76.0.2", 2), "a -> b again");
}

/// Receives numbered datagrams on UDP port 9000 until "end" (or 5 s of silence); prints how
/// many came and how many came after a higher number (out of order).
const ORDER_RECEIVER: &str = r#"
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.bind(("0.0.0.0", 9000)); s.settimeout(5); print("ready", flush=True)
got = late = 0; top = -1
try:
    while True:
        d = s.recv(64)
        if d == b"end": break
        n = struct.unpack("!I", d[:4])[0]; got += 1
        if n < top: late += 1
        top = max(top, n)
except socket.timeout:
    pass
print(got, late, flush=True)
"#;

/// Sends bursts of numbered datagrams to ADDR:9000, each burst from the next CPU in turn
/// (the sending thread moved with sched_setaffinity), then "end".
const ORDER_SENDER: &str = r#"
import os, socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
cpus = sorted(os.sched_getaffinity(0)); n = 0
for burst in range(40):
    os.sched_setaffinity(0, {cpus[burst % len(cpus)]})
    for _ in range(100):
        s.sendto(struct.pack("!I", n) + b"x" * 60, (sys.argv[1], 9000)); n += 1
time.sleep(0.5); s.sendto(b"end", (sys.argv[1], 9000))
"#;

#[test]
fn a_flow_stays_in_order_when_its_sender_changes_cpu() {
    // A TCP sender transmits from whichever CPU it runs on or takes an ACK on. The engine
    // must not let a flow's frames overtake each other on the way through its lanes (each
    // lane a thread of its own): reordered segments look lost to TCP, which retransmits them
    // and backs off. Bursts from alternating CPUs would land on different lanes if lanes were
    // chosen by the sending CPU.
    let mut sb = Sandbox::new();
    let sw = sb.switch("sw", "userspace", &[]);
    let a = sb.port(&sw, "a", "10.76.0.1/24", &[]);
    let b = sb.port(&sw, "b", "10.76.0.2/24", &[]);
    assert!(ping(&a, "10.76.0.2", 1));
    // The lanes are steered by the engine's program (a socket filter), not by the kernel's flow
    // hash it falls back to, which would keep the order too.
    let pid = switch_pid(&sw).expect("the switch's process");
    // By program id and type: the process may hold one program through several descriptors.
    let field = |info: &str, name: &str| info.lines().find_map(|l| Some(l.strip_prefix(name)?.trim().to_owned()));
    let programs: std::collections::BTreeSet<(String, String)> = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|info| Some((field(&info, "prog_type:")?, field(&info, "prog_id:")?)))
        .collect();
    let types: Vec<&str> = programs.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types, ["1"], "one BPF_PROG_TYPE_SOCKET_FILTER program in the switch's process");
    let mut receiver = spawn_until(
        std::process::Command::new(switch_bin()).args(["ns", "exec", &b, "--", "python3", "-c", ORDER_RECEIVER]),
        "ready",
    );
    let sent = exec(&a, &["python3", "-c", ORDER_SENDER, "10.76.0.2"]);
    assert_eq!(sent.code, 0, "{sent:?}");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(receiver.stdout.take().unwrap()), &mut line).unwrap();
    let _ = receiver.wait();
    let counts: Vec<u32> = line.split_whitespace().map(|n| n.parse().unwrap()).collect();
    let [got, late] = counts[..] else { panic!("receiver said {line:?}") };
    assert!(got >= 3600, "most of the 4000 datagrams arrive: {got}");
    assert_eq!(late, 0, "{late} of {got} datagrams overtaken by later ones of their flow");
}
