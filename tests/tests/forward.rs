//! Port forwarding from an uplink to namespaces, in eBPF: clients in an "outside" namespace
//! reach servers in switch namespaces through the host's uplink address, and the servers see
//! the clients' real addresses.
//!
//! ```text
//!   outside ns (client, 172.31.N.2) ──veth── uN… (uplink, 172.31.N.1) ── host routing
//!        ── gateway (10.N.0.254) ── switch ── web ns (10.N.0.10: HTTP :80, UDP echo :53)
//! ```
use std::{
    collections::BTreeSet,
    process::{Command, Stdio},
};

use switch::sys::nat_tables::{self, Family};
use switch_common::nat::{CT_CAPACITY, MASQ_BLOCKS, MASQ_SHARE_BLOCKS};
use switch_tests::{
    outside::{Outside, PEER_SERVER},
    *,
};

const PEER_CLIENT: &str = r#"
import socket, sys
host, port = sys.argv[1].split(":")
c = socket.create_connection((host, int(port)), timeout=3); print(c.recv(100).decode())
"#;

/// A threaded HTTP server answering "client <address>", and a UDP echo that appends the
/// sender's address, in `ns`.
const SERVERS: &str = r#"
import http.server, socket, socketserver, sys, threading
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b = ("client " + self.client_address[0]).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(b))); self.end_headers(); self.wfile.write(b)
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True; request_queue_size = 128; allow_reuse_address = True
for port in sys.argv[1:]:
    threading.Thread(target=S(("0.0.0.0", int(port)), H).serve_forever, daemon=True).start()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 53))
def echo():
    while True:
        d, a = u.recvfrom(2048); u.sendto(d + b" from " + a[0].encode(), a)
threading.Thread(target=echo, daemon=True).start()
e = socket.socket(); e.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); e.bind(("0.0.0.0", 7)); e.listen(8)
def serve_echo(c):
    while True:
        d = c.recv(4096)
        if not d: break
        c.sendall(d)
def accept():
    while True:
        c, _ = e.accept(); threading.Thread(target=serve_echo, args=(c,), daemon=True).start()
threading.Thread(target=accept, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"#;

/// The servers, killed when dropped: also when a test fails half-way, where they would
/// otherwise outlive their namespace.
fn start_servers(ns: &str, http_ports: &[&str]) -> Reaped {
    let mut args = vec!["ns", "exec", ns, "--", "python3", "-c", SERVERS];
    args.extend_from_slice(http_ports);
    spawn_until(Command::new(switch_bin()).args(&args).stderr(Stdio::null()), "ready")
}

const HTTP_GET: &str = r#"
import sys, urllib.request
print(urllib.request.urlopen(f"http://{sys.argv[1]}/", timeout=3).read().decode())
"#;

const UDP_ASK: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
host, port = sys.argv[1].split(":")
s.sendto(b"ping", (host, int(port))); d, a = s.recvfrom(2048); print(d.decode(), a[0], a[1])
"#;

const MANY: &str = r#"
import asyncio, sys
host, port, total, width = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
async def one(sem):
    async with sem:
        r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
        w.write(b"GET / HTTP/1.0\r\n\r\n"); await w.drain()
        body = await asyncio.wait_for(r.read(), 5); w.close()
        return b"client 172.31." in body
async def main():
    sem = asyncio.Semaphore(width)
    res = await asyncio.gather(*[one(sem) for _ in range(total)], return_exceptions=True)
    print(sum(1 for x in res if x is True))
asyncio.run(main())
"#;

/// A connection from the outside (`LONG`) that is established and then waits: `finish`
/// makes it talk once more and returns what came back.
struct LongConnection {
    child: Reaped,
    reader: std::io::BufReader<std::process::ChildStdout>,
}

impl LongConnection {
    fn open(out: &Outside, addr: &str, port: &str) -> Self {
        let mut child = spawn_until(
            Command::new("ip")
                .args(["netns", "exec", &out.ns, "python3", "-c", LONG, addr, port])
                .stdin(Stdio::piped()),
            "connected",
        );
        let reader = std::io::BufReader::new(child.stdout.take().unwrap());
        Self { child, reader }
    }

    fn finish(mut self) -> String {
        std::io::Write::write_all(self.child.stdin.as_mut().unwrap(), b"\n").unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut self.reader, &mut line).unwrap();
        let _ = self.child.wait();
        line.trim().to_owned()
    }
}

/// An established connection that keeps talking after its rule is removed.
const LONG: &str = r#"
import socket, sys, time
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
c.sendall(b"one"); assert c.recv(16) == b"one"
print("connected", flush=True)
sys.stdin.readline()
c.sendall(b"two"); print(c.recv(16).decode(), flush=True)
"#;

fn forwarding_end_to_end(dp: &str, net: u8) {
    let mut sb = Sandbox::new();
    let out = Outside::new(&sb, net);
    let clean = Snapshot::take(&sb.prefix);
    let gw = format!("10.{net}.0.254/24");
    let sw = sb.switch("sw", dp, &["--gateway", &gw, "--uplink", &out.uplink]);
    assert_eq!(forwarding(&out.uplink), "1", "forwarding is on where forwarded traffic arrives");
    let web = sb.port(&sw, "web", &format!("10.{net}.0.10/24"), &[]);
    one_table_of_ports_of_every_kind(&sw, &web, &out.uplink);
    let servers = start_servers(&web, &["80", "9001"]);
    let f = Forwards::add(net, &sw, &web);

    // TCP: the server sees the outside client's real address.
    let r = out.python(HTTP_GET, &[&format!("{}:{}", f.uplink_ip, f.http)]);
    assert_eq!(r.stdout.trim(), format!("client 172.31.{net}.2"), "{r:?}");
    // UDP: answered from the uplink address and port, with the real client address seen.
    let r = out.python(UDP_ASK, &[&format!("{}:{}", f.uplink_ip, f.udp)]);
    assert_eq!(r.stdout.trim(), format!("ping from 172.31.{net}.2 {} {}", f.uplink_ip, f.udp), "{r:?}");
    // A port range: the middle one reaches the server's 9001.
    let r = out.python(HTTP_GET, &[&format!("{}:{}", f.uplink_ip, f.port(91))]);
    assert_eq!(r.stdout.trim(), format!("client 172.31.{net}.2"), "{r:?}");

    the_host_reaches_the_forwards(&f);
    let cli = sb.port(&sw, "cli", &format!("10.{net}.0.11/24"), &[]);
    the_namespaces_reach_the_forwards_and_outside(&f, &out, &cli, &web);
    many_connections_and_a_removed_rule(&f, &out, &sw);

    // The closed connections drain from the table (closing timeout: 10 s).
    std::thread::sleep(std::time::Duration::from_secs(11));
    let rows = json(&["forward", "list", "--switch", &sw]);
    let row = rows.as_array().unwrap().iter().find(|r| r["host_ports"] == f.http.as_str()).unwrap().clone();
    assert_eq!(row["active"], 0, "{row}");

    drop(servers);
    ok(&["down", "--name", &sw]);
    assert!(json(&["forward", "list"]).as_array().unwrap().iter().all(|r| r["switch"] != sw.as_str()));
    // The uplink is still there: its sysctl is back to what it was, and no link is left.
    assert_eq!(Snapshot::take(&sb.prefix), clean, "down left something on the uplink");
    drop(out);
    assert_eq!(Snapshot::take(&sb.prefix), Snapshot::take("\u{0}never"), "forwarding left something behind");
}

/// One table of ports of every kind: namespace `web` and the gateway are switched (slots),
/// the uplink is not.
fn one_table_of_ports_of_every_kind(sw: &str, web: &str, uplink: &str) {
    let ports = json(&["ports", "--switch", sw]);
    let kinds: Vec<(&str, &str, bool)> = ports
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["kind"].as_str().unwrap(), r["owner"].as_str().unwrap(), r["slot"].is_u64()))
        .collect();
    assert_eq!(kinds, [("namespace", web, true), ("gateway", "host", true), ("uplink", uplink, false)]);
}

/// The forwards of `forwarding_end_to_end` on network `net`, to the servers of `web`.
struct Forwards {
    net: u8,
    /// The uplink's address.
    uplink_ip: String,
    /// Host ports: TCP to web's 80, UDP to its 53, TCP to its echo on 7.
    http: String,
    udp: String,
    echo: String,
}

impl Forwards {
    /// Adds the forwards on switch `sw`: HTTP, UDP, a range of three ports to 9000-9002, and
    /// the echo.
    fn add(net: u8, sw: &str, web: &str) -> Self {
        let f = Self {
            net,
            uplink_ip: format!("172.31.{net}.1"),
            http: Self::host_port(net, 80),
            udp: Self::host_port(net, 53),
            echo: Self::host_port(net, 7),
        };
        let range = format!("{}-{}", f.port(90), f.port(92));
        let (http, udp, echo) = (&f.http, &f.udp, &f.echo);
        ok(&["forward", "add", "--proto", "tcp", "--host-port", http, "--to", &format!("{web}:80"), "--switch", sw]);
        ok(&["forward", "add", "--proto", "udp", "--host-port", udp, "--to", &format!("{web}:53"), "--switch", sw]);
        let to = format!("{web}:9000-9002");
        ok(&["forward", "add", "--proto", "tcp", "--host-port", &range, "--to", &to, "--switch", sw]);
        ok(&["forward", "add", "--proto", "tcp", "--host-port", echo, "--to", &format!("{web}:7"), "--switch", sw]);
        f
    }

    /// Host ports are host-wide (127.0.0.1 means them for every switch), so each test has its
    /// own: `x` above the network's hundred.
    fn host_port(net: u8, x: u32) -> String {
        (u32::from(net) * 100 + x).to_string()
    }

    fn port(&self, x: u32) -> String {
        Self::host_port(self.net, x)
    }
}

/// Host-local: the host itself, through 127.0.0.1 and through the uplink address (socket
/// hooks: no proxy). It comes from the gateway address, the host's side of the segment.
fn the_host_reaches_the_forwards(f: &Forwards) {
    let (net, http, udp) = (f.net, &f.http, &f.udp);
    let gw_ip = format!("10.{net}.0.254");
    for addr in ["127.0.0.1", f.uplink_ip.as_str()] {
        let o = Command::new("python3").args(["-c", HTTP_GET, &format!("{addr}:{http}")]).output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            format!("client {gw_ip}"),
            "host-local via {addr}: {o:?}"
        );
    }
    let o = Command::new("python3").args(["-c", UDP_ASK, &format!("127.0.0.1:{udp}")]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), format!("ping from {gw_ip} 127.0.0.1 {udp}"), "{o:?}");
}

/// Hairpin: namespaces of the switch (`cli`, and the target `web` itself) reach the forward
/// on the uplink address, and the server sees their own addresses. Masquerade: `cli` reaching
/// a server outside arrives from the uplink address.
fn the_namespaces_reach_the_forwards_and_outside(f: &Forwards, out: &Outside, cli: &str, web: &str) {
    let (net, uplink_ip, http, udp) = (f.net, &f.uplink_ip, &f.http, &f.udp);
    for (ns, ip) in [(cli, format!("10.{net}.0.11")), (web, format!("10.{net}.0.10"))] {
        let r = exec(ns, &["python3", "-c", HTTP_GET, &format!("{uplink_ip}:{http}")]);
        assert_eq!(r.stdout.trim(), format!("client {ip}"), "hairpin from {ns}: {r:?}");
    }
    let r = exec(cli, &["python3", "-c", UDP_ASK, &format!("{uplink_ip}:{udp}")]);
    assert_eq!(r.stdout.trim(), format!("ping from 10.{net}.0.11 {uplink_ip} {udp}"), "{r:?}");
    let peer = out.spawn_python(PEER_SERVER, &["8000"]);
    let r = exec(cli, &["python3", "-c", PEER_CLIENT, &format!("172.31.{net}.2:8000")]);
    assert!(r.stdout.trim().starts_with(&format!("peer {uplink_ip}:")), "masquerade: {r:?}");
    let _ = peer.take().wait_with_output();
}

/// 1000 connections, 50 at a time, all succeed and are counted; then removing a rule: an
/// established connection finishes, a new one is not forwarded.
fn many_connections_and_a_removed_rule(f: &Forwards, out: &Outside, sw: &str) {
    let (uplink_ip, http, echo) = (&f.uplink_ip, &f.http, &f.echo);
    let r = out.python(MANY, &[uplink_ip, http, "1000", "50"]);
    assert_eq!(r.stdout.trim(), "1000", "{r:?}");
    let rows = json(&["forward", "list", "--switch", sw]);
    let row = rows.as_array().unwrap().iter().find(|r| r["host_ports"] == http.as_str()).unwrap().clone();
    assert!(row["connections"].as_u64().unwrap() >= 1001, "{row}");
    assert!(row["packets"].as_u64().unwrap() > 5000, "{row}");

    let long = LongConnection::open(out, uplink_ip, echo);
    ok(&["forward", "del", "--proto", "tcp", "--host-port", echo, "--switch", sw]);
    assert_eq!(long.finish(), "two", "the established connection broke when its rule went");
    let r = out.python(HTTP_GET, &[&format!("{uplink_ip}:{echo}")]);
    assert_ne!(r.code, 0, "a new connection was forwarded after the rule was removed");
}

#[test]
fn tc_forwarding_end_to_end() {
    forwarding_end_to_end("tc", 101);
}

#[test]
fn xdp_forwarding_end_to_end() {
    forwarding_end_to_end("xdp", 102);
}

#[test]
fn forward_bad_input_is_refused_and_changes_nothing() {
    let mut sb = Sandbox::new();
    let out = Outside::new(&sb, 103);
    let sw = sb.switch("sw", "tc", &["--gateway", "10.103.0.254/24", "--uplink", &out.uplink]);
    let web = sb.port(&sw, "web", "10.103.0.10/24", &[]);
    let plain = sb.switch("plain", "tc", &[]);
    let elsewhere = sb.port(&plain, "else", "10.104.0.10/24", &[]);
    let bridge = sb.switch("br", "bridge", &[]);
    ok(&["forward", "add", "--proto", "tcp", "--host-port", "10380", "--to", &format!("{web}:80"), "--switch", &sw]);
    // A host process listening on a port: forwarding it would hide it.
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let busy = listener.local_addr().unwrap().port().to_string();
    let to80 = format!("{web}:80");
    let (else80, web80_82) = (format!("{elsewhere}:80"), format!("{web}:80-82"));
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--proto", "tcp", "--host-port", "10380", "--to", &to80, "--switch", &sw], "already forwarded"),
        (vec!["--proto", "tcp", "--host-port", "10379-10381", "--to", &to80, "--switch", &sw], "host ports but"),
        (vec!["--proto", "tcp", "--host-port", &busy, "--to", &to80, "--switch", &sw], "host process listens"),
        (vec!["--proto", "tcp", "--host-port", "0", "--to", &to80, "--switch", &sw], "port 0"),
        (vec!["--proto", "tcp", "--host-port", "70000", "--to", &to80, "--switch", &sw], "65535"),
        (vec!["--proto", "tcp", "--host-port", "9000-9001", "--to", &web80_82, "--switch", &sw], "host ports but"),
        (vec!["--proto", "tcp", "--host-port", "10381", "--to", "nosuchns:80", "--switch", &sw], "not managed"),
        (vec!["--proto", "tcp", "--host-port", "10381", "--to", &else80, "--switch", &sw], "not a port of switch"),
        (vec!["--proto", "tcp", "--host-port", "10381", "--to", &else80, "--switch", &plain], "no uplink"),
        (vec!["--proto", "tcp", "--host-port", "10381", "--to", &to80, "--switch", &bridge], "runs in eBPF"),
        (vec!["--proto", "sctp", "--host-port", "10381", "--to", &to80, "--switch", &sw], "invalid value"),
    ];
    for (args, expect) in cases {
        let before = (Snapshot::take(&sb.prefix), json(&["forward", "list", "--switch", &sw]));
        let mut a = vec!["forward", "add"];
        a.extend_from_slice(&args);
        let r = switch(&a);
        assert_eq!(r.code, 2, "{a:?}: {r:?}");
        assert!(
            r.stderr.starts_with("error: ") && r.stderr.contains(expect),
            "{a:?}: expected {expect:?} in {}",
            r.stderr
        );
        assert_eq!(
            (Snapshot::take(&sb.prefix), json(&["forward", "list", "--switch", &sw])),
            before,
            "{a:?} changed something"
        );
    }
    drop(listener);
    let e = fails(&["forward", "del", "--proto", "udp", "--host-port", "10380", "--switch", &sw], 2);
    assert!(e.contains("not forwarded"), "{e}");
    // --uplink needs a gateway and an eBPF datapath.
    let e = fails(&["up", "--name", &sb.name("x"), "--uplink", &out.uplink], 2);
    assert!(e.contains("--gateway"), "{e}");
    let e = fails(
        &[
            "up",
            "--name",
            &sb.name("x"),
            "--datapath",
            "userspace",
            "--gateway",
            "10.105.0.1/24",
            "--uplink",
            &out.uplink,
        ],
        2,
    );
    assert!(e.contains("eBPF"), "{e}");
    // Removing the target namespace removes its forwards.
    ok(&["ns", "del", &web]);
    assert!(json(&["forward", "list", "--switch", &sw]).as_array().unwrap().is_empty());
}

/// IPv4 forwarding of interface `dev`.
fn forwarding(dev: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{dev}/forwarding")).unwrap().trim().to_owned()
}

#[test]
fn down_gives_back_the_sysctls_it_changed() {
    let mut sb = Sandbox::new();
    let out = Outside::new(&sb, 107);
    let before = forwarding(&out.uplink);
    for (i, previous) in [before.as_str(), "1", "0"].into_iter().enumerate() {
        std::fs::write(format!("/proc/sys/net/ipv4/conf/{}/forwarding", out.uplink), previous).unwrap();
        let sw = sb.name(&format!("sw{i}"));
        sb.adopt(&sw);
        let up = ["up", "--switch", &sw, "--gateway", "10.107.0.254/24", "--uplink", &out.uplink];
        if i == 2 {
            // Killed once the uplink is set up: the record of the old value is already saved.
            let r = switch_env(&up, &[("SWITCH_FAILPOINT", "up:made")]);
            assert_eq!(r.code, 128 + libc::SIGABRT, "{r:?}");
        } else {
            ok(&up);
        }
        assert_eq!(forwarding(&out.uplink), "1");
        ok(&["down", "--switch", &sw]);
        assert_eq!(forwarding(&out.uplink), previous, "down did not give back what the uplink had");
    }
    std::fs::write(format!("/proc/sys/net/ipv4/conf/{}/forwarding", out.uplink), &before).unwrap();
}

/// Greets every connection with "peer ADDRESS:PORT", then echoes it line by line.
const GREETING_ECHO: &str = r#"
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(8); print("ready", flush=True)
def serve(c, a):
    c.sendall(f"peer {a[0]}:{a[1]}\n".encode())
    while True:
        d = c.recv(100)
        if not d: break
        c.sendall(d)
while True:
    c, a = s.accept(); threading.Thread(target=serve, args=(c, a), daemon=True).start()
"#;

/// Connects from source port ARGV[2] to ARGV[1], prints the greeting, then (with ARGV[3])
/// waits for a line on stdin and prints the echo of "still mine".
const BOUND_CLIENT: &str = r#"
import socket, sys
host, port = sys.argv[1].split(":")
c = socket.socket(); c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
c.bind(("0.0.0.0", int(sys.argv[2]))); c.settimeout(5); c.connect((host, int(port)))
f = c.makefile("r"); print(f.readline().strip(), flush=True)
if len(sys.argv) > 3:
    sys.stdin.readline(); c.sendall(b"still mine\n"); print(f.readline().strip(), flush=True)
"#;

#[test]
fn a_namespace_cannot_take_the_replies_of_a_host_connection() {
    use std::io::{BufRead as _, Write as _};
    let mut sb = Sandbox::new();
    let out = Outside::new(&sb, 108);
    let sw = sb.switch("sw", "tc", &["--gateway", "10.108.0.254/24", "--uplink", &out.uplink]);
    let cli = sb.port(&sw, "cli", "10.108.0.11/24", &[]);
    let mut server = out.spawn_python(GREETING_ECHO, &["8000"]);
    let (server_addr, port) = ("172.31.108.2:8000", "40108");
    // The host's own connection from the uplink address, source port P, stays open...
    let mut host = Reaped::new(
        Command::new("python3")
            .args(["-c", BOUND_CLIENT, server_addr, port, "wait"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut host_out = std::io::BufReader::new(host.stdout.take().unwrap());
    let mut line = String::new();
    host_out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), format!("peer 172.31.108.1:{port}"));
    // ...while a namespace connects to the same server from the same port P: it is
    // masqueraded from a port the host never uses, so the two never share a 5-tuple.
    let r = exec(&cli, &["python3", "-c", BOUND_CLIENT, server_addr, port]);
    let seen = r.stdout.trim().strip_prefix("peer 172.31.108.1:").unwrap_or_else(|| panic!("{r:?}")).to_owned();
    assert_ne!(seen, port, "the namespace's connection took the host's source port");
    // The host's connection still gets its own replies.
    writeln!(host.stdin.as_mut().unwrap()).unwrap();
    line.clear();
    host_out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "still mine", "the host's connection lost its replies");
    assert!(host.wait().unwrap().success());
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn ping_from_a_namespace_to_outside_is_masqueraded() {
    let mut sb = Sandbox::new();
    let out = Outside::new(&sb, 109);
    let sw = sb.switch("sw", "tc", &["--gateway", "10.109.0.254/24", "--uplink", &out.uplink]);
    let cli = sb.port(&sw, "cli", "10.109.0.11/24", &[]);
    // The outside has no route to the segment: only an answer to the uplink address, i.e. a
    // masqueraded ping, can come back.
    Command::new("ip").args(["-n", &out.ns, "route", "del", "default"]).status().unwrap();
    assert!(ping(&cli, "172.31.109.2", 3), "ping to the outside through masquerade");
    // The entry ages out like a UDP flow's; a later ping is masqueraded anew (packet tests
    // check the expiry itself).
    assert!(ping(&cli, "172.31.109.2", 2));
}

#[test]
fn no_masquerade_leaves_namespace_addresses_visible() {
    let mut sb = Sandbox::new();
    let out = Outside::new(&sb, 106);
    let sw = sb.switch("sw", "tc", &["--gateway", "10.106.0.254/24", "--uplink", &out.uplink, "--no-masquerade"]);
    let cli = sb.port(&sw, "cli", "10.106.0.11/24", &[]);
    let peer = out.spawn_python(PEER_SERVER, &["8000"]);
    let r = exec(&cli, &["python3", "-c", PEER_CLIENT, "172.31.106.2:8000"]);
    assert!(r.stdout.trim().starts_with("peer 10.106.0.11:"), "{r:?}");
    let _ = peer.take().wait_with_output();
}

/// The classic recipe's iptables rule, removed on drop.
struct IptablesRule(Vec<String>);

/// The host's nat tables as they were: iptables makes the table for the first rule and leaves
/// it (with connection tracking on) when the last one goes. Given back on drop.
struct NatTables(BTreeSet<Family>);

impl Drop for NatTables {
    fn drop(&mut self) {
        if let Err(e) = nat_tables::remove_unused(&self.0) {
            eprintln!("the nat table this test made stays: {e}");
        }
    }
}

impl Drop for IptablesRule {
    fn drop(&mut self) {
        let mut args: Vec<&str> = self.0.iter().map(String::as_str).collect();
        args[2] = "-D";
        let _ = Command::new("iptables").args(&args).status();
    }
}

/// The same client checks against the classic recipe (kernel bridge, bridge address,
/// iptables DNAT), so both are known to mean the same thing.
#[test]
fn classic_bridge_and_iptables_dnat_pass_the_same_checks() {
    let sb = Sandbox::new();
    let out = Outside::new(&sb, 107);
    let (br, web, host_if) = (format!("b{}", sb.prefix), sb.name("web"), format!("s{}", sb.prefix));
    struct Cleanup(String, String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["link", "del", &self.0]).status();
            let _ = Command::new("ip").args(["netns", "del", &self.1]).status();
        }
    }
    let _cleanup = Cleanup(br.clone(), web.clone());
    for args in [
        vec!["link", "add", &br, "type", "bridge"],
        vec!["addr", "add", "10.107.0.254/24", "dev", &br],
        vec!["link", "set", &br, "up"],
        vec!["netns", "add", &web],
        vec!["link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &web],
        vec!["link", "set", &host_if, "master", &br, "up"],
        vec!["-n", &web, "addr", "add", "10.107.0.10/24", "dev", "eth0"],
        vec!["-n", &web, "link", "set", "eth0", "up"],
        vec!["-n", &web, "link", "set", "lo", "up"],
        vec!["-n", &web, "route", "add", "default", "via", "10.107.0.254"],
    ] {
        host("ip", &args);
    }
    // Forwarding on the two interfaces involved only (not host-wide): they go with the test.
    for dev in [&out.uplink, &br] {
        std::fs::write(format!("/proc/sys/net/ipv4/conf/{dev}/forwarding"), "1").unwrap();
    }
    let rule = |proto: &str, from: &str, to: &str| {
        let args: Vec<String> = [
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-i",
            &out.uplink,
            "-p",
            proto,
            "--dport",
            from,
            "-j",
            "DNAT",
            "--to-destination",
            to,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        host("iptables", &args.iter().map(String::as_str).collect::<Vec<_>>());
        IptablesRule(args)
    };
    // Declared before the rules: dropped after them.
    let nat = NatTables(nat_tables::existing());
    let tcp = rule("tcp", "8080", "10.107.0.10:80");
    let udp = rule("udp", "5353", "10.107.0.10:53");
    let servers = start_servers(&web, &["80"]);
    let r = out.python(HTTP_GET, &["172.31.107.1:8080"]);
    assert_eq!(r.stdout.trim(), "client 172.31.107.2", "{r:?}");
    let r = out.python(UDP_ASK, &["172.31.107.1:5353"]);
    assert_eq!(r.stdout.trim(), "ping from 172.31.107.2 172.31.107.1 5353", "{r:?}");
    let r = out.python(MANY, &["172.31.107.1", "8080", "200", "50"]);
    assert_eq!(r.stdout.trim(), "200", "{r:?}");
    drop(servers);
    drop((tcp, udp));
    let before = nat.0.clone();
    drop(nat);
    assert_eq!(nat_tables::existing(), before, "the host's nat tables are not as they were");
}

/// Routed isolation: the outside has a route to the segment through the host (its default
/// route), yet only the published port reaches the namespace; what else it sends to the
/// segment is dropped and counted. A `--routable` segment takes it, and its replies are not
/// masqueraded.
#[test]
fn the_segment_is_unreachable_from_outside_except_through_forwards() {
    let (mut sb, out, sw, web) = world(116, &[], "web");
    let servers = start_servers(&web, &["80", "81"]);
    ok(&["forward", "add", "--proto", "tcp", "--host-port", "11680", "--to", &format!("{web}:80"), "--switch", &sw]);
    let r = out.python(HTTP_GET, &["172.31.116.1:11680"]);
    assert_eq!(r.stdout.trim(), "client 172.31.116.2", "the published port: {r:?}");
    let before = u64_of(&switch_drops(&sw)["unsolicited_routed"]);
    // Straight to the namespace: the published port's own target, an unpublished port, ping.
    for target in ["10.116.0.10:80", "10.116.0.10:81"] {
        let r = out.python(HTTP_GET, &[target]);
        assert_ne!(r.code, 0, "{target} reached from outside: {r:?}");
    }
    assert!(!ping(&out.ns, "10.116.0.10", 2), "ping into the segment from outside");
    let refused = u64_of(&switch_drops(&sw)["unsolicited_routed"]) - before;
    assert!(refused >= 4, "{refused} unsolicited packets counted");
    // The namespace's own connections out still get their answers.
    let peer = out.spawn_python(PEER_SERVER, &["8000"]);
    let r = exec(&web, &["python3", "-c", PEER_CLIENT, "172.31.116.2:8000"]);
    assert!(r.stdout.starts_with("peer 172.31.116.1:"), "masqueraded outbound: {r:?}");
    let _ = peer.take().wait_with_output();
    drop(servers);

    // Asked for: the segment is routable, and a connection from outside is answered from the
    // namespace's own address (not masqueraded as a new outbound connection).
    ok(&["down", "--switch", &sw]);
    let sw = sb.switch("sw", "tc", &["--gateway", "10.116.0.254/24", "--uplink", &out.uplink, "--routable"]);
    let web = sb.port(&sw, "web", "10.116.0.10/24", &[]);
    let servers = start_servers(&web, &["81"]);
    let r = out.python(HTTP_GET, &["10.116.0.10:81"]);
    assert_eq!(r.stdout.trim(), "client 172.31.116.2", "a routable segment: {r:?}");
    assert!(ping(&out.ns, "10.116.0.10", 2), "ping into a routable segment");
    drop(servers);
}

/// With `--no-masquerade` the segment's connections leave with their own addresses and are
/// tracked: their answers come back, a connection from outside does not get in.
#[test]
fn no_masquerade_still_keeps_the_segment_closed() {
    let (_sb, out, sw, cli) = world(117, &["--no-masquerade"], "cli");
    let peer = out.spawn_python(PEER_SERVER, &["8000"]);
    let r = exec(&cli, &["python3", "-c", PEER_CLIENT, "172.31.117.2:8000"]);
    assert!(r.stdout.trim().starts_with("peer 10.117.0.10:"), "{r:?}");
    let _ = peer.take().wait_with_output();
    assert!(ping(&cli, "172.31.117.2", 2), "the namespace's ping is answered");
    let servers = start_servers(&cli, &["80"]);
    let r = out.python(HTTP_GET, &["10.117.0.10:80"]);
    assert_ne!(r.code, 0, "an unsolicited connection got in: {r:?}");
    assert!(!ping(&out.ns, "10.117.0.10", 2), "ping into the segment from outside");
    assert!(u64_of(&switch_drops(&sw)["unsolicited_routed"]) >= 3);
    drop(servers);
}

/// Two switches with gateways and uplinks (so the host forwards for both): their segments do
/// not reach each other through the host, unless both are routable.
#[test]
fn two_segments_do_not_reach_each_other_through_the_host() {
    let mut sb = Sandbox::new();
    let (out_a, out_b) = (Outside::new(&sb, 118), Outside::new_named(&sb, 119, "ob"));
    let up = |sb: &mut Sandbox, name: &str, net: u8, out: &Outside, extra: &[&str]| {
        let gw = format!("10.{net}.0.254/24");
        let mut args = vec!["--gateway", gw.as_str(), "--uplink", out.uplink.as_str()];
        args.extend_from_slice(extra);
        let sw = sb.switch(name, "tc", &args);
        let ns = sb.port(&sw, &format!("n{net}"), &format!("10.{net}.0.10/24"), &[]);
        (sw, ns)
    };
    let (sw_a, a) = up(&mut sb, "sa", 118, &out_a, &[]);
    let (sw_b, b) = up(&mut sb, "sb", 119, &out_b, &[]);
    assert!(ping(&a, "10.118.0.254", 1) && ping(&b, "10.119.0.254", 1), "each reaches its gateway");
    assert!(!ping(&a, "10.119.0.10", 2), "a reached the other switch's segment");
    assert!(!ping(&b, "10.118.0.10", 2), "b reached the other switch's segment");
    assert!(u64_of(&switch_drops(&sw_b)["unsolicited_routed"]) >= 2);
    assert!(u64_of(&switch_drops(&sw_a)["unsolicited_routed"]) >= 2);
    ok(&["down", "--switch", &sw_a]);
    ok(&["down", "--switch", &sw_b]);
    let (_, a) = up(&mut sb, "sa", 118, &out_a, &["--routable"]);
    let (_, _b) = up(&mut sb, "sb", 119, &out_b, &["--routable"]);
    assert!(ping(&a, "10.119.0.10", 2), "two routable segments");
}

fn u64_of(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a counter: {v}"))
}

/// A connected UDP socket sends one datagram to ADDR:PORT and says what came back: "answered",
/// "refused" (an ICMP port unreachable the kernel matched to the socket) or "timeout".
const UDP_PROBE: &str = r#"
import socket, sys
host, port = sys.argv[1].split(":")
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3); s.connect((host, int(port)))
s.send(b"anyone?")
try:
    s.recv(100); print("answered")
except ConnectionRefusedError:
    print("refused")
except socket.timeout:
    print("timeout")
"#;

/// ICMP errors through NAT on the real kernel: a client of a forward learns that nothing
/// listens behind it, and so does a namespace behind masquerade; neither could match an
/// error about an address it never used.
#[test]
fn icmp_errors_reach_both_ends_of_a_translated_connection() {
    let (_sb, out, sw, web) = world(121, &[], "web");
    ok(&["forward", "add", "--proto", "udp", "--host-port", "12153", "--to", &format!("{web}:5353"), "--switch", &sw]);
    let r = out.python(UDP_PROBE, &["172.31.121.1:12153"]);
    assert_eq!(r.stdout.trim(), "refused", "the forward's client: {r:?}");
    // The outside has no route to the segment: the error can only come back translated.
    Command::new("ip").args(["-n", &out.ns, "route", "del", "default"]).status().unwrap();
    let r = exec(&web, &["python3", "-c", UDP_PROBE, "172.31.121.2:9999"]);
    assert_eq!(r.stdout.trim(), "refused", "the masqueraded namespace: {r:?}");
}

/// Prints every ICMP error the namespace receives until its standard input closes (then what
/// is still queued), at most 30 s, one line each: "SRC > DST about QSRC:QSPORT > QDST:QDPORT"
/// (the error's addresses, then the quoted packet's).
const ICMP_ERRORS_SEEN: &str = r#"
import select, socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
print("ready", flush=True)
end, a, done = time.time() + 30, socket.inet_ntoa, False
while time.time() < end:
    ready, _, _ = select.select([s] if done else [s, sys.stdin], [], [], 0.2 if done else 1)
    if sys.stdin in ready and not sys.stdin.read(1):
        done = True
        continue
    if s not in ready:
        if done:
            break
        continue
    p = s.recv(2048)
    ihl = (p[0] & 15) * 4
    if p[ihl] not in (3, 11):
        continue
    q = p[ihl + 8:]
    sp, dp = struct.unpack("!HH", q[(q[0] & 15) * 4:][:4])
    print(f"{a(p[12:16])} > {a(p[16:20])} about {a(q[12:16])}:{sp} > {a(q[16:20])}:{dp}", flush=True)
"#;

/// An `ICMP_ERRORS_SEEN` in a namespace; killed if the test fails before reading it.
struct ErrorsSeen(Reaped);

impl ErrorsSeen {
    fn start(ns: &str) -> Self {
        let args = ["netns", "exec", ns, "python3", "-c", ICMP_ERRORS_SEEN];
        Self(spawn_until(Command::new("ip").args(args).stdin(Stdio::piped()).stderr(Stdio::null()), "ready"))
    }

    /// Stops it; what it saw, sorted.
    fn lines(mut self) -> Vec<String> {
        drop(self.0.stdin.take());
        let mut out = String::new();
        std::io::Read::read_to_string(self.0.stdout.as_mut().unwrap(), &mut out).unwrap();
        let mut v: Vec<String> = out.lines().map(str::to_owned).collect();
        v.sort();
        v
    }
}

/// Sends ICMP "port unreachable" to ARGV[1] (the kernel picks the source), one per further
/// argument "QSRC:QSPORT>QDST:QDPORT": the UDP datagram it quotes.
const SEND_ICMP_ERRORS: &str = r#"
import socket, struct, sys
def csum(b):
    s = sum(struct.unpack(f"!{len(b) // 2}H", b)); s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
for quote in sys.argv[2:]:
    (qs, qsp), (qd, qdp) = [x.split(":") for x in quote.split(">")]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 17, 0, socket.inet_aton(qs), socket.inet_aton(qd))
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    msg = struct.pack("!BBHI", 3, 3, 0, 0) + ip + struct.pack("!HHHH", int(qsp), int(qdp), 8, 0)
    raw.sendto(msg[:2] + struct.pack("!H", csum(msg)) + msg[4:], (sys.argv[1], 0))
"#;

/// Receives one UDP datagram on port ARGV[1] and prints "ADDR PORT" of its sender.
const UDP_SENDER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", int(sys.argv[1]))); s.settimeout(5)
print("ready", flush=True)
_, (addr, port) = s.recvfrom(100); print(addr, port)
"#;

/// Sends one UDP datagram from local port ARGV[1] to ARGV[2] (ADDR:PORT), with TTL ARGV[3]
/// if given.
const UDP_FROM: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", int(sys.argv[1])))
if len(sys.argv) > 3:
    s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, int(sys.argv[3]))
host, port = sys.argv[2].split(":"); s.sendto(b"hello", (host, int(port)))
"#;

/// ICMP errors reach only the namespace whose connection they quote, and only as that
/// connection's errors: from outside, an error about namespace a's connections sent to
/// another address than the uplink's (b's, a's own routed to the segment) is dropped, not
/// handed to whoever it is addressed to; from the segment, b cannot speak for a's connections
/// (the error would tell a's peer that a is unreachable, and leave with b's private address).
/// a's own errors, the host's (time exceeded, as the router between the uplink and a) and the
/// legitimate ones from outside still arrive, translated. Each refusal is counted
/// (`icmp_refused`).
fn icmp_errors_reach_only_the_namespace_of_their_connection(dp: &str, net: u8) {
    let (sb, out, sw, a) = world_on(dp, net, &[], "a");
    let b = sb.port(&sw, "b", &format!("10.{net}.0.11/24"), &[]);
    let (outside, uplink) = (format!("172.31.{net}.2"), format!("172.31.{net}.1"));
    let (outside, uplink) = (outside.as_str(), uplink.as_str());
    let (a_ip, b_ip) = (format!("10.{net}.0.10"), format!("10.{net}.0.11"));
    let (a_ip, b_ip) = (a_ip.as_str(), b_ip.as_str());
    // a's masqueraded connection a:5000 -> outside:7000, and the masquerade port it got.
    let peer = out.spawn_python(UDP_SENDER, &["7000"]);
    let r = exec(&a, &["python3", "-c", UDP_FROM, "5000", &format!("{outside}:7000")]);
    assert_eq!(r.code, 0, "{r:?}");
    let seen = String::from_utf8(peer.take().wait_with_output().unwrap().stdout).unwrap();
    let (from, mport) = seen.trim().split_once(' ').unwrap_or_else(|| panic!("no datagram: {seen:?}"));
    assert_eq!(from, uplink, "not masqueraded");
    // A forwarded one: outside:41000 -> uplink:fport -> a:53.
    let fport = (u16::from(net) * 100 + 53).to_string();
    ok(&["forward", "add", "--proto", "udp", "--host-port", &fport, "--to", &format!("{a}:53"), "--switch", &sw]);
    assert_eq!(out.python(UDP_FROM, &["41000", &format!("{uplink}:{fport}")]).code, 0);

    let (in_a, in_b, in_out) = (ErrorsSeen::start(&a), ErrorsSeen::start(&b), ErrorsSeen::start(&out.ns));
    let refused = u64_of(&switch_drops(&sw)["icmp_refused"]);
    let masq_out = format!("{uplink}:{mport}>{outside}:7000");
    let fwd_out = format!("{uplink}:{fport}>{outside}:41000");
    // From outside: to the uplink (the connections' own errors), then to b and to a's own
    // address (routed to the segment, the outside's default route goes through the host).
    assert_eq!(out.python(SEND_ICMP_ERRORS, &[uplink, &masq_out, &fwd_out]).code, 0);
    assert_eq!(out.python(SEND_ICMP_ERRORS, &[b_ip, &masq_out, &fwd_out]).code, 0);
    assert_eq!(out.python(SEND_ICMP_ERRORS, &[a_ip, &masq_out]).code, 0);
    // From the segment: a about the datagram it received; b about a's two connections.
    let masq_in = format!("{outside}:7000>{a_ip}:5000");
    let fwd_in = format!("{outside}:41000>{a_ip}:53");
    assert_eq!(exec(&a, &["python3", "-c", SEND_ICMP_ERRORS, outside, &masq_in]).code, 0);
    assert_eq!(exec(&b, &["python3", "-c", SEND_ICMP_ERRORS, outside, &masq_in, &fwd_in]).code, 0);
    // The host's own: a datagram to the forward with TTL 1 is translated, then expires in the
    // host's stack, which answers "time exceeded" from the uplink address about it as it was
    // after translation (to a).
    assert_eq!(out.python(UDP_FROM, &["41002", &format!("{uplink}:{fport}"), "1"]).code, 0);

    // Every sender has exited: what they sent is delivered (or dropped) within moments.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (got_a, got_b, got_out) = (in_a.lines(), in_b.lines(), in_out.lines());
    let mut want_a = vec![
        format!("{outside} > {a_ip} about {a_ip}:5000 > {outside}:7000"),
        format!("{outside} > {a_ip} about {a_ip}:53 > {outside}:41000"),
    ];
    want_a.sort();
    assert_eq!(got_a, want_a, "what reached a");
    assert!(got_b.is_empty(), "errors about a's connections reached b: {got_b:?}");
    let mut want_out = vec![
        format!("{uplink} > {outside} about {outside}:7000 > {uplink}:{mport}"),
        format!("{uplink} > {outside} about {outside}:41002 > {uplink}:{fport}"),
    ];
    want_out.sort();
    assert_eq!(got_out, want_out, "what left the uplink (a's own error and the host's, translated)");
    assert_eq!(u64_of(&switch_drops(&sw)["icmp_refused"]) - refused, 5, "refusals counted");
}

#[test]
fn tc_icmp_errors_reach_only_the_namespace_of_their_connection() {
    icmp_errors_reach_only_the_namespace_of_their_connection("tc", 147);
}

#[test]
fn xdp_icmp_errors_reach_only_the_namespace_of_their_connection() {
    icmp_errors_reach_only_the_namespace_of_their_connection("xdp", 149);
}

/// Path MTU: the uplink's link has MTU 1400, the segment 1500, and both ends advertise an MSS
/// for 1500 (advmss), so full-size packets really meet the smaller link. Segmentation
/// offloads are off in the namespace, so the switch's fast path sees 1500-byte packets: the
/// FIB lookup must find them too big and hand them to the stack, whose "fragmentation
/// needed" lets the sender shrink. A 10 MB download through a forward and a 10 MB upload
/// through masquerade arrive intact.
#[test]
fn large_transfers_cross_a_smaller_uplink_mtu() {
    let (_sb, out, sw, web) = world(122, &[], "web");
    host("ip", &["link", "set", &out.uplink, "mtu", "1400"]);
    host("ip", &["-n", &out.ns, "link", "set", "eth0", "mtu", "1400"]);
    host("ip", &["-n", &out.ns, "route", "replace", "default", "via", "172.31.122.1", "advmss", "1460"]);
    assert_eq!(exec(&web, &["ethtool", "-K", "eth0", "tso", "off", "gso", "off"]).code, 0);
    ok(&["forward", "add", "--proto", "tcp", "--host-port", "12280", "--to", &format!("{web}:8080"), "--switch", &sw]);

    let mut server = spawn_until(
        Command::new(switch_bin()).args(["ns", "exec", &web, "--", "python3", "-c", BULK_TCP, "serve", "8080", "give"]),
        "ready",
    );
    let r = out.python(BULK_TCP, &["send", "172.31.122.1:12280", "take"]);
    assert_eq!(r.stdout.trim(), "intact", "10 MB download through the forward: {r:?}");
    let _ = server.wait();

    let mut sink = out.spawn_python(BULK_TCP, &["serve", "9100", "take"]);
    let r = exec(&web, &["python3", "-c", BULK_TCP, "send", "172.31.122.2:9100", "give"]);
    assert_eq!(r.stdout.trim(), "intact", "10 MB upload through masquerade: {r:?}");
    let _ = sink.wait();
}

/// Sends COUNT TCP SYNs to HOST:PORT from spoofed sources (addresses FIRST..LAST of the
/// outside's /24, random ports), built by hand on a raw socket.
const SYN_FLOOD: &str = r#"
import random, socket, struct, sys
host, port = sys.argv[1].split(":"); port = int(port)
count, net, first, last = int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
dst = socket.inet_aton(host)
rnd = random.Random(7)
for i in range(count):
    src = socket.inet_aton("%s.%d" % (net, rnd.randint(first, last)))
    sport = rnd.randint(1024, 65535)
    tcp = struct.pack("!HHIIBBHHH", sport, port, rnd.getrandbits(32), 0, 5 << 4, 0x02, 64240, 0, 0)
    c = csum(src + dst + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)
    tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), i & 0xffff, 0, 64, 6, 0, src, dst)
    s.sendto(ip + tcp, (host, 0))
print("sent", count)
"#;

/// A flood of 100 000 spoofed SYNs to a forwarded port fills only the budget of connections
/// waiting for an answer: an established, idle connection through the same forward lives on.
#[test]
fn a_syn_flood_does_not_break_an_established_connection() {
    let (_sb, out, sw, web) = world(124, &[], "web");
    let servers = start_servers(&web, &["80"]);
    ok(&["forward", "add", "--proto", "tcp", "--host-port", "12407", "--to", &format!("{web}:7"), "--switch", &sw]);
    let long = LongConnection::open(&out, "172.31.124.1", "12407");
    // Spoofed sources nobody answers for: the server's SYN-ACKs go nowhere.
    let r = out.python(SYN_FLOOD, &["172.31.124.1:12407", "100000", "172.31.124", "100", "250"]);
    assert_eq!(r.stdout.trim(), "sent 100000", "{r:?}");
    assert_eq!(long.finish(), "two", "the established connection broke under the SYN flood");
    let drops = switch_drops(&sw);
    assert!(u64_of(&drops["unreplied_evicted"]) > 0, "the flood never filled the budget: {drops}");
    assert_eq!(table_stats(&sw, "conntrack")["evicted"], 0, "an answered connection was evicted");
    drop(servers);
}

/// A flood of 100 000 SYNs from spoofed sources the host routes back out of the uplink (not
/// on-link ones, whose SYN-ACKs stall on neighbour resolution): the server's SYN-ACKs really
/// leave, translated, yet with nobody to acknowledge them the connections stay unanswered, so
/// they never push an established connection out of the answered table.
#[test]
fn a_syn_flood_from_routable_sources_does_not_break_an_established_connection() {
    let (_sb, out, sw, web) = world(152, &[], "web");
    let servers = start_servers(&web, &["80"]);
    ok(&["forward", "add", "--proto", "tcp", "--host-port", "15207", "--to", &format!("{web}:7"), "--switch", &sw]);
    // Removed with the uplink when the outside goes.
    host("ip", &["route", "add", "198.18.152.0/24", "via", "172.31.152.2", "dev", &out.uplink]);
    let long = LongConnection::open(&out, "172.31.152.1", "15207");
    let sent_before = tx_packets(&out.uplink);
    let r = out.python(SYN_FLOOD, &["172.31.152.1:15207", "100000", "198.18.152", "1", "254"]);
    assert_eq!(r.stdout.trim(), "sent 100000", "{r:?}");
    // Give the server's SYN-ACKs a moment to drain out.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let syn_acks = tx_packets(&out.uplink) - sent_before;
    assert!(syn_acks > u64::from(CT_CAPACITY / 2), "only {syn_acks} SYN-ACKs left through the uplink");
    assert_eq!(long.finish(), "two", "the established connection broke under the SYN flood");
    let c = table_stats(&sw, "conntrack");
    assert_eq!(u64_of(&c["evicted"]), 0, "an answered connection was evicted: {c}");
    // The real client's handshake, acknowledged by its kernel, did make it answered.
    assert!(u64_of(&c["entries"]) >= 2, "the established connection is not in the answered table: {c}");
    // Only the established connection (and the servers' own) ever became answered.
    assert!(u64_of(&c["added"]) < 100, "spoofed connections were taken as answered: {c}");
    assert!(u64_of(&switch_drops(&sw)["unreplied_evicted"]) > 0, "the flood never filled the unanswered budget");
    drop(servers);
}

fn tx_packets(dev: &str) -> u64 {
    std::fs::read_to_string(format!("/sys/class/net/{dev}/statistics/tx_packets")).unwrap().trim().parse().unwrap()
}

/// The masquerade range (`first`, `count`): the ports just above the host's ephemeral ones.
fn masquerade_range() -> (u16, u16) {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let first = range.split_whitespace().nth(1).unwrap().parse::<u16>().unwrap() + 1;
    (first, u16::MAX - first + 1)
}

/// Echoes every UDP datagram (argv: port, "udp"); TCP (argv: port, "tcp"): accepts and holds every
/// connection.
const REMOTE_SERVICE: &str = r#"
import resource, socket, sys
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]; resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
port = int(sys.argv[1])
if sys.argv[2] == "tcp":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(4096); print("ready", flush=True); held = []
    while True:
        held.append(s.accept()[0])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", port)); print("ready", flush=True)
while True:
    d, a = s.recvfrom(2048); s.sendto(d, a)
"#;

/// Sends a UDP datagram, or opens a TCP connection, to HOST:PORT from each source port
/// FIRST..=LAST; TCP connections stay open until stdin closes.
const FROM_EVERY_PORT: &str = r#"
import resource, socket, sys
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]; resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
host, port = sys.argv[1].split(":"); port = int(port)
first, last, tcp = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "tcp"
held = []
for p in range(first, last + 1):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", p))
    if tcp:
        s.setblocking(False); s.connect_ex((host, port)); held.append(s)
    else:
        s.sendto(b"mine", (host, port)); s.close()
print("ready", flush=True)
sys.stdin.readline()
"#;

/// Three UDP datagrams (or TCP connections) to HOST:PORT from ordinary ephemeral ports: how
/// many were answered (connected).
const THREE_TRIES: &str = r#"
import socket, sys
host, port = sys.argv[1].split(":"); port = int(port); ok = 0
for _ in range(3):
    try:
        if sys.argv[2] == "tcp":
            socket.create_connection((host, port), timeout=3).close()
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
            s.sendto(b"mine too", (host, port)); s.recvfrom(100)
        ok += 1
    except OSError:
        pass
print(ok)
"#;

/// One namespace sends from every port of the masquerade range to one remote service (UDP
/// datagrams, or TCP connections it keeps open); another namespace still reaches the
/// service. Choosing its source ports claims nothing for the first: it gets no more than its
/// share of the ports towards that remote, and the rest of its attempts are refused and
/// counted.
fn one_namespace_cannot_take_every_masquerade_port(net: u8, proto: &str) {
    let (sb, out, sw, hog) = world(net, &[], "hog");
    let other = sb.port(&sw, "other", &format!("10.{net}.0.11/24"), &[]);
    let mut service = out.spawn_python(REMOTE_SERVICE, &["5300", proto]);
    let (first, count) = masquerade_range();
    let remote = format!("172.31.{net}.2:5300");
    let (first_s, last_s) = (first.to_string(), (u32::from(first) + u32::from(count) - 1).to_string());
    let mut hogging = spawn_until(
        Command::new(switch_bin())
            .args(["ns", "exec", &hog, "--", "python3", "-c", FROM_EVERY_PORT, &remote, &first_s, &last_s, proto])
            .stdin(Stdio::piped()),
        "ready",
    );
    // TCP: the handshakes the hog got through are complete.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let r = exec(&other, &["python3", "-c", THREE_TRIES, &remote, proto]);
    assert_eq!(
        r.stdout.trim(),
        "3",
        "{proto}: another namespace could not reach the service: {r:?} {} {}",
        switch_drops(&sw),
        table_stats(&sw, "unreplied")
    );
    // The hog's share: MASQ_SHARE_BLOCKS of the range's MASQ_BLOCKS blocks.
    let share = MASQ_SHARE_BLOCKS * u32::from(count).div_ceil(MASQ_BLOCKS);
    let refused = u64_of(&switch_drops(&sw)["masquerade_share"]);
    assert!(refused >= u64::from(u32::from(count) - share), "{proto}: {refused} refused, share {share} of {count}");
    if proto == "tcp" {
        // The hog's connections that got a port completed their handshakes: answered (two
        // entries each), most of its share.
        let c = table_stats(&sw, "conntrack");
        assert!(u64_of(&c["entries"]) >= u64::from(share), "{c}");
    }
    drop(hogging.stdin.take());
    let _ = hogging.wait();
    let _ = service.kill();
    let _ = service.wait();
}

#[test]
fn one_namespace_cannot_take_every_masquerade_port_udp() {
    one_namespace_cannot_take_every_masquerade_port(153, "udp");
}

#[test]
fn one_namespace_cannot_take_every_masquerade_port_tcp() {
    one_namespace_cannot_take_every_masquerade_port(154, "tcp");
}

/// A host port held open for the target itself (a container runtime's reservation: a
/// process whose command line names the port's owner, as conmon names its container) does
/// not stop the forward; any other listener does.
#[test]
fn a_port_reserved_for_the_target_itself_can_be_forwarded() {
    let (sb, _out, sw, web) = world(125, &[], "web");
    let other = sb.port(&sw, "other", "10.125.0.11/24", &[]);
    let hold = "import socket, sys\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('0.0.0.0', 12580)); s.listen(1); print('ready', flush=True); sys.stdin.readline()";
    let mut holder =
        spawn_until(Command::new("python3").args(["-c", hold, "--cid", &web]).stdin(Stdio::piped()), "ready");
    let e = fails(
        &["forward", "add", "--proto", "tcp", "--host-port", "12580", "--to", &format!("{other}:80"), "--switch", &sw],
        2,
    );
    assert!(e.contains("listens"), "{e}");
    ok(&["forward", "add", "--proto", "tcp", "--host-port", "12580", "--to", &format!("{web}:80"), "--switch", &sw]);
    let _ = holder.kill();
    let _ = holder.wait();
}

/// A test's world: an outside namespace on 172.31.N.0/24 behind an uplink, a tc switch on
/// 10.N.0.0/24 (gateway .254) with `extra` `up` arguments, and namespace `name` at 10.N.0.10.
/// Bound in this order, they are dropped in the reverse: the outside before the sandbox.
fn world(net: u8, extra: &[&str], name: &str) -> (Sandbox, Outside, String, String) {
    world_on("tc", net, extra, name)
}

/// `world` on datapath `dp`.
fn world_on(dp: &str, net: u8, extra: &[&str], name: &str) -> (Sandbox, Outside, String, String) {
    let mut sb = Sandbox::new();
    let out = Outside::new(&sb, net);
    let gw = format!("10.{net}.0.254/24");
    let mut args = vec!["--gateway", gw.as_str(), "--uplink", out.uplink.as_str()];
    args.extend_from_slice(extra);
    let sw = sb.switch("sw", dp, &args);
    let ns = sb.port(&sw, name, &format!("10.{net}.0.10/24"), &[]);
    (sb, out, sw, ns)
}
