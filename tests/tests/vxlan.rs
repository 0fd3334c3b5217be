//! Several hosts joined by VXLAN, on one machine: each host is a network namespace with its
//! own switch instance (`switch --host-netns HOST`, which `nsenter --net` would give too), and
//! the hosts' underlay interfaces (`ul0`, 10.77.0.N/24) meet on a Linux bridge in a namespace
//! of the test's own (so nothing of it is on the machine's own interfaces).
//!
//! ```text
//!   host h1                      underlay ns             host h2 ...
//!   [a][b]── switch ov ─ vov-… ─ ul0 ══ p1 ─ br0 ─ p2 ══ ul0 ─ vov-… ─ switch ov ─[a][b]
//!            (VNI 42)   (vxlan)   10.77.0.1                10.77.0.2
//! ```
use std::{
    process::{Command, Stdio},
    thread::sleep,
    time::Duration,
};

use switch_tests::{
    frames::{experimental_frame, tagged, udp_frame},
    hosts::Hosts,
    *,
};

/// A VTEP on the underlay that is not one of the test's switches: a namespace with a kernel
/// VXLAN device `vx` aimed at host 1 (an intruder, or a peer that misbehaves). Removed on drop.
struct Vtep {
    ns: String,
}

impl Vtep {
    /// The device's MAC.
    fn mac(&self) -> String {
        let link = host("ip", &["-n", &self.ns, "-o", "link", "show", "vx"]);
        let mac = link.split("link/ether ").nth(1).and_then(|r| r.split_whitespace().next());
        mac.unwrap_or_else(|| panic!("no MAC on {}'s vx: {link}", self.ns)).to_owned()
    }

    /// (Re)makes the device with VNI `vni`, its address `ip`/24 on the segment.
    fn device(&self, vni: &str, ip: &str) {
        let _ = Command::new("ip").args(["-n", &self.ns, "link", "del", "vx"]).stderr(Stdio::null()).status();
        host(
            "ip",
            &[
                "-n",
                &self.ns,
                "link",
                "add",
                "vx",
                "type",
                "vxlan",
                "id",
                vni,
                "remote",
                "10.77.0.1",
                "dstport",
                "4789",
            ],
        );
        host("ip", &["-n", &self.ns, "link", "set", "vx", "mtu", "1450", "up"]);
        host("ip", &["-n", &self.ns, "addr", "add", &format!("{ip}/24"), "dev", "vx"]);
    }

    /// Sends raw Ethernet frames (hex) into the tunnel: out of `vx`, encapsulated by the kernel.
    fn send(&self, frames: &[String]) {
        let mut a = vec!["python3", "-c", SEND_RAW, "vx"];
        a.extend(frames.iter().map(String::as_str));
        let r = exec(&self.ns, &a);
        assert_eq!(r.code, 0, "sending raw frames from {}: {r:?}", self.ns);
    }
}

impl Drop for Vtep {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// What the VXLAN tests add to the shared hosts.
trait Intruders {
    fn vtep(&self, last: u8, vni: &str, ip: &str) -> Vtep;
    fn monitor(&self, i: usize, sw: &str) -> Reaped;
}

impl Intruders for Hosts {
    /// A VTEP at 10.77.0.`last` on the underlay, with VNI `vni` and `ip` on the segment; not a
    /// peer of anything yet. IPv6 is off there, so it sends nothing by itself.
    fn vtep(&self, last: u8, vni: &str, ip: &str) -> Vtep {
        let v = Vtep { ns: self.sb.name(&format!("x{last}")) };
        host("ip", &["netns", "add", &v.ns]);
        let port = format!("px{last}");
        host(
            "ip",
            &["link", "add", "ul0", "netns", &v.ns, "type", "veth", "peer", "name", &port, "netns", &self.underlay],
        );
        host("ip", &["-n", &self.underlay, "link", "set", &port, "master", "br0", "up"]);
        let r =
            exec(&v.ns, &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"]);
        assert_eq!(r.code, 0, "{r:?}");
        host("ip", &["-n", &v.ns, "addr", "add", &format!("10.77.0.{last}/24"), "dev", "ul0"]);
        host("ip", &["-n", &v.ns, "link", "set", "ul0", "up"]);
        v.device(vni, ip);
        v
    }

    /// `switch monitor --type drop` of `sw` on host `i`, running until `drops` stops it.
    fn monitor(&self, i: usize, sw: &str) -> Reaped {
        let m = Command::new(switch_bin())
            .args(["--host-netns", &self.hosts[i - 1], "--json", "monitor", "--switch", sw, "--type", "drop"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The monitor turns the datapath's events on once it runs.
        sleep(Duration::from_millis(1000));
        Reaped::new(m)
    }
}

/// Stops a monitor (SIGINT, as a user would) and returns the events it printed.
fn drops(m: Reaped) -> Vec<Value> {
    let child = m.take();
    // SAFETY: signalling our own child, which has not been waited for.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).into_owned();
    out.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).collect()
}

/// Sends each frame (hex) given after the interface name out of that interface.
const SEND_RAW: &str = r#"
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind((sys.argv[1], 0))
for f in sys.argv[2:]: s.send(bytes.fromhex(f))
"#;

/// An ARP frame (`op` 1 request, 2 reply) from Ethernet source `src`, saying that `spa` is
/// at `sha`, asking for (or answering) `tpa`.
fn arp_frame(dst: &str, src: &str, op: u8, sha: &str, spa: [u8; 4], tpa: [u8; 4]) -> String {
    let hex = |b: &[u8]| b.iter().map(|o| format!("{o:02x}")).collect::<String>();
    let mac = |m: &str| m.replace(':', "");
    format!(
        "{}{}0806000108000604000{op}{}{}000000000000{}{}",
        mac(dst),
        mac(src),
        mac(sha),
        hex(&spa),
        hex(&tpa),
        "00".repeat(18)
    )
}

/// Runs `cmd` in namespace `ns` in the background with stdout piped.
fn spawn_in(ns: &str, cmd: &[&str]) -> Reaped {
    let mut a = vec!["ns", "exec", ns, "--"];
    a.extend_from_slice(cmd);
    Reaped::new(Command::new(switch_bin()).args(&a).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap())
}

/// A TCP transfer from `from` to `to_ns` at `to_ip`: 10 MB, checked end to end.
fn tcp_intact(from: &str, to_ns: &str, to_ip: &str) {
    let serve = ["ns", "exec", to_ns, "--", "python3", "-c", BULK_TCP, "serve", "9400", "take"];
    let mut server = spawn_until(Command::new(switch_bin()).args(serve).stderr(Stdio::piped()), "ready");
    let r = exec(from, &["python3", "-c", BULK_TCP, "send", &format!("{to_ip}:9400"), "give"]);
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(r.stdout.trim(), "intact", "10 MB over TCP from {from} to {to_ns}: {r:?}");
}

/// Sends one ARP request for `target` from `ns` (its own MAC and address `src`, as port
/// security wants) on a packet socket.
const ARP_ONE: &str = r#"
import socket, struct, sys
src_ip, target = sys.argv[1], sys.argv[2]
mac = bytes.fromhex(open("/sys/class/net/eth0/address").read().strip().replace(":", ""))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind(("eth0", 0))
arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + socket.inet_aton(src_ip) + b"\0" * 6 + socket.inet_aton(target)
s.send(b"\xff" * 6 + mac + b"\x08\x06" + arp)
"#;

/// tcpdump in `ns` on `ifname` for `secs` seconds with `filter`: the started process.
fn capture(ns: &str, ifname: &str, secs: u32, filter: &str) -> Reaped {
    let t = secs.to_string();
    let mut args = vec!["timeout", &t, "tcpdump", "-nn", "-l", "-i", ifname];
    args.extend(filter.split(' '));
    spawn_in(ns, &args)
}

/// What a capture printed, one line per packet.
fn captured(c: Reaped) -> Vec<String> {
    let out = c.take().wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

/// Three hosts, VNI 42 on each, two namespaces per host: everything the segment promises,
/// then a second VNI beside it, a host leaving, a peer removed, and nothing left after.
#[test]
fn three_hosts_share_one_segment() {
    let mut hs = Hosts::new(3);
    let names = segment_of_three_hosts(&mut hs);
    every_namespace_and_the_gateway_reach_each_other(&hs, &names);
    fdb_and_peers_know_where_the_stations_are(&hs, &names);
    known_unicast_is_encapsulated_by_the_program(&hs, &names);
    a_broadcast_reaches_every_namespace_once(&names);
    a_second_vni_stays_apart(&mut hs, &names);

    // Host 3 leaves: hosts 1 and 2 go on.
    hs.on(3, &["down", "--switch", "ov"]);
    hs.switches.retain(|(i, _)| *i != 3);
    assert!(ping(&names[0][0].0, &names[1][1].1, 2), "host 1 -> host 2 after host 3 went");
    assert!(!ping(&names[0][0].0, &names[2][0].1, 1), "host 3's namespace is gone");

    a_removed_peer_is_forgotten(&hs, &names);
    everything_goes(&mut hs);
}

/// The namespaces of each host of a segment: (name, address), two per host.
type HostNames = Vec<[(String, String); 2]>;

/// Switch `ov`, VNI 42, on three hosts meshed (host 1 with the gateway 10.88.0.254), with
/// namespaces `Na` at 10.88.0.N1 and `Nb` at 10.88.0.N2 on host N.
fn segment_of_three_hosts(hs: &mut Hosts) -> HostNames {
    let mut names = vec![];
    for i in 1..=3 {
        hs.switch(i, "ov", 42, if i == 1 { &["--gateway", "10.88.0.254/24"] } else { &[] });
    }
    hs.mesh("ov", &[1, 2, 3]);
    for i in 1..=3 {
        let a = hs.ns(i, "ov", &format!("{i}a"), &format!("10.88.0.{i}1"));
        let b = hs.ns(i, "ov", &format!("{i}b"), &format!("10.88.0.{i}2"));
        names.push([(a, format!("10.88.0.{i}1")), (b, format!("10.88.0.{i}2"))]);
    }
    // The namespaces fit the underlay once encapsulated.
    let link = exec(&names[0][0].0, &["ip", "-o", "link", "show", "eth0"]).stdout;
    assert!(link.contains("mtu 1450"), "underlay MTU 1500 minus 50: {link}");
    names
}

/// Ping between every two namespaces, same host and across hosts; from host 1's gateway to
/// host 2; TCP with a checked payload on every pair of hosts.
fn every_namespace_and_the_gateway_reach_each_other(hs: &Hosts, names: &HostNames) {
    let all: Vec<&(String, String)> = names.iter().flatten().collect();
    for (x, (from, _)) in all.iter().enumerate() {
        for (to, ip) in all.iter().skip(x + 1) {
            assert!(ping(from, ip, 2), "{from} -> {to} ({ip})");
        }
    }
    // Host 1's own address on the segment (its gateway) reaches a namespace of host 2, with
    // the tunnel's MTU on its end too.
    let gw = host("ip", &["-n", &hs.hosts[0], "-o", "addr", "show", "to", "10.88.0.254"]);
    let gw_if = gw.split_whitespace().nth(1).unwrap_or_else(|| panic!("no gateway address on host 1: {gw}"));
    let gw_link = host("ip", &["-n", &hs.hosts[0], "-o", "link", "show", gw_if]);
    assert!(gw_link.contains("mtu 1450"), "{gw_link}");
    assert!(ping(&hs.hosts[0], &names[1][0].1, 2), "host 1 -> a namespace of host 2");
    for (i, j) in [(0, 1), (1, 2), (2, 0)] {
        tcp_intact(&names[i][0].0, &names[j][1].0, &names[j][1].1);
    }
}

/// The FDB of host 1 has the other hosts' stations at their peers, its own at no peer; two
/// stations behind each of its peers.
fn fdb_and_peers_know_where_the_stations_are(hs: &Hosts, names: &HostNames) {
    let fdb = hs.fdb(1, "ov");
    for (i, host_names) in names.iter().enumerate() {
        for (ns, _) in host_names {
            let mac = hs.mac(i + 1, ns);
            let peer = fdb.iter().find(|(m, _)| *m == mac).unwrap_or_else(|| panic!("{ns} not in {fdb:?}")).1.clone();
            let want = (i > 0).then(|| format!("10.77.0.{}", i + 1));
            assert_eq!(peer, want, "{ns}'s peer in host 1's FDB");
        }
    }
    let peers = hs.json_on(1, &["peer", "list", "--switch", "ov"]);
    assert_eq!(peers.as_array().unwrap().len(), 2, "{peers}");
    assert!(peers.as_array().unwrap().iter().all(|p| p["stations"] == 2), "two stations behind each peer: {peers}");
}

/// On the underlay: VXLAN on UDP 4789 with VNI 42. Known unicast is encapsulated by the
/// switch program (outer UDP checksum zero), not by the VXLAN device, whose counter stays.
fn known_unicast_is_encapsulated_by_the_program(hs: &Hosts, names: &HostNames) {
    let device_tx = || {
        let v: Value = serde_json::from_str(&host("ip", &["-n", &hs.hosts[0], "-j", "-s", "link", "show"])).unwrap();
        let dev = v.as_array().unwrap().iter().find(|l| l["ifname"].as_str().unwrap().starts_with("vov-")).cloned();
        dev.expect("host 1's VXLAN device")["stats64"]["tx"]["packets"].as_u64().unwrap()
    };
    let before = device_tx();
    let cap = capture(&hs.hosts[0], "ul0", 3, "-vv udp port 4789");
    sleep(Duration::from_millis(800));
    assert!(ping(&names[0][0].0, &names[1][0].1, 10));
    let lines = captured(cap);
    assert!(
        lines.iter().any(|l| l.contains("10.77.0.1.") && l.contains("> 10.77.0.2.4789") && l.contains("vni 42")),
        "no VXLAN VNI 42 from host 1 to host 2 on the underlay: {lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("> 10.77.0.2.4789: [no cksum] VXLAN")),
        "no VXLAN frame encapsulated by the program: {lines:#?}"
    );
    let sent = device_tx() - before;
    assert!(sent < 5, "{sent} of 10 echo requests went through the VXLAN device, not the program");
}

/// An ARP broadcast from host 1 reaches every other namespace exactly once (head-end
/// replication, nothing flooded back into the tunnel).
fn a_broadcast_reaches_every_namespace_once(names: &HostNames) {
    let target = "10.88.0.250";
    let filter = format!("arp and host {target}");
    let caps: Vec<(String, Reaped)> =
        names.iter().flatten().skip(1).map(|(ns, _)| (ns.clone(), capture(ns, "eth0", 3, &filter))).collect();
    sleep(Duration::from_millis(1000));
    let r = exec(&names[0][0].0, &["python3", "-c", ARP_ONE, &names[0][0].1, target]);
    assert_eq!(r.code, 0, "{r:?}");
    for (ns, c) in caps {
        let lines = captured(c);
        let n = lines.iter().filter(|l| l.contains(&format!("who-has {target}"))).count();
        assert_eq!(n, 1, "the broadcast reached {ns} {n} times: {lines:#?}");
    }
}

/// A second VNI on hosts 1 and 2, namespaces on the same subnet: it works, and stays apart
/// from VNI 42.
fn a_second_vni_stays_apart(hs: &mut Hosts, names: &HostNames) {
    hs.switch(1, "ov2", 43, &[]);
    hs.switch(2, "ov2", 43, &[]);
    hs.mesh("ov2", &[1, 2]);
    let c1 = hs.ns(1, "ov2", "1c", "10.88.0.13");
    let c2 = hs.ns(2, "ov2", "2c", "10.88.0.23");
    assert!(ping(&c1, "10.88.0.23", 2), "VNI 43 across hosts");
    assert!(!ping(&c1, "10.88.0.21", 1), "VNI 43 reached a namespace of VNI 42");
    assert!(!ping(&names[1][0].0, "10.88.0.13", 1), "VNI 42 reached a namespace of VNI 43");
    let second = hs.fdb(2, "ov2");
    assert!(second.iter().all(|(m, _)| *m != hs.mac(1, &names[0][0].0)), "a VNI 42 station in VNI 43: {second:?}");
    assert!(ping(&c2, "10.88.0.13", 1));
}

/// Host 1 drops peer 2: its stations are forgotten and no traffic reaches them; a second time
/// there is nothing to do.
fn a_removed_peer_is_forgotten(hs: &Hosts, names: &HostNames) {
    let r = hs.json_on(1, &["peer", "del", "10.77.0.2", "--switch", "ov"]);
    assert_eq!(r["changed"], true, "{r}");
    assert!(r["flushed"].as_u64().unwrap() >= 1, "host 2's stations flushed: {r}");
    let fdb = hs.fdb(1, "ov");
    assert!(fdb.iter().all(|(_, p)| p.as_deref() != Some("10.77.0.2")), "{fdb:?}");
    assert!(!ping(&names[0][0].0, &names[1][0].1, 2), "traffic to the removed peer's station");
    assert!(ping(&names[0][0].0, &names[0][1].1, 1), "host 1's own namespaces still talk");
    assert_eq!(hs.json_on(1, &["peer", "del", "10.77.0.2", "--switch", "ov"])["changed"], false);
}

/// Every switch goes down: each host is left with its loopback and underlay interface only,
/// and no pins (and Drop checks that nothing else is left).
fn everything_goes(hs: &mut Hosts) {
    for (i, sw) in hs.switches.drain(..).collect::<Vec<_>>() {
        hs.on(i, &["down", "--switch", &sw]);
    }
    for h in &hs.hosts {
        let links: Vec<String> = host("ip", &["-n", h, "-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1).map(|n| n.split('@').next().unwrap_or(n).to_owned()))
            .collect();
        assert_eq!(links, ["lo", "ul0"], "interfaces left on {h}");
        assert!(!std::path::Path::new(&format!("/sys/fs/bpf/switch/@{h}")).exists(), "pins left for {h}");
    }
}

/// Someone on the underlay that is not a peer, or a peer speaking another VNI, does not get
/// into the segment; the same sender as a peer on the right VNI does (the control).
#[test]
fn the_underlay_cannot_inject_frames() {
    let mut hs = Hosts::new(1);
    hs.switch(1, "ov", 42, &[]);
    let a = hs.ns(1, "ov", "1a", "10.88.0.11");
    let a_mac = hs.mac(1, &a);
    // The intruder: a kernel VXLAN device at 10.77.0.9 on the underlay, aimed at host 1.
    let x = hs.vtep(9, "42", "10.88.0.99");
    let intruder = |vni: &str| x.device(vni, "10.88.0.99");

    // Not a peer: nothing gets in, and the tunnel counts what it refused (and `switch
    // monitor` of the host names it).
    let monitor = hs.monitor(1, "ov");
    let before = counter(&hs.tunnel_stats(1, "ov", 42), "dropped").unwrap();
    assert!(!ping(&x.ns, "10.88.0.11", 2), "a non-peer reached the segment");
    let after = counter(&hs.tunnel_stats(1, "ov", 42), "dropped").unwrap();
    assert!(after > before, "refused frames counted on the tunnel port ({before} -> {after})");
    let events = drops(monitor);
    let refused = events.iter().any(|v| v["reason"] == "not-peer" && v["namespace"] == "vxlan42");
    assert!(refused, "no not-peer drop on the tunnel port in the monitor's output: {events:#?}");
    assert!(hs.fdb(1, "ov").iter().all(|(_, p)| p.is_none()), "a non-peer's station was learned");

    // The same sender made a peer: it gets in (so the refusal above was the peer check).
    hs.on(1, &["peer", "add", "10.77.0.9", "--switch", "ov"]);
    assert!(ping(&x.ns, "10.88.0.11", 2), "the peer on VNI 42 did not reach the segment");
    assert!(hs.fdb(1, "ov").iter().any(|(_, p)| p.as_deref() == Some("10.77.0.9")));

    // A peer on another VNI: nothing gets in.
    intruder("99");
    assert!(!ping(&x.ns, "10.88.0.11", 2), "VNI 99 reached the segment of VNI 42");

    // Removed again: its station is forgotten, and nothing gets in.
    intruder("42");
    hs.on(1, &["peer", "del", "10.77.0.9", "--switch", "ov"]);
    assert!(hs.fdb(1, "ov").iter().all(|(_, p)| p.is_none()), "the removed peer's station stayed");
    assert!(!ping(&x.ns, "10.88.0.11", 2), "a removed peer reached the segment");
    assert!(hs.fdb(1, "ov").iter().any(|(m, _)| *m == a_mac), "the local station stays");
}

/// The IPv6 side of `a_peer_cannot_claim_this_hosts_ports`: IPv6 from a bound port's address or
/// link-local address, an advertisement for it, a solicitation with a bound MAC in its
/// link-layer option, duplicate address detection for the gateway's address: each dropped
/// and counted on the tunnel port; the peer's own IPv6 passes.
#[test]
fn a_peer_cannot_claim_this_hosts_ipv6() {
    use std::net::Ipv6Addr;
    use switch_tests::ipv6::{self as v6, ALL_NODES_MAC, ICMPV6, UDP};
    let mut hs = Hosts::new(1);
    hs.switch(1, "ov6", 43, &["--gateway", "10.89.0.254/24", "--gateway", "fd00:89::fe/64"]);
    let [a, b] = ["6a", "6b"].map(|s| hs.sb.name(s));
    for (ns, host) in [(&a, 11), (&b, 12)] {
        let (v4, v6) = (format!("10.89.0.{host}/24"), format!("fd00:89::{host}/64"));
        hs.on(1, &["ns", "add", ns, "--switch", "ov6", "--ip", &v4, "--ip", &v6]);
    }
    let (a_mac, b_mac) = (hs.mac(1, &a), hs.mac(1, &b));
    let x = hs.vtep(9, "43", "10.89.0.99");
    hs.on(1, &["peer", "add", "10.77.0.9", "--switch", "ov6"]);
    let x_mac = x.mac();
    let addr = |s: &str| -> Ipv6Addr { s.parse().unwrap() };
    let (a6, b6, gw6, x6) = (addr("fd00:89::11"), addr("fd00:89::12"), addr("fd00:89::fe"), addr("fd00:89::99"));
    let all: Ipv6Addr = "ff02::1".parse().unwrap();
    let udp = |src| v6::frame(&b_mac, &x_mac, src, b6, UDP, &[], &v6::udp(8));
    let (group, group_mac) = v6::solicited_node(b6);
    let before = hs.tunnel_stats(1, "ov6", 43);
    x.send(&[
        udp(a6),
        udp(v6::link_local(&a_mac)),
        v6::frame(ALL_NODES_MAC, &x_mac, x6, all, ICMPV6, &[], &v6::na(x6, all, a6, &[v6::ll_option(2, &x_mac)])),
        v6::frame(&group_mac, &x_mac, x6, group, ICMPV6, &[], &v6::ns(x6, group, b6, &[v6::ll_option(1, &a_mac)])),
        v6::frame(
            &group_mac,
            &x_mac,
            Ipv6Addr::UNSPECIFIED,
            group,
            ICMPV6,
            &[],
            &v6::ns(Ipv6Addr::UNSPECIFIED, group, gw6, &[]),
        ),
    ]);
    sleep(Duration::from_millis(300));
    let after = hs.tunnel_stats(1, "ov6", 43);
    let grew = |field: &str| counter(&after, field).unwrap() - counter(&before, field).unwrap();
    assert_eq!((grew("spoofed_ip"), grew("spoofed_nd")), (2, 3), "{after}");
    // The control: the peer's own IPv6 reaches b.
    let own = udp(x6);
    let at_b = switch_tests::frames::Sniffer::start(&b, &own);
    x.send(std::slice::from_ref(&own));
    sleep(Duration::from_millis(300));
    assert_eq!(at_b.count(), 1, "the peer's own IPv6 did not reach b");
    assert_eq!(grew("spoofed_ip"), 2);
}

/// A peer cannot claim what this host's own ports are bound to: ARP saying that a local
/// namespace's (or the gateway's) address is elsewhere, or that something is at a local
/// bound MAC, IPv4 from those addresses, frames from those MACs. Each is dropped and counted
/// on the tunnel port (and named in `switch monitor`); the peer's own traffic passes (the
/// control), and so does a claim on the address of a namespace that is gone.
#[test]
fn a_peer_cannot_claim_this_hosts_ports() {
    let mut hs = Hosts::new(1);
    hs.switch(1, "ov", 42, &["--gateway", "10.88.0.254/24"]);
    let a = hs.ns(1, "ov", "1a", "10.88.0.11");
    let b = hs.ns(1, "ov", "1b", "10.88.0.12");
    let (a_mac, b_mac) = (hs.mac(1, &a), hs.mac(1, &b));
    let x = hs.vtep(9, "42", "10.88.0.99");
    hs.on(1, &["peer", "add", "10.77.0.9", "--switch", "ov"]);
    let x_mac = x.mac();
    let neigh = |ip: &str| exec(&b, &["ip", "neigh", "show", ip]).stdout;
    let stats = || hs.tunnel_stats(1, "ov", 42);
    let before = stats();

    let monitor = hs.monitor(1, "ov");
    let cap = capture(&b, "eth0", 3, "udp port 53");
    sleep(Duration::from_millis(800));
    x.send(&[
        // "10.88.0.11 (a) is at x", asking b: b would answer and cache it.
        arp_frame("ff:ff:ff:ff:ff:ff", &x_mac, 1, &x_mac, [10, 88, 0, 11], [10, 88, 0, 12]),
        // The gateway's address, the same way.
        arp_frame("ff:ff:ff:ff:ff:ff", &x_mac, 1, &x_mac, [10, 88, 0, 254], [10, 88, 0, 12]),
        // "10.88.0.99 (x's own) is at a's MAC": b's traffic for it would go to a.
        arp_frame("ff:ff:ff:ff:ff:ff", &x_mac, 1, &a_mac, [10, 88, 0, 99], [10, 88, 0, 12]),
        // IPv4 from a's address and from the gateway's, to b.
        udp_frame(&b_mac, &x_mac, [10, 88, 0, 11], [10, 88, 0, 12]),
        udp_frame(&b_mac, &x_mac, [10, 88, 0, 254], [10, 88, 0, 12]),
        // a's MAC as the source.
        experimental_frame(&b_mac, &a_mac),
        // The gateway claim again, under a priority tag (VID 0), which b would strip.
        tagged(&arp_frame("ff:ff:ff:ff:ff:ff", &x_mac, 1, &x_mac, [10, 88, 0, 254], [10, 88, 0, 12]), "81000000"),
    ]);
    let seen = captured(cap);
    let events = drops(monitor);
    let after = stats();

    assert!(!neigh("10.88.0.11").contains(&x_mac), "b believes a peer's claim on a's address: {}", neigh("10.88.0.11"));
    assert!(!neigh("10.88.0.254").contains(&x_mac), "b believes a claim on the gateway's address");
    assert!(!neigh("10.88.0.99").contains(&a_mac), "b believes a's MAC is behind the peer: {}", neigh("10.88.0.99"));
    let seen: Vec<&String> = seen.iter().filter(|l| l.contains(" IP ")).collect();
    assert!(seen.is_empty(), "IPv4 from this host's addresses reached b from the tunnel: {seen:#?}");
    let grew = |field: &str| counter(&after, field).unwrap() - counter(&before, field).unwrap();
    assert_eq!(grew("spoofed_arp"), 3, "ARP claims counted on the tunnel port: {after}");
    assert_eq!(grew("spoofed_ip"), 2, "IPv4 claims counted on the tunnel port: {after}");
    assert_eq!(grew("spoofed_mac"), 1, "a bound MAC from the tunnel counted: {after}");
    assert_eq!(grew("tagged"), 1, "a tagged frame from the tunnel counted: {after}");
    for reason in ["spoofed-arp", "spoofed-ip", "spoofed-mac", "tagged"] {
        let n = events.iter().filter(|v| v["reason"] == reason && v["namespace"] == "vxlan42").count();
        assert!(n >= 1, "no {reason} drop on the tunnel port in the monitor's output: {events:#?}");
    }

    // The control: the peer's own address and MAC pass, both ways.
    assert!(ping(&x.ns, "10.88.0.12", 2), "the peer's own traffic did not reach b");
    assert!(neigh("10.88.0.99").contains(&x_mac), "b did not learn the peer's own claim: {}", neigh("10.88.0.99"));
    assert!(ping(&a, "10.88.0.99", 1), "a did not reach the peer");
    let fdb = hs.fdb(1, "ov");
    assert!(fdb.iter().any(|(m, p)| *m == a_mac && p.is_none()), "a's station is not at its port: {fdb:?}");

    // a gone, its address is bound to nothing here: a station behind the peer may take it.
    hs.on(1, &["ns", "del", &a]);
    let before = stats();
    x.send(&[arp_frame("ff:ff:ff:ff:ff:ff", &x_mac, 1, &x_mac, [10, 88, 0, 11], [10, 88, 0, 12])]);
    assert!(
        within(|| neigh("10.88.0.11").contains(&x_mac)),
        "a's old address is still refused: {}",
        neigh("10.88.0.11")
    );
    assert_eq!(counter(&stats(), "spoofed_arp"), counter(&before, "spoofed_arp"), "a's old address counted");
}

/// Each peer learns new stations within a limit of its own (`--max-learned`): a peer that
/// sends from many MACs (or anyone sending with its underlay address) uses up only its own
/// window, counted as `mac-limit` on the tunnel port (and shown per peer by `peer list`);
/// another peer still gets in. A peer removed and added again starts afresh, and a switch whose pins lack the per-peer and
/// bound-address maps (made by an older binary) still takes ports and peers.
#[test]
fn each_peer_learns_within_its_own_limit() {
    let mut hs = Hosts::new(1);
    hs.switch(1, "ov", 42, &["--max-learned", "4"]);
    let a = hs.ns(1, "ov", "1a", "10.88.0.11");
    let x1 = hs.vtep(8, "42", "10.88.0.98");
    let x2 = hs.vtep(9, "42", "10.88.0.99");
    hs.on(1, &["peer", "add", "10.77.0.8", "--switch", "ov"]);
    hs.on(1, &["peer", "add", "10.77.0.9", "--switch", "ov"]);
    let at = |peer: &str| hs.fdb(1, "ov").iter().filter(|(_, p)| p.as_deref() == Some(peer)).count();
    let macs = |first: u8, n: u8| -> Vec<String> {
        (first..first + n)
            .map(|i| experimental_frame("ff:ff:ff:ff:ff:ff", &format!("02:00:00:00:08:{i:02x}")))
            .collect()
    };
    let before = counter(&hs.tunnel_stats(1, "ov", 42), "mac_limit").unwrap();

    let monitor = hs.monitor(1, "ov");
    x1.send(&macs(0, 12));
    let events = drops(monitor);
    assert_eq!(at("10.77.0.8"), 4, "stations learned at the first peer: {:?}", hs.fdb(1, "ov"));
    let refused = counter(&hs.tunnel_stats(1, "ov", 42), "mac_limit").unwrap() - before;
    assert_eq!(refused, 8, "new stations over the first peer's limit counted on the tunnel port");
    let named = events.iter().filter(|v| v["reason"] == "mac-limit" && v["namespace"] == "vxlan42").count();
    assert!(named >= 1, "no mac-limit drop on the tunnel port in the monitor's output: {events:#?}");

    // The other peer is not locked out by the first one's stations.
    assert!(ping(&x2.ns, "10.88.0.11", 2), "the second peer was locked out by the first one's stations");
    assert_eq!(at("10.77.0.9"), 1, "{:?}", hs.fdb(1, "ov"));
    assert!(ping(&a, "10.88.0.99", 1));
    // `peer list` shows each peer's share used.
    let learned = |peer: &str| {
        let v = hs.json_on(1, &["peer", "list", "--switch", "ov"]);
        let row = v.as_array().unwrap().iter().find(|r| r["peer"] == peer).cloned();
        row.unwrap_or_else(|| panic!("no {peer} in {v}"))["learned"].clone()
    };
    assert_eq!((learned("10.77.0.8"), learned("10.77.0.9")), (Value::from(4), Value::from(1)));

    // Removed and added again: the first peer's stations are forgotten and its window is new.
    hs.on(1, &["peer", "del", "10.77.0.8", "--switch", "ov"]);
    hs.on(1, &["peer", "add", "10.77.0.8", "--switch", "ov"]);
    x1.send(&macs(0x20, 3));
    assert_eq!(at("10.77.0.8"), 3, "a peer added again starts with a fresh window: {:?}", hs.fdb(1, "ov"));
    assert_eq!(learned("10.77.0.8"), Value::from(3));

    // A switch pinned without the maps this check added (as an older binary made it) still
    // takes ports and peers, gives them back, and counts as healthy.
    let pins = format!("/sys/fs/bpf/switch/@{}/ov", hs.hosts[0]);
    for map in ["BOUND_IP", "PEER_LEARNED"] {
        let pin = format!("{pins}/{map}");
        assert!(std::path::Path::new(&pin).exists(), "{pin} not pinned");
        std::fs::remove_file(&pin).unwrap();
    }
    let c = hs.ns(1, "ov", "1c", "10.88.0.13");
    hs.on(1, &["peer", "del", "10.77.0.8", "--switch", "ov"]);
    hs.on(1, &["peer", "add", "10.77.0.8", "--switch", "ov"]);
    hs.on(1, &["up", "--switch", "ov", "--vxlan", "42", "--underlay", "ul0", "--max-learned", "4"]);
    assert_eq!(learned("10.77.0.9"), Value::Null, "a window shown without the map");
    assert!(ping(&c, "10.88.0.11", 1) && ping(&x2.ns, "10.88.0.13", 1), "the switch stopped working");
    hs.on(1, &["ns", "del", &c]);
    hs.on(1, &["down", "--switch", "ov"]);
    hs.switches.clear();
    assert!(!std::path::Path::new(&pins).exists(), "pins left: {pins}");
}

/// What has no tunnel says so, and bad input changes nothing.
#[test]
fn tunnels_refuse_what_they_cannot_do() {
    let sb = Sandbox::new();
    let sw = sb.name("sw");
    for dp in ["xdp", "userspace", "bridge"] {
        let e = fails(&["up", "--switch", &sw, "--datapath", dp, "--vxlan", "42", "--underlay", "lo"], 2);
        assert!(e.contains("no tunnel ports") && e.contains("tc"), "{dp}: {e}");
    }
    let e = fails(&["up", "--switch", &sw, "--vxlan", "0", "--underlay", "lo"], 2);
    assert!(e.contains("VNI"), "{e}");
    let e = fails(&["up", "--switch", &sw, "--vxlan", "16777216", "--underlay", "lo"], 2);
    assert!(e.contains("VNI"), "{e}");
    let e = fails(&["up", "--switch", &sw, "--vxlan", "42", "--underlay", &sb.name("nope")], 2);
    assert!(e.contains("no such interface"), "{e}");
    let r = switch(&["up", "--switch", &sw, "--vxlan", "42"]);
    assert_eq!(r.code, 2, "--vxlan without --underlay: {r:?}");
    assert!(json(&["list"]).as_array().unwrap().iter().all(|s| s["name"] != sw.as_str()), "a switch was made");

    // Peers need a tunnel, and a sensible address.
    let mut hs = Hosts::new(1);
    hs.switch(1, "plain", 7, &[]);
    let h = hs.hosts[0].clone();
    let e = fails(&["--host-netns", &h, "peer", "add", "10.77.0.1", "--switch", "plain"], 2);
    assert!(e.contains("own VTEP"), "{e}");
    for bad in ["0.0.0.0", "255.255.255.255", "224.0.0.1", "127.0.0.1"] {
        let e = fails(&["--host-netns", &h, "peer", "add", bad, "--switch", "plain"], 2);
        assert!(e.contains("peer address"), "{bad}: {e}");
    }
    // The same VNI twice on one host is refused before anything is made.
    let e = fails(&["--host-netns", &h, "up", "--switch", "again", "--vxlan", "7", "--underlay", "ul0"], 2);
    assert!(e.contains("VNI") && e.contains("plain"), "{e}");
    hs.on(1, &["up", "--switch", "flat"]);
    hs.switches.push((1, "flat".into()));
    let e = fails(&["--host-netns", &h, "peer", "add", "10.77.0.2", "--switch", "flat"], 2);
    assert!(e.contains("has no tunnel"), "{e}");
    // A running switch is not given another tunnel behind its back.
    let e = fails(&["--host-netns", &h, "up", "--switch", "plain", "--vxlan", "8", "--underlay", "ul0"], 2);
    assert!(e.contains("vxlan 7"), "{e}");
}

/// `up --vxlan` killed half-way converges when run again, and a step failing half-way rolls
/// back everything (the VXLAN device and the gateway pair included).
#[test]
fn an_interrupted_tunnel_converges() {
    let mut hs = Hosts::new(1);
    let h = hs.hosts[0].clone();
    let up = [
        "--host-netns",
        h.as_str(),
        "up",
        "--switch",
        "ov",
        "--vxlan",
        "42",
        "--underlay",
        "ul0",
        "--gateway",
        "10.88.0.254/24",
    ];
    let links = || host("ip", &["-n", &h, "-o", "link", "show"]);
    let r = switch_env(&up, &[("SWITCH_FAILPOINT", "up:made:error")]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(!links().contains(" vov-"), "the VXLAN device stayed after a rollback: {}", links());
    assert!(!links().contains(" gov-"), "the gateway pair stayed after a rollback: {}", links());
    assert!(hs.json_on(1, &["list"]).as_array().unwrap().is_empty(), "the switch record stayed");
    hs.switches.push((1, "ov".into()));
    let r = switch_env(&up, &[("SWITCH_FAILPOINT", "up:made")]);
    assert_ne!(r.code, 0, "the failpoint did not abort: {r:?}");
    hs.on(1, &up[2..]);
    hs.on(1, &up[2..]);
    let ports = hs.json_on(1, &["ports", "--switch", "ov"]);
    let tunnel: Vec<&Value> = ports.as_array().unwrap().iter().filter(|p| p["kind"] == "tunnel").collect();
    assert_eq!(tunnel.len(), 1, "{ports}");
    assert_eq!(tunnel[0]["ready"], true, "{ports}");
    hs.on(1, &["peer", "add", "10.77.0.2", "--switch", "ov"]);
    let a = hs.ns(1, "ov", "1a", "10.88.0.11");
    assert!(exec(&a, &["ip", "-o", "link", "show", "eth0"]).stdout.contains("mtu 1450"));
    assert_eq!(links().matches(" vov-").count(), 1, "{}", links());
}
