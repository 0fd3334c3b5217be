//! `switch monitor` on real namespaces: drops with their reason, learned stations, moves and
//! port changes show up as JSON lines, and the datapath's events are off again after the
//! monitor leaves (Ctrl-C) or is killed (the next command turns them off).
use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread::sleep,
    time::Duration,
};

use switch_tests::{
    frames::{experimental_frame, send_raw, udp_frame},
    *,
};

/// Whether the datapath of `sw` emits events now (CFG_F_EVENTS in its pinned CONFIG).
fn events_on(sw: &str) -> bool {
    config_flag(sw, switch_common::CFG_F_EVENTS)
}

/// A running `switch --json monitor`, its lines collected by a thread. Dropping it stops the
/// process (SIGINT, then SIGKILL if it does not go), so a failing test leaves none behind.
struct Monitor {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
}

impl Monitor {
    /// Starts a monitor of `sw` with extra arguments and waits until events are on.
    fn start(sw: &str, extra: &[&str]) -> Self {
        let mut child = Command::new(switch_bin())
            .args(["--json", "monitor", "--switch", sw])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(vec![]));
        let (out, sink) = (child.stdout.take().unwrap(), lines.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                sink.lock().unwrap().push(v);
            }
        });
        let m = Self { child, lines };
        assert!(within(|| events_on(sw)), "switch monitor did not turn events on");
        m
    }

    /// Waits for an event matching `f`; returns it.
    fn expect(&self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let mut found = None;
        within(|| {
            found = self.lines.lock().unwrap().iter().find(|v| f(v)).cloned();
            found.is_some()
        });
        found.unwrap_or_else(|| panic!("no {what} event in {:#?}", self.lines.lock().unwrap()))
    }

    fn events(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }

    /// The kinds of the events shown with namespace `ns` so far, in order.
    fn kinds_of(&self, ns: &str) -> Vec<String> {
        let events = self.events();
        events.iter().filter(|v| v["namespace"] == ns).map(|v| v["kind"].as_str().unwrap().to_owned()).collect()
    }

    /// Ctrl-C; returns whether the process exited successfully.
    fn interrupt(mut self) -> bool {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.child.wait().unwrap().success()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        interrupt_and_reap(&mut self.child);
    }
}

fn drops_are_shown_with_their_reason(dp: &str, net: u8) {
    let mut sb = Sandbox::new();
    let sw = sb.switch("mon", dp, &[]);
    let a = sb.port(&sw, "a", &format!("10.{net}.0.1/24"), &[]);
    let _b = sb.port(&sw, "b", &format!("10.{net}.0.2/24"), &[]);
    let a_mac = ns_info(&a)["mac"].as_str().unwrap().to_owned();
    let m = Monitor::start(&sw, &["--type", "drop"]);

    // A group (multicast) source MAC: invalid as a source.
    send_raw(&a, &experimental_frame("ff:ff:ff:ff:ff:ff", "01:00:00:00:00:01"));
    let e = m.expect("invalid-source drop", |v| v["reason"] == "invalid-source");
    assert_eq!((e["kind"].as_str(), e["namespace"].as_str()), (Some("drop"), Some(a.as_str())), "{e}");
    assert_eq!(e["frame"]["src_mac"], "01:00:00:00:00:01", "{e}");
    assert_eq!(e["frame"]["ethertype"], "0x88b5", "{e}");
    assert_eq!(e["frame"]["len"], 60, "{e}");

    // a's own MAC but another station's address: port security drops it.
    send_raw(&a, &udp_frame("ff:ff:ff:ff:ff:ff", &a_mac, [10, net, 0, 99], [10, net, 0, 2]));
    let e = m.expect("spoofed-ip drop", |v| v["reason"] == "spoofed-ip");
    assert_eq!(e["namespace"], a.as_str(), "{e}");
    let f = &e["frame"];
    assert_eq!(
        (f["src_ip"].as_str(), f["dst_ip"].as_str()),
        (Some(&*format!("10.{net}.0.99")), Some(&*format!("10.{net}.0.2")))
    );
    assert_eq!((f["proto"].as_u64(), f["src_port"].as_u64(), f["dst_port"].as_u64()), (Some(17), Some(5000), Some(53)));

    // Another port's MAC as the source.
    send_raw(&a, &experimental_frame("ff:ff:ff:ff:ff:ff", "02:00:00:00:00:77"));
    m.expect("spoofed-mac drop", |v| v["reason"] == "spoofed-mac" && v["frame"]["src_mac"] == "02:00:00:00:00:77");

    // --type drop: the ARP of the pings learned stations, and none of that was shown.
    assert!(ping(&a, &format!("10.{net}.0.2"), 1));
    sleep(Duration::from_millis(300));
    let events = m.events();
    assert!(events.iter().all(|v| v["kind"] == "drop"), "{events:#?}");
    assert!(m.interrupt(), "monitor did not exit cleanly on SIGINT");
    assert!(!events_on(&sw), "events left on after Ctrl-C");
}

fn learn_move_and_port_events(dp: &str, net: u8) {
    let mut sb = Sandbox::new();
    let sw = sb.switch("mon", dp, &[]);
    // A station moving between ports: ports without port security (as in switching.rs).
    let a = sb.port(&sw, "a", &format!("10.{net}.0.1/24"), &["--no-port-security"]);
    let c = sb.port(&sw, "c", &format!("10.{net}.0.3/24"), &["--no-port-security"]);
    let m = Monitor::start(&sw, &["--type", "learn,move,port"]);
    let station = "02:00:00:00:5e:01";

    send_raw(&a, &experimental_frame("ff:ff:ff:ff:ff:ff", station));
    let e = m.expect("learn", |v| v["kind"] == "learn" && v["frame"]["src_mac"] == station);
    assert_eq!(e["namespace"], a.as_str(), "{e}");
    assert!(e["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{e}");

    send_raw(&c, &experimental_frame("ff:ff:ff:ff:ff:ff", station));
    let e = m.expect("move", |v| v["kind"] == "move" && v["frame"]["src_mac"] == station);
    assert_eq!((e["namespace"].as_str(), e["from"]["namespace"].as_str()), (Some(c.as_str()), Some(a.as_str())));
    assert!(fdb(&sw).contains(&(station.into(), c.clone(), "dynamic".into())));

    // Ports come and go through the controller: shown from its records. A frame from a port
    // added a moment ago (before the monitor's next look at the records) is still named.
    let d = sb.port(&sw, "d", &format!("10.{net}.0.4/24"), &["--no-port-security"]);
    send_raw(&d, &experimental_frame("ff:ff:ff:ff:ff:ff", station));
    let e = m.expect("move to the new port", |v| v["kind"] == "move" && v["namespace"] == d.as_str());
    assert_eq!(e["from"]["namespace"], c.as_str(), "{e}");
    m.expect("port added", |v| v["kind"] == "port" && v["reason"] == "added" && v["namespace"] == d.as_str());
    let of_d = m.kinds_of(&d);
    assert_eq!(of_d.first().map(String::as_str), Some("port"), "the port's event comes before its frames': {of_d:?}");
    assert!(of_d.iter().any(|k| k == "move"), "{of_d:?}");

    // Known stations are not events: a second frame from the same port is not learned again.
    send_raw(&d, &experimental_frame("ff:ff:ff:ff:ff:ff", station));
    sleep(Duration::from_millis(300));
    let of_station = m.events().iter().filter(|v| v["frame"]["src_mac"] == station).count();
    assert_eq!(of_station, 3, "a learn and two moves: {:#?}", m.events());

    ok(&["ns", "del", &d]);
    m.expect("port removed", |v| v["kind"] == "port" && v["reason"] == "removed" && v["namespace"] == d.as_str());
}

/// A port's first frame, its namespace announcing itself as it comes up, reaches the datapath
/// before the port's record is ready: it is still shown with the namespace (after the port's
/// `added`), not as a bare interface index.
fn a_new_port_s_announcement_is_named_with_its_namespace(dp: &str, net: u8) {
    let mut sb = Sandbox::new();
    let sw = sb.switch("mon", dp, &[]);
    let m = Monitor::start(&sw, &["--type", "learn,port"]);
    let mac = format!("02:00:00:{net:02x}:00:04");
    let d = sb.port(&sw, "d", &format!("10.{net}.0.4/24"), &["--mac", &mac]);
    let e = m.expect("learn of the announcement", |v| v["kind"] == "learn" && v["frame"]["src_mac"] == mac.as_str());
    assert_eq!(e["namespace"], d.as_str(), "{e}");
    assert_eq!(e["interface"], ns_info(&d)["host_interface"], "{e}");
    let of_d = m.kinds_of(&d);
    assert_eq!(of_d[..2], ["port", "learn"], "the port's event comes before its frames'");
}

fn killed_monitor_is_turned_off_by_the_next_command(dp: &str) {
    let mut sb = Sandbox::new();
    let sw = sb.switch("mon", dp, &[]);
    let _a = sb.port(&sw, "a", "10.99.0.1/24", &[]);
    assert!(!events_on(&sw), "events are off unless someone listens");
    let monitors = || {
        let state: Value = serde_json::from_str(&std::fs::read_to_string("/run/switch/state.json").unwrap()).unwrap();
        state["switches"][&sw]["monitors"].as_array().map_or(0, Vec::len)
    };
    // Two monitors: one leaving keeps the other's events on.
    let first = Monitor::start(&sw, &[]);
    let mut second = Monitor::start(&sw, &[]);
    // Events were on already: the second is ready once it is recorded.
    assert!(within(|| monitors() == 2), "both monitors recorded");
    assert!(first.interrupt());
    assert!(events_on(&sw), "the other monitor still listens");
    // kill -9: nobody turns events off on the way out ...
    second.child.kill().unwrap();
    let _ = second.child.wait();
    assert!(events_on(&sw), "a killed monitor cannot clean up");
    // ... until the next command of the switch that changes something.
    ok(&["up", "--switch", &sw]);
    assert!(!events_on(&sw), "events left on after their monitor was killed");
    assert_eq!(monitors(), 0);
}

#[test]
fn tc_drops_are_shown_with_their_reason() {
    drops_are_shown_with_their_reason("tc", 91);
}

#[test]
fn xdp_drops_are_shown_with_their_reason() {
    drops_are_shown_with_their_reason("xdp", 92);
}

#[test]
fn tc_learn_move_and_port_events() {
    learn_move_and_port_events("tc", 93);
}

#[test]
fn xdp_learn_move_and_port_events() {
    learn_move_and_port_events("xdp", 94);
}

#[test]
fn tc_a_new_port_s_announcement_is_named_with_its_namespace() {
    a_new_port_s_announcement_is_named_with_its_namespace("tc", 86);
}

#[test]
fn xdp_a_new_port_s_announcement_is_named_with_its_namespace() {
    a_new_port_s_announcement_is_named_with_its_namespace("xdp", 87);
}

#[test]
fn tc_killed_monitor_is_turned_off_by_the_next_command() {
    killed_monitor_is_turned_off_by_the_next_command("tc");
}

#[test]
fn xdp_killed_monitor_is_turned_off_by_the_next_command() {
    killed_monitor_is_turned_off_by_the_next_command("xdp");
}

#[test]
fn userspace_and_bridge_refuse_with_one_line() {
    refused_by_bridge_and_userspace(&mut Sandbox::new(), &["monitor"], "datapath events");
}

#[test]
fn bad_input_changes_nothing() {
    let mut sb = Sandbox::new();
    let sw = sb.switch("mon", "tc", &[]);
    let e = fails(&["monitor", "--switch", &sw, "--ns", "nosuchns"], 2);
    assert!(e.contains("no port on switch"), "{e}");
    let r = switch(&["monitor", "--switch", &sw, "--type", "drop,bogus"]);
    assert!(r.code == 2 && r.stderr.contains("invalid value 'bogus'"), "{r:?}");
    assert!(!events_on(&sw));
}

/// A flood of bad frames from one CPU: at most the rate limit's worth of events per window
/// gets through, and the rest is counted and reported on the next event of that CPU.
#[test]
fn a_drop_flood_is_rate_limited_and_counted() {
    let flood: u64 = 600;
    let mut sb = Sandbox::new();
    let sw = sb.switch("mon", "tc", &[]);
    let a = sb.port(&sw, "a", "10.95.0.1/24", &[]);
    let m = Monitor::start(&sw, &[]);
    // Pinned to one CPU, so one CPU's window counts them all.
    let frame = experimental_frame("ff:ff:ff:ff:ff:ff", "01:00:00:00:95:01");
    let script = format!(
        "import socket; s=socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind(('eth0', 0)); f=bytes.fromhex('{frame}')\nfor _ in range({flood}): s.send(f)"
    );
    let r = exec(&a, &["taskset", "-c", "0", "python3", "-c", &script]);
    assert_eq!(r.code, 0, "{r:?}");
    // A window later, one more from the same CPU carries the count of what was left out.
    sleep(Duration::from_millis(1200));
    let one = format!(
        "import socket; s=socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind(('eth0', 0)); s.send(bytes.fromhex('{frame}'))"
    );
    assert_eq!(exec(&a, &["taskset", "-c", "0", "python3", "-c", &one]).code, 0);
    // Every frame sent, the last one included, is either shown or counted.
    let sent = flood + 1;
    let flood_events = || m.events().iter().filter(|v| v["frame"]["src_mac"] == "01:00:00:00:95:01").count();
    assert!(within(|| flood_events() > 0), "no flood event at all");
    let suppressed = || m.events().iter().map(|v| v["suppressed"].as_u64().unwrap()).sum::<u64>();
    assert!(
        within(|| flood_events() as u64 + suppressed() >= sent),
        "{} shown, {} counted",
        flood_events(),
        suppressed()
    );
    // The flood spans at most two windows of 200 events each.
    assert!(flood_events() <= 2 * 200 + 1, "{} events of {flood} frames got through", flood_events());
    assert!(suppressed() >= sent - 401, "{}", suppressed());
}

/// Connections NAT creates: one from outside to a forwarded port and one masqueraded from
/// the segment, run through the pinned uplink programs (BPF_PROG_TEST_RUN), show as `nat`
/// events with the packet as it came and what it is translated to.
#[test]
fn nat_connections_are_shown() {
    use switch_tests::{
        bpf,
        ipv4::{SYN, TCP, UDP, packet},
        nat::NatBed,
    };
    let ip = |a: [u8; 4]| std::net::Ipv4Addr::from(a).to_string();
    let bed = NatBed::new(96, 19680);
    let m = Monitor::start(&bed.sw, &["--type", "nat"]);
    let syn = packet(TCP, bed.client, bed.uplink_ip, 40000, bed.tcp_port, SYN, false);
    bpf::run_tc(&bed.nat_in, &syn, bed.ifindex).unwrap();
    let e = m.expect("forward", |v| v["reason"] == "forward");
    let f = &e["frame"];
    assert_eq!(
        (f["src_ip"].as_str(), f["dst_ip"].as_str()),
        (Some(&*ip(bed.client)), Some(&*ip(bed.uplink_ip))),
        "{e}"
    );
    assert_eq!((f["src_port"].as_u64(), f["dst_port"].as_u64()), (Some(40000), Some(u64::from(bed.tcp_port))), "{e}");
    assert_eq!((e["nat"]["addr"].as_str(), e["nat"]["port"].as_u64()), (Some(&*ip(bed.target)), Some(80)), "{e}");

    let remote = [198, 51, 100, 1];
    let out = packet(UDP, bed.target, remote, 5353, 443, 0, false);
    bpf::run_tc(&bed.nat_out, &out, bed.ifindex).unwrap();
    let e = m.expect("masquerade", |v| v["reason"] == "masquerade");
    assert_eq!(
        (e["frame"]["src_ip"].as_str(), e["frame"]["dst_ip"].as_str()),
        (Some(&*ip(bed.target)), Some(&*ip(remote)))
    );
    assert_eq!(e["nat"]["addr"].as_str(), Some(&*ip(bed.uplink_ip)), "{e}");
    // The connection's next packets are not new connections.
    bpf::run_tc(&bed.nat_out, &out, bed.ifindex).unwrap();
    sleep(Duration::from_millis(300));
    assert_eq!(m.events().len(), 2, "{:#?}", m.events());
}

/// NAT's drops carry their reason too: a packet routed in from outside that nothing asked for
/// (`unsolicited-routed`), one from the segment NAT cannot translate (`nat-refused`), and an
/// ICMP error about a connection that is not its own (`icmp-foreign`), on the interface the
/// NAT program runs on.
#[test]
fn nat_drops_are_shown_with_their_reason() {
    use switch_tests::{
        bpf,
        ipv4::{ECHO_REPLY, SYN, TCP, UDP, icmp_echo, icmp_error, packet},
        nat::NatBed,
    };
    let bed = NatBed::new(97, 19780);
    let m = Monitor::start(&bed.sw, &["--type", "drop"]);
    // To a namespace's address and a port nothing forwards: unsolicited.
    let stray = packet(TCP, bed.client, bed.target, 40001, 81, SYN, false);
    assert_eq!(bpf::run_tc(&bed.nat_in, &stray, bed.ifindex).unwrap().retval, 2, "TC_ACT_SHOT expected");
    let e = m.expect("unsolicited-routed drop", |v| v["reason"] == "unsolicited-routed");
    let target = std::net::Ipv4Addr::from(bed.target).to_string();
    assert_eq!((e["frame"]["dst_ip"].as_str(), e["frame"]["dst_port"].as_u64()), (Some(&*target), Some(81)), "{e}");
    // An echo reply from the segment that answers nothing it sent: no identifier to
    // masquerade it with, refused.
    let reply = icmp_echo(ECHO_REPLY, bed.target, bed.client, 0x4321, 1);
    assert_eq!(bpf::run_tc(&bed.nat_out, &reply, bed.ifindex).unwrap().retval, 2, "TC_ACT_SHOT expected");
    let e = m.expect("nat-refused drop", |v| v["reason"] == "nat-refused");
    assert_eq!((e["frame"]["src_ip"].as_str(), e["frame"]["proto"].as_u64()), (Some(&*target), Some(1)), "{e}");
    // An error from outside about a masqueraded connection, sent to another namespace than
    // the connection's.
    let left = bpf::run_tc(&bed.nat_out, &packet(UDP, [10, 97, 0, 7], bed.client, 5000, 7000, 0, false), bed.ifindex);
    let sport = u16::from_be_bytes(left.unwrap().data[34..36].try_into().unwrap());
    let quoted = packet(UDP, bed.uplink_ip, bed.client, sport, 7000, 0, false);
    let error = icmp_error(3, 3, 0, bed.client, bed.target, &quoted[14..]);
    assert_eq!(bpf::run_tc(&bed.nat_in, &error, bed.ifindex).unwrap().retval, 2, "TC_ACT_SHOT expected");
    let e = m.expect("icmp-foreign drop", |v| v["reason"] == "icmp-foreign");
    assert_eq!((e["frame"]["dst_ip"].as_str(), e["frame"]["proto"].as_u64()), (Some(&*target), Some(1)), "{e}");
    assert_eq!(m.events().len(), 3, "{:#?}", m.events());
}

/// A namespace that opens connections to one remote from ever more source ports is refused
/// once it holds its share of the masquerade ports towards it: shown as `masquerade-share`.
#[test]
fn masquerade_share_drops_are_shown_with_their_reason() {
    use switch_tests::{
        bpf,
        ipv4::{UDP, packet},
        nat::NatBed,
    };
    let bed = NatBed::new(151, 15180);
    let m = Monitor::start(&bed.sw, &["--type", "drop"]);
    let remote = [198, 51, 100, 7];
    let send = |sport: u16| {
        let f = packet(UDP, bed.target, remote, sport, 53, 0, false);
        bpf::run_tc(&bed.nat_out, &f, bed.ifindex).unwrap().retval
    };
    let refused = |ports: std::ops::Range<u16>| {
        ports.clone().find(|&sport| send(sport) == 2).unwrap_or_else(|| panic!("no refusal from ports {ports:?}"))
    };
    refused(1000..6000);
    assert_eq!(switch_drops(&bed.sw)["masquerade_share"].as_u64(), Some(1));
    // The connections it made were events too, over the rate limit: the next window shows
    // the next refusal (the unanswered connections hold their ports for seconds yet).
    sleep(Duration::from_millis(1200));
    let next = refused(7000..9000);
    let e = m.expect("masquerade-share drop", |v| v["reason"] == "masquerade-share");
    assert_eq!(e["frame"]["src_port"].as_u64(), Some(u64::from(next)), "{e}");
    assert_eq!(switch_drops(&bed.sw)["masquerade_share"].as_u64(), Some(2));
}

/// Stations the switch forgets show as `age` events, with the port they were behind: the
/// programs age lazily, so the monitor tells it from two looks at the table.
#[test]
fn stations_aging_out_are_shown() {
    let mut sb = Sandbox::new();
    let sw = sb.switch("mon", "tc", &["--ageing", "1"]);
    let a = sb.port(&sw, "a", "10.98.1.1/24", &[]);
    let b = sb.port(&sw, "b", "10.98.1.2/24", &[]);
    let m = Monitor::start(&sw, &["--type", "age"]);
    assert!(ping(&a, "10.98.1.2", 1));
    for ns in [&a, &b] {
        let mac = ns_info(ns)["mac"].as_str().unwrap().to_owned();
        let e = m.expect("age", |v| v["kind"] == "age" && v["station"] == mac.as_str());
        assert_eq!(e["namespace"], ns.as_str(), "{e}");
    }
    assert!(m.events().iter().all(|v| v["kind"] == "age"), "{:#?}", m.events());
}

/// Connections NAT forgets show as `nat` events: `expired` when idle past their timeout,
/// `evicted` when gone before it (the LRU made room). Made with the pinned programs, then
/// aged and evicted by hand in the pinned tables, as the kernel would.
#[test]
fn nat_connections_expiring_and_evicted_are_shown() {
    use aya::maps::{HashMap, Map, MapData};
    use switch_common::{CtEntry, CtKey};
    use switch_tests::{
        bpf,
        ipv4::{SYN, TCP, UDP, packet},
        nat::NatBed,
    };
    let bed = NatBed::new(98, 19880);
    let m = Monitor::start(&bed.sw, &["--type", "nat"]);
    let tcp = packet(TCP, bed.client, bed.uplink_ip, 40000, bed.tcp_port, SYN, false);
    bpf::run_tc(&bed.nat_in, &tcp, bed.ifindex).unwrap();
    let udp = packet(UDP, bed.client, bed.uplink_ip, 40001, bed.udp_port, 0, false);
    bpf::run_tc(&bed.nat_in, &udp, bed.ifindex).unwrap();
    // Both new connections shown, and then one look at the tables with both live.
    assert!(within(|| m.events().iter().filter(|v| v["reason"] == "forward").count() == 2), "{:#?}", m.events());
    sleep(Duration::from_millis(1200));
    let open = |name: &str| -> HashMap<MapData, CtKey, CtEntry> {
        let data = MapData::from_pin(format!("/sys/fs/bpf/switch/{}/{name}", bed.sw)).unwrap();
        Map::LruHashMap(data).try_into().unwrap()
    };
    let mut aged = 0;
    for name in ["CT_UNREPLIED", "CONNTRACK"] {
        let mut map = open(name);
        let entries: Vec<(CtKey, CtEntry)> = map.iter().map(Result::unwrap).collect();
        for (k, mut e) in entries {
            if k.proto == 6 {
                // The TCP connection: idle since boot, as if its timeout passed long ago.
                e.last_seen_ns = 1;
                map.insert(k, e, 0).unwrap();
                aged += 1;
            } else {
                // The UDP one: gone before its time.
                map.remove(&k).unwrap();
            }
        }
    }
    assert_eq!(aged, 2, "both directions of the TCP connection");
    let expired = m.expect("expired", |v| v["reason"] == "expired");
    let target = std::net::Ipv4Addr::from(bed.target).to_string();
    assert_eq!(expired["frame"]["proto"], 6, "{expired}");
    assert_eq!(
        (expired["nat"]["addr"].as_str(), expired["nat"]["port"].as_u64()),
        (Some(&*target), Some(80)),
        "{expired}"
    );
    assert_eq!(expired["frame"]["src_port"], 40000, "{expired}");
    let evicted = m.expect("evicted", |v| v["reason"] == "evicted");
    assert_eq!((evicted["frame"]["proto"].as_u64(), evicted["frame"]["src_port"].as_u64()), (Some(17), Some(40001)));
    assert_eq!(evicted["namespace"], expired["namespace"], "both name the target's namespace");
    assert!(evicted["namespace"].is_string(), "{evicted}");
    sleep(Duration::from_millis(1200));
    assert_eq!(m.events().len(), 4, "each connection ends once: {:#?}", m.events());
}
