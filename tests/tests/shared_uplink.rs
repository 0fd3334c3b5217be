//! Several switches on one uplink (two podman networks with published ports do this): each
//! switch's NAT programs sit in the uplink's TCX chain one after the other, and each must pass
//! on what is not its own, so that every switch still refuses unsolicited traffic routed to its
//! segment and masquerades its namespaces' connections, whatever the order of `up`, and when
//! one of them goes while the others run.
//!
//! ```text
//!   outside ns (172.31.N.2, default route via the host: it can address every segment)
//!      ──veth── uplink (172.31.N.1) ── TCX: [nat of sw A] → [nat of sw B] → [nat of sw C] → stack
//!                      host routing ── gA (10.230.0.254) ── switch A ── 10.230.0.10
//!                                   ── gB (10.231.0.254) ── switch B ── 10.231.0.10
//!                                   ── gC (10.232.0.254) ── switch C ── 10.232.0.10
//! ```
use std::process::Command;

use switch_tests::{
    outside::{Outside, PEER_SERVER},
    *,
};

/// Connects to HOST:PORT and prints what it is told, or "no connection".
const CLIENT: &str = r#"
import socket, sys
host, port = sys.argv[1].split(":")
try:
    c = socket.create_connection((host, int(port)), timeout=2); print(c.recv(100).decode())
except OSError:
    print("no connection")
"#;

/// A TCP server answering "inside" to every connection, until killed.
const INSIDE_SERVER: &str = r#"
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080)); s.listen(8); print("ready", flush=True)
while True:
    c, _ = s.accept(); c.sendall(b"inside"); c.close()
"#;

/// One switch of the test: its name, its namespace, and the namespace's server.
struct Segment {
    sw: String,
    ns: String,
    net: u8,
    /// Serves until the segment is dropped.
    _server: Reaped,
}

/// Switch `name` on 10.NET.0.0/24 (gateway .254) with `uplink` (or none: `forward add` then
/// adopts the host's default route interface), namespace `n<net>` at .10 serving on 8080.
fn segment(sb: &mut Sandbox, name: &str, net: u8, uplink: Option<&str>, host: &[&str]) -> Segment {
    let gw = format!("10.{net}.0.254/24");
    let mut args: Vec<&str> = host.to_vec();
    args.extend(["up", "--switch", name, "--datapath", "tc", "--gateway", &gw]);
    if let Some(u) = uplink {
        args.extend(["--uplink", u]);
    }
    ok(&args);
    if host.is_empty() {
        sb.adopt(name);
    }
    let ns = sb.name(&format!("n{net}"));
    let ip = format!("10.{net}.0.10/24");
    let mut a: Vec<&str> = host.to_vec();
    a.extend(["ns", "add", &ns, "--ip", &ip, "--switch", name]);
    ok(&a);
    let server = spawn_until(
        Command::new(switch_bin()).args(["ns", "exec", &ns, "--", "python3", "-c", INSIDE_SERVER]),
        "ready",
    );
    Segment { sw: name.to_owned(), ns, net, _server: server }
}

/// The outside cannot reach `s`'s namespace (routed straight to it: TCP and ping), the switch
/// counts what it refused, and the namespace's own connection out leaves masqueraded behind
/// the uplink's address and gets its answer.
fn holds(out: &Outside, uplink_addr: &str, s: &Segment, host: &[&str]) {
    let drops = |sw: &str| {
        let mut a: Vec<&str> = host.to_vec();
        a.extend(["stats", "--switch", sw]);
        json(&a)["switch"]["unsolicited_routed"].as_u64().expect("a counter")
    };
    let before = drops(&s.sw);
    let target = format!("10.{}.0.10:8080", s.net);
    let r = out.python(CLIENT, &[&target]);
    assert_eq!(r.stdout.trim(), "no connection", "switch {}: the outside reached its namespace: {r:?}", s.sw);
    assert!(!ping(&out.ns, &format!("10.{}.0.10", s.net), 2), "switch {}: ping from outside got in", s.sw);
    let refused = drops(&s.sw) - before;
    assert!(refused >= 3, "switch {}: {refused} unsolicited packets counted", s.sw);

    let port = format!("{}", 9000 + u16::from(s.net));
    let peer = out.spawn_python(PEER_SERVER, &[&port]);
    let outside_addr = format!("{}:{port}", out_addr(out));
    let r = exec(&s.ns, &["python3", "-c", CLIENT, &outside_addr]);
    let masqueraded = r.stdout.trim().starts_with(&format!("peer {uplink_addr}:"));
    assert!(masqueraded, "switch {}: not masqueraded: {r:?}", s.sw);
    let _ = peer.take().wait_with_output();
}

/// The outside namespace's own address (172.31.N.2, N from its uplink's address).
fn out_addr(out: &Outside) -> String {
    let v = host("ip", &["-n", &out.ns, "-4", "-o", "addr", "show", "dev", "eth0"]);
    v.split_whitespace().skip_while(|w| *w != "inet").nth(1).and_then(|c| c.split('/').next()).unwrap().to_owned()
}

#[test]
#[ignore = "needs root"]
fn two_and_three_switches_on_one_uplink_each_keep_their_segment() {
    let mut sb = Sandbox::new();
    let out = Outside::new(&sb, 230);
    let up = "172.31.230.1";
    let forwarding = format!("/proc/sys/net/ipv4/conf/{}/forwarding", out.uplink);
    let host_value = std::fs::read_to_string(&forwarding).unwrap();
    let (a, b) = (sb.name("sa"), sb.name("sb"));
    // A first, then B: B's programs come second in the chain.
    let sa = segment(&mut sb, &a, 230, Some(&out.uplink), &[]);
    let sb_ = segment(&mut sb, &b, 231, Some(&out.uplink), &[]);
    holds(&out, up, &sa, &[]);
    holds(&out, up, &sb_, &[]);
    // The other order: B's programs first.
    drop((sa, sb_));
    ok(&["down", "--switch", &a]);
    ok(&["down", "--switch", &b]);
    let sb_ = segment(&mut sb, &b, 231, Some(&out.uplink), &[]);
    let sa = segment(&mut sb, &a, 230, Some(&out.uplink), &[]);
    holds(&out, up, &sa, &[]);
    holds(&out, up, &sb_, &[]);
    // A third, then the one in the middle of the chain goes while the others run.
    let c = sb.name("sc");
    let sc = segment(&mut sb, &c, 232, Some(&out.uplink), &[]);
    for s in [&sa, &sb_, &sc] {
        holds(&out, up, s, &[]);
    }
    drop(sa);
    ok(&["down", "--switch", &a]);
    for s in [&sb_, &sc] {
        holds(&out, up, s, &[]);
    }
    // The uplink's forwarding goes back to the host's value with the last switch, not before.
    drop((sb_, sc));
    ok(&["down", "--switch", &b]);
    assert_eq!(std::fs::read_to_string(&forwarding).unwrap().trim(), "1", "C still needs forwarding");
    ok(&["down", "--switch", &c]);
    assert_eq!(std::fs::read_to_string(&forwarding).unwrap(), host_value, "the uplink's forwarding given back");
}

/// A "host" network namespace whose default route leaves through the outside's veth:
/// `forward add` without `--uplink` adopts that interface there, for every switch. Its
/// switches go down and the namespace goes on drop; nothing of it touches the machine's own
/// interfaces.
struct HostNs {
    name: String,
    switches: Vec<String>,
    out: Outside,
}

impl Drop for HostNs {
    fn drop(&mut self) {
        for sw in &self.switches {
            let _ = switch(&["--host-netns", &self.name, "down", "--switch", sw]);
        }
        let _ = std::fs::remove_dir_all(format!("/run/switch/@{}", self.name));
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

#[test]
#[ignore = "needs root"]
fn switches_adopting_the_default_uplink_each_keep_their_segment() {
    let mut sb = Sandbox::new();
    let h = sb.name("h");
    host("ip", &["netns", "add", &h]);
    // The outside's veth is made on the machine, then its host end is moved into h.
    let out = Outside::new(&sb, 234);
    let (a, b) = (sb.name("da"), sb.name("db"));
    let hns = HostNs { name: h.clone(), switches: vec![a.clone(), b.clone()], out };
    let (o, u) = (&hns.out, hns.out.uplink.clone());
    host("ip", &["link", "set", &u, "netns", &h]);
    host("ip", &["-n", &h, "addr", "add", "172.31.234.1/24", "dev", &u]);
    host("ip", &["-n", &h, "link", "set", &u, "up"]);
    host("ip", &["-n", &h, "link", "set", "lo", "up"]);
    host("ip", &["-n", &h, "route", "add", "default", "via", "172.31.234.2"]);
    let hostns = ["--host-netns", h.as_str()];
    let sa = segment(&mut sb, &a, 235, None, &hostns);
    let sb_ = segment(&mut sb, &b, 236, None, &hostns);
    // A forward on each adopts the default route's interface as the switch's uplink.
    for (s, port) in [(&sa, "12350"), (&sb_, "12360")] {
        let to = format!("{}:8080", s.ns);
        let mut args = hostns.to_vec();
        args.extend(["forward", "add", "--proto", "tcp", "--host-port", port, "--to", &to, "--switch", &s.sw]);
        ok(&args);
        let r = o.python(CLIENT, &[&format!("172.31.234.1:{port}")]);
        assert_eq!(r.stdout.trim(), "inside", "the forward of {}: {r:?}", s.sw);
    }
    let ports = |sw: &str| {
        let mut args = hostns.to_vec();
        args.extend(["ports", "--switch", sw]);
        json(&args)
    };
    for s in [&sa, &sb_] {
        let v = ports(&s.sw);
        let adopted = v.as_array().unwrap().iter().any(|p| p["kind"] == "uplink" && p["interface"] == u.as_str());
        assert!(adopted, "switch {} did not adopt {u}: {v}", s.sw);
    }
    holds(o, "172.31.234.1", &sa, &hostns);
    holds(o, "172.31.234.1", &sb_, &hostns);
    drop(sa);
    let mut args = hostns.to_vec();
    args.extend(["down", "--switch", &a]);
    ok(&args);
    holds(o, "172.31.234.1", &sb_, &hostns);
    drop(sb_);
    let mut args = hostns.to_vec();
    args.extend(["down", "--switch", &b]);
    ok(&args);
    let sysctl = format!("/proc/sys/net/ipv4/conf/{u}/forwarding");
    let r = host("ip", &["netns", "exec", &h, "cat", &sysctl]);
    assert_eq!(r.trim(), "0", "the adopted uplink's forwarding given back");
    drop(hns);
}
