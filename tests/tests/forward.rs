//! Port forwarding from an uplink to namespaces, in eBPF: clients in an "outside" namespace
//! reach servers in switch namespaces through the host's uplink address, and the servers see
//! the clients' real addresses.
//!
//! ```text
//!   outside ns (client, 172.31.N.2) ──veth── uN… (uplink, 172.31.N.1) ── host routing
//!        ── gateway (10.N.0.254) ── switch ── web ns (10.N.0.10: HTTP :80, UDP echo :53)
//! ```
use std::process::{Child, Command, Stdio};

use switch_tests::*;

/// An outside namespace behind a test veth that serves as the uplink; removed on drop.
struct Outside {
    ns: String,
    uplink: String,
}

impl Outside {
    fn new(sb: &Sandbox, net: u8) -> Self {
        let (ns, uplink) = (sb.name("out"), format!("u{}", sb.prefix));
        let run = |args: &[&str]| host("ip", args);
        run(&["netns", "add", &ns]);
        run(&["link", "add", &uplink, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
        run(&["addr", "add", &format!("172.31.{net}.1/24"), "dev", &uplink]);
        run(&["link", "set", &uplink, "up"]);
        run(&["-n", &ns, "addr", "add", &format!("172.31.{net}.2/24"), "dev", "eth0"]);
        run(&["-n", &ns, "link", "set", "eth0", "up"]);
        run(&["-n", &ns, "link", "set", "lo", "up"]);
        run(&["-n", &ns, "route", "add", "default", "via", &format!("172.31.{net}.1")]);
        Self { ns, uplink }
    }

    /// Runs python `script` with `args` in the outside namespace.
    fn python(&self, script: &str, args: &[&str]) -> Run {
        let mut a = vec!["netns", "exec", &self.ns, "python3", "-c", script];
        a.extend_from_slice(args);
        Command::new("ip").args(&a).output().unwrap().into()
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.uplink]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

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

fn start_servers(ns: &str, http_ports: &[&str]) -> Child {
    let mut args = vec!["ns", "exec", ns, "--", "python3", "-c", SERVERS];
    args.extend_from_slice(http_ports);
    let mut child =
        Command::new(switch_bin()).args(&args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.as_mut().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    child
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
    let gw = format!("10.{net}.0.254/24");
    let sw = sb.switch("sw", dp, &["--gateway", &gw, "--uplink", &out.uplink]);
    let web = sb.port(&sw, "web", &format!("10.{net}.0.10/24"), &[]);
    let mut servers = start_servers(&web, &["80", "9001"]);
    let uplink_ip = format!("172.31.{net}.1");
    ok(&["forward", "add", "--proto", "tcp", "--host-port", "8080", "--to", &format!("{web}:80"), "--switch", &sw]);
    ok(&["forward", "add", "--proto", "udp", "--host-port", "5353", "--to", &format!("{web}:53"), "--switch", &sw]);
    ok(&[
        "forward",
        "add",
        "--proto",
        "tcp",
        "--host-port",
        "9000-9002",
        "--to",
        &format!("{web}:9000-9002"),
        "--switch",
        &sw,
    ]);
    ok(&["forward", "add", "--proto", "tcp", "--host-port", "7007", "--to", &format!("{web}:7"), "--switch", &sw]);

    // TCP: the server sees the outside client's real address.
    let r = out.python(HTTP_GET, &[&format!("{uplink_ip}:8080")]);
    assert_eq!(r.stdout.trim(), format!("client 172.31.{net}.2"), "{r:?}");
    // UDP: answered from the uplink address and port, with the real client address seen.
    let r = out.python(UDP_ASK, &[&format!("{uplink_ip}:5353")]);
    assert_eq!(r.stdout.trim(), format!("ping from 172.31.{net}.2 {uplink_ip} 5353"), "{r:?}");
    // A port range: 9001 of 9000-9002 reaches the server's 9001.
    let r = out.python(HTTP_GET, &[&format!("{uplink_ip}:9001")]);
    assert_eq!(r.stdout.trim(), format!("client 172.31.{net}.2"), "{r:?}");

    // 1000 connections, 50 at a time, all succeed.
    let r = out.python(MANY, &[&uplink_ip, "8080", "1000", "50"]);
    assert_eq!(r.stdout.trim(), "1000", "{r:?}");
    let rows = json(&["forward", "list", "--switch", &sw]);
    let http = rows.as_array().unwrap().iter().find(|r| r["host_ports"] == "8080").unwrap().clone();
    assert!(http["connections"].as_u64().unwrap() >= 1001, "{http}");
    assert!(http["packets"].as_u64().unwrap() > 5000, "{http}");

    // Removing a rule: an established connection finishes, a new one is not forwarded.
    let mut long = Command::new("ip")
        .args(["netns", "exec", &out.ns, "python3", "-c", LONG, &uplink_ip, "7007"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut reader = std::io::BufReader::new(long.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
    assert_eq!(line.trim(), "connected");
    ok(&["forward", "del", "--proto", "tcp", "--host-port", "7007", "--switch", &sw]);
    std::io::Write::write_all(long.stdin.as_mut().unwrap(), b"\n").unwrap();
    line.clear();
    std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
    assert_eq!(line.trim(), "two", "the established connection broke when its rule went");
    let _ = long.wait();
    let r = out.python(HTTP_GET, &[&format!("{uplink_ip}:7007")]);
    assert_ne!(r.code, 0, "a new connection was forwarded after the rule was removed");

    // The closed connections drain from the table (closing timeout: 10 s).
    std::thread::sleep(std::time::Duration::from_secs(11));
    let rows = json(&["forward", "list", "--switch", &sw]);
    let http = rows.as_array().unwrap().iter().find(|r| r["host_ports"] == "8080").unwrap().clone();
    assert_eq!(http["active"], 0, "{http}");

    let _ = servers.kill();
    let _ = servers.wait();
    ok(&["down", "--name", &sw]);
    assert!(json(&["forward", "list"]).as_array().unwrap().iter().all(|r| r["switch"] != sw.as_str()));
    drop(out);
    assert_eq!(Snapshot::take(&sb.prefix), Snapshot::take("\u{0}never"), "forwarding left something behind");
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
    ok(&["forward", "add", "--proto", "tcp", "--host-port", "8080", "--to", &format!("{web}:80"), "--switch", &sw]);
    // A host process listening on a port: forwarding it would hide it.
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let busy = listener.local_addr().unwrap().port().to_string();
    let to80 = format!("{web}:80");
    let (else80, web80_82) = (format!("{elsewhere}:80"), format!("{web}:80-82"));
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--proto", "tcp", "--host-port", "8080", "--to", &to80, "--switch", &sw], "already forwarded"),
        (vec!["--proto", "tcp", "--host-port", "8079-8081", "--to", &to80, "--switch", &sw], "host ports but"),
        (vec!["--proto", "tcp", "--host-port", &busy, "--to", &to80, "--switch", &sw], "host process listens"),
        (vec!["--proto", "tcp", "--host-port", "0", "--to", &to80, "--switch", &sw], "port 0"),
        (vec!["--proto", "tcp", "--host-port", "70000", "--to", &to80, "--switch", &sw], "65535"),
        (vec!["--proto", "tcp", "--host-port", "9000-9001", "--to", &web80_82, "--switch", &sw], "host ports but"),
        (vec!["--proto", "tcp", "--host-port", "8081", "--to", "nosuchns:80", "--switch", &sw], "not managed"),
        (vec!["--proto", "tcp", "--host-port", "8081", "--to", &else80, "--switch", &sw], "not a port of switch"),
        (vec!["--proto", "tcp", "--host-port", "8081", "--to", &else80, "--switch", &plain], "no uplink"),
        (vec!["--proto", "tcp", "--host-port", "8081", "--to", &to80, "--switch", &bridge], "runs in eBPF"),
        (vec!["--proto", "sctp", "--host-port", "8081", "--to", &to80, "--switch", &sw], "invalid value"),
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
    let e = fails(&["forward", "del", "--proto", "udp", "--host-port", "8080", "--switch", &sw], 2);
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
