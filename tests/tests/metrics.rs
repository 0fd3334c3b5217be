//! `switch metrics` and `switch metrics serve`: the Prometheus exposition of every switch,
//! scraped over HTTP with curl, checked with promtool and against `switch stats`, `switch
//! tables` and `switch forward list`.
//!
//! ```text
//!   outside ns (172.31.140.2) ──veth── uplink ── host ── gateway (10.140.0.254)
//!        ── tc switch ── web (10.140.0.10, HTTP :80), peer (10.140.0.11)
//!   bridge switch ── lone (10.141.0.1)
//! ```
use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead as _, BufReader, Read as _},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use switch_tests::{outside::Outside, *};

/// A one-thread HTTP server answering "hello" on port 80.
const HTTP_SERVER: &str = r#"
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "5"); self.end_headers(); self.wfile.write(b"hello")
    def log_message(self, *a): pass
s = http.server.HTTPServer(("0.0.0.0", 80), H); print("ready", flush=True); s.serve_forever()
"#;

const HTTP_GET: &str = r#"
import sys, urllib.request
print(urllib.request.urlopen(f"http://{sys.argv[1]}/", timeout=3).read().decode())
"#;

/// `switch metrics serve` on a port the kernel picks; its URL is read from its first line.
struct Server {
    child: Reaped,
    url: String,
}

impl Server {
    fn start() -> Self {
        Self::start_with(&[])
    }

    /// The server with extra environment (a failpoint).
    fn start_with(env: &[(&str, &str)]) -> Self {
        let mut child = Reaped::new(
            Command::new(switch_bin())
                .args(["metrics", "serve", "--listen", "127.0.0.1:0"])
                .envs(env.iter().copied())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut line = String::new();
        BufReader::new(child.stderr.as_mut().unwrap()).read_line(&mut line).unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .trim_end_matches(';')
            .to_owned();
        assert!(url.starts_with("http://127.0.0.1:") && url.ends_with("/metrics"), "{line}");
        Self { child, url }
    }

    /// The body of one scrape (curl fails the test on anything but 200).
    fn scrape(&self) -> String {
        host("curl", &["-sSf", "--max-time", "10", &self.url])
    }

    /// SIGTERM, then the exit status and what the server said on stderr.
    fn stop(mut self) -> (std::process::ExitStatus, String) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "metrics serve did not stop within 10 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        if let Some(stderr) = self.child.stderr.as_mut() {
            stderr.read_to_string(&mut err).unwrap();
        }
        (status, err)
    }
}

/// One sample: metric name and its labels.
type Key = (String, BTreeMap<String, String>);

/// The samples of an exposition (`name{k="v",...} value` lines; label values here hold no
/// quotes or escapes).
fn samples(text: &str) -> BTreeMap<Key, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}').unwrap_or_else(|| panic!("bad labels {line}"))),
            None => (series, ""),
        };
        let labels = labels
            .split("\",")
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once("=\"").unwrap_or_else(|| panic!("bad label {p} in {line}"));
                (k.to_owned(), v.trim_end_matches('"').to_owned())
            })
            .collect();
        out.insert((name.to_owned(), labels), value.parse().unwrap_or_else(|_| panic!("bad value {line}")));
    }
    out
}

/// The names of the families (`# TYPE` lines), with their types.
fn families(text: &str) -> BTreeSet<String> {
    text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).map(str::to_owned).collect()
}

/// The samples of switch `sw` only (other tests' switches come and go meanwhile).
fn of_switch(all: &BTreeMap<Key, f64>, sw: &str) -> BTreeMap<Key, f64> {
    all.iter().filter(|((_, l), _)| l.get("switch").is_some_and(|s| s == sw)).map(|(k, v)| (k.clone(), *v)).collect()
}

/// Pings `to` from `ns` with source address `from`; whether every reply came back.
fn ping_from(ns: &str, from: &str, to: &str) -> bool {
    exec(ns, &["ping", "-c", "2", "-i", "0.01", "-W", "1", "-q", "-I", from, to]).code == 0
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// `promtool check metrics` on `text`: no format error, no lint problem.
fn promtool_accepts(text: &str) {
    // Setup takes promtool out of the prometheus package into target/tools without installing
    // the package (and its server); `cargo xtask test` says where.
    let promtool = std::env::var("SWITCH_PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let mut p = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {promtool} ({e}): cargo xtask setup puts it in target/tools"));
    std::io::Write::write_all(p.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let o = p.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success() && said.trim().is_empty(), "promtool check metrics: {said}\non:\n{text}");
}

/// What `switch stats`, `switch tables` and `switch forward list` say about `sw`, as the
/// samples the metrics must have.
fn expected(sw: &str, dp: &str) -> BTreeMap<Key, f64> {
    let mut want = Want::default();
    let stats = json(&["stats", "--switch", sw]);
    for p in stats["ports"].as_array().unwrap() {
        want.port(sw, dp, p);
    }
    let sl = labels(&[("switch", sw), ("datapath", dp)]);
    if !stats["switch"].is_null() {
        want.put("switch_nat_refused_connections_total", &sl, counter(&stats["switch"], "nat_refused"));
        want.put("switch_unsolicited_routed_packets_total", &sl, counter(&stats["switch"], "unsolicited_routed"));
        want.put("switch_unreplied_evicted_connections_total", &sl, counter(&stats["switch"], "unreplied_evicted"));
        want.put("switch_icmp_refused_packets_total", &sl, counter(&stats["switch"], "icmp_refused"));
        want.put(
            "switch_masquerade_share_refused_connections_total",
            &sl,
            counter(&stats["switch"], "masquerade_share"),
        );
    }
    if is_ebpf(dp) {
        for t in json(&["tables", "--switch", sw]).as_array().unwrap() {
            want.table(sw, dp, t);
        }
    }
    for f in json(&["forward", "list", "--switch", sw]).as_array().unwrap() {
        want.forward(dp, f);
    }
    want.0
}

/// The samples the metrics must have, gathered from the CLI's rows.
#[derive(Default)]
struct Want(BTreeMap<Key, f64>);

impl Want {
    /// Sample `name` with labels `l` when the CLI gave a value.
    fn put(&mut self, name: &str, l: &BTreeMap<String, String>, v: Option<u64>) {
        if let Some(v) = v {
            self.0.insert((name.to_owned(), l.clone()), v as f64);
        }
    }

    /// Each field of `row` named in `fields` (metric name, field), with labels `l`.
    fn fields(&mut self, l: &BTreeMap<String, String>, row: &Value, fields: &[(&str, &str)]) {
        for (name, field) in fields {
            self.put(name, l, counter(row, field));
        }
    }

    /// The samples of port `p` (a `switch stats` row) of `sw`: its counters, and its drops by
    /// reason where it counts drops ("other" for those no reason names).
    fn port(&mut self, sw: &str, dp: &str, p: &Value) {
        let (ns, port) = (p["namespace"].as_str().unwrap(), p["interface"].as_str().unwrap());
        let l = labels(&[("switch", sw), ("datapath", dp), ("namespace", ns), ("port", port)]);
        self.fields(
            &l,
            p,
            &[
                ("switch_port_rx_packets_total", "rx_packets"),
                ("switch_port_rx_bytes_total", "rx_bytes"),
                ("switch_port_tx_packets_total", "tx_packets"),
                ("switch_port_tx_bytes_total", "tx_bytes"),
                ("switch_port_flooded_packets_total", "flooded"),
                ("switch_port_tx_errors_total", "tx_errors"),
            ],
        );
        if let Some(dropped) = counter(p, "dropped") {
            let mut named = 0;
            for reason in [
                "malformed",
                "spoofed_mac",
                "spoofed_ip",
                "spoofed_arp",
                "mac_limit",
                "tagged",
                "spoofed_nd",
                "router_guard",
            ] {
                let v = counter(p, reason).unwrap();
                named += v;
                let mut l = l.clone();
                l.insert("reason".into(), reason.into());
                self.put("switch_port_dropped_packets_total", &l, Some(v));
            }
            let mut l = l.clone();
            l.insert("reason".into(), "other".into());
            self.put("switch_port_dropped_packets_total", &l, Some(dropped - named));
        }
    }

    /// The samples of table `t` (a `switch tables` row) of `sw`.
    fn table(&mut self, sw: &str, dp: &str, t: &Value) {
        let l = labels(&[("switch", sw), ("datapath", dp), ("table", t["table"].as_str().unwrap())]);
        self.fields(
            &l,
            t,
            &[
                ("switch_table_entries", "entries"),
                ("switch_table_expired_entries", "expired"),
                ("switch_table_capacity_entries", "capacity"),
                ("switch_table_added_entries_total", "added"),
                ("switch_table_removed_entries_total", "removed"),
                ("switch_table_evicted_entries_total", "evicted"),
                ("switch_table_refused_entries_total", "refused"),
            ],
        );
    }

    /// The samples of forward `f` (a `switch forward list` row).
    fn forward(&mut self, dp: &str, f: &Value) {
        let s = |k: &str| f[k].as_str().unwrap();
        let l = labels(&[
            ("switch", s("switch")),
            ("datapath", dp),
            ("namespace", s("namespace")),
            ("proto", s("proto")),
            ("host_ports", s("host_ports")),
            ("to", s("to")),
        ]);
        self.fields(
            &l,
            f,
            &[
                ("switch_forward_packets_total", "packets"),
                ("switch_forward_bytes_total", "bytes"),
                ("switch_forward_connections_total", "connections"),
                ("switch_forward_active_connections", "active"),
            ],
        );
    }
}

/// Scrapes, reads the CLI's numbers, scrapes again: when nothing moved between the two
/// scrapes, the CLI's numbers (read between them) must be exactly the scraped ones. Retried a
/// few times in case a stray frame (an ARP refresh) moves a counter meanwhile.
fn scrape_matches_cli(server: &Server, switches: &[(&str, &str)]) -> String {
    for _ in 0..5 {
        let before = server.scrape();
        let want: Vec<_> = switches.iter().map(|(sw, dp)| expected(sw, dp)).collect();
        let after = server.scrape();
        let (b, a) = (samples(&before), samples(&after));
        if switches.iter().any(|(sw, _)| of_switch(&b, sw) != of_switch(&a, sw)) {
            continue;
        }
        for ((sw, _), want) in switches.iter().zip(want) {
            assert_eq!(of_switch(&b, sw), want, "metrics of {sw} differ from the CLI's numbers:\n{before}");
        }
        return before;
    }
    panic!("the counters never held still for two scrapes");
}

#[test]
fn metrics_serve_agrees_with_the_cli_and_stops_on_sigterm() {
    let mut sb = Sandbox::new();
    let out = Outside::new(&sb, 140);
    let clean = Snapshot::take(&sb.prefix);
    let sw = sb.switch("sw", "tc", &["--gateway", "10.140.0.254/24", "--uplink", &out.uplink]);
    let web = sb.port(&sw, "web", "10.140.0.10/24", &[]);
    let peer = sb.port(&sw, "peer", "10.140.0.11/24", &[]);
    let br = sb.switch("br", "bridge", &[]);
    let lone = sb.port(&br, "lone", "10.141.0.1/24", &[]);

    let server_in_web = spawn_until(
        Command::new(switch_bin()).args(["ns", "exec", &web, "--", "python3", "-c", HTTP_SERVER]).stderr(Stdio::null()),
        "ready",
    );
    ok(&["forward", "add", "--proto", "tcp", "--host-port", "14080", "--to", &format!("{web}:80"), "--switch", &sw]);
    traffic_of_every_kind(&out, &peer, &lone);

    let server = Server::start();
    let text = scrape_matches_cli(&server, &[(&sw, "tc"), (&br, "bridge")]);
    promtool_accepts(&text);
    let got = samples(&text);
    let web_port = port_labels(&sw, "tc", &web);
    assert!(got[&("switch_port_rx_packets_total".to_owned(), web_port.clone())] >= 5.0, "{text}");
    the_traffic_is_in_the_scrape(&text, &sw, &br, [&peer, &lone]);
    the_command_says_what_the_server_does(&text, &sw);

    // Every scrape reads fresh numbers, and a switch that goes away is gone from the next
    // one; the server goes on.
    ok(&["down", "--switch", &br]);
    assert!(ping(&peer, "10.140.0.10", 3));
    let after = samples(&server.scrape());
    assert!(of_switch(&after, &br).is_empty(), "{br} still scraped after down");
    let rx = |s: &BTreeMap<Key, f64>| s[&("switch_port_rx_packets_total".to_owned(), web_port.clone())];
    assert!(rx(&after) >= rx(&got) + 3.0, "web's rx did not move: {} then {}", rx(&got), rx(&after));

    let url = server.url.clone();
    let (status, err) = server.stop();
    assert!(status.success(), "metrics serve on SIGTERM: {status}, {err}");
    assert!(!err.contains("left out"), "a scrape left a switch out: {err}");
    let r = Command::new("curl").args(["-sS", "--max-time", "3", &url]).output().unwrap();
    assert!(!r.status.success(), "still answering after SIGTERM");

    drop(server_in_web);
    ok(&["down", "--switch", &sw]);
    assert_eq!(Snapshot::take(&sb.prefix), clean, "left something behind on the uplink");
    drop(out);
    assert_eq!(Snapshot::take(&sb.prefix), Snapshot::take("\u{0}never"), "left something behind");
}

/// Traffic: switched (ping from `peer` to web), forwarded (HTTP from outside, three
/// connections), a drop by port security (a frame from another source address than the
/// port's), and frames on the bridge's port `lone` too (an unanswered ARP request is enough).
fn traffic_of_every_kind(out: &Outside, peer: &str, lone: &str) {
    assert!(ping(peer, "10.140.0.10", 5));
    for _ in 0..3 {
        let r = out.python(HTTP_GET, &["172.31.140.1:14080"]);
        assert_eq!(r.stdout.trim(), "hello", "{r:?}");
    }
    let r = exec(peer, &["ip", "addr", "add", "10.140.0.99/24", "dev", "eth0"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!ping_from(peer, "10.140.0.99", "10.140.0.10"), "port security let a foreign source through");
    let _ = exec(lone, &["ping", "-c", "1", "-W", "1", "10.141.0.2"]);
}

/// The labels of the port of namespace `ns` on switch `sw` of datapath `dp`.
fn port_labels(sw: &str, dp: &str, ns: &str) -> BTreeMap<String, String> {
    let rows = json(&["ns", "list"]);
    let row = rows.as_array().unwrap().iter().find(|r| r["namespace"] == ns).unwrap();
    labels(&[("switch", sw), ("datapath", dp), ("namespace", ns), ("port", row["host_interface"].as_str().unwrap())])
}

/// Scrape `text` shows what `traffic_of_every_kind` did: `peer`'s spoofed drops, `lone`'s
/// frames on bridge switch `br`, the forward's connections on `sw`; every family documented
/// and typed; and no made-up zeros for the bridge.
fn the_traffic_is_in_the_scrape(text: &str, sw: &str, br: &str, [peer, lone]: [&str; 2]) {
    let got = samples(text);
    let spoofed = got
        .iter()
        .find(|((n, l), _)| {
            n == "switch_port_dropped_packets_total" && l["namespace"] == peer && l["reason"] == "spoofed_ip"
        })
        .unwrap_or_else(|| panic!("no spoofed_ip drops of {peer}:\n{text}"));
    assert!(*spoofed.1 >= 2.0, "{text}");
    let lone_rx = of_switch(&got, br)
        .into_iter()
        .find(|((n, l), _)| n == "switch_port_rx_packets_total" && l["namespace"] == lone)
        .unwrap_or_else(|| panic!("no port metrics of the bridge switch:\n{text}"));
    assert!(lone_rx.1 >= 1.0, "{text}");
    let fwd = got
        .iter()
        .find(|((n, l), _)| n == "switch_forward_connections_total" && l["switch"] == sw)
        .unwrap_or_else(|| panic!("no forward metrics:\n{text}"));
    assert_eq!(*fwd.1, 3.0, "three HTTP connections through the forward");
    assert_eq!(fwd.0.1["host_ports"], "14080");
    // Every family is documented and typed; counters end in _total, gauges do not.
    for fam in families(text) {
        let (name, kind) = fam.split_once(' ').unwrap();
        assert!(text.contains(&format!("# HELP {name} ")), "{name} has no HELP");
        assert_eq!(name.ends_with("_total"), kind == "counter", "{fam}");
    }
    // The bridge keeps no flood or drop counts: no made-up zeros for it.
    assert!(
        !of_switch(&got, br).keys().any(|(n, _)| n.starts_with("switch_port_flooded") || n.contains("dropped")),
        "{text}"
    );
}

/// `switch metrics` once: the same families as scrape `text`, the same series of switch `sw`,
/// and `sw` in its JSON.
fn the_command_says_what_the_server_does(text: &str, sw: &str) {
    let once = ok(&["metrics"]);
    promtool_accepts(&once);
    assert_eq!(families(&once), families(text));
    let keys = |t: &str, s: &str| of_switch(&samples(t), s).into_keys().collect::<BTreeSet<_>>();
    assert_eq!(keys(&once, sw), keys(text, sw));
    let once_json = json(&["metrics"]);
    assert!(once_json["switches"].as_array().unwrap().iter().any(|s| s["switch"] == sw), "{once_json}");
}

/// The HTTP status of one `curl` of `url` (`000`: no answer within `secs`).
fn curl_status(url: &str, secs: u32) -> Command {
    let mut c = Command::new("curl");
    c.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", &secs.to_string(), url]);
    c.stdout(Stdio::piped());
    c
}

/// Scrapes never take the state lock, and at most four run at once: with four held in
/// flight (a failpoint stalls them where they read the tables), a fifth is answered 503 at
/// once, and `switch ns add` goes through meanwhile; released, the four complete and the
/// server scrapes again.
#[test]
fn a_flood_of_scrapes_is_bounded_and_holds_back_no_command() {
    let mut sb = Sandbox::new();
    let sw = sb.switch("sw", "tc", &[]);
    let release = std::env::temp_dir().join(format!("switch-metrics-release-{}", sb.prefix));
    let _ = std::fs::remove_file(&release);
    let release_path = release.to_str().unwrap().to_owned();
    let mut server = Server::start_with(&[
        ("SWITCH_FAILPOINT", "metrics-scrape:stall"),
        ("SWITCH_FAILPOINT_RELEASE", release_path.as_str()),
    ]);
    // What the server says on stderr, line by line.
    let (tx, said) = std::sync::mpsc::channel();
    let stderr = server.child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let held: Vec<Reaped> = (0..4).map(|_| Reaped::new(curl_status(&server.url, 60).spawn().unwrap())).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stalled = 0;
    while stalled < 4 {
        let left = deadline.saturating_duration_since(Instant::now());
        match said.recv_timeout(left) {
            Ok(line) if line.contains("failpoint metrics-scrape stalled") => stalled += 1,
            Ok(_) => {}
            // No stall (a server without the failpoint): the fifth scrape below tells.
            Err(_) => break,
        }
    }
    let fifth = curl_status(&server.url, 10).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&fifth.stdout), "503", "a fifth scrape while four run");
    // The scrapes in flight hold no lock: a port is added meanwhile.
    let a = sb.port(&sw, "a", "10.142.0.1/24", &[]);
    std::fs::write(&release, b"").unwrap();
    for curl in held {
        let mut curl = curl;
        let mut code = String::new();
        curl.stdout.take().unwrap().read_to_string(&mut code).unwrap();
        assert_eq!(code, "200", "a held scrape, released");
    }
    // The permits are back: scraping goes on, with the new port.
    let text = server.scrape();
    assert!(text.contains(&format!("namespace=\"{a}\"")), "{text}");
    let _ = std::fs::remove_file(&release);
    let (status, err) = server.stop();
    assert!(status.success(), "metrics serve on SIGTERM: {status}, {err}");
}

#[test]
fn metrics_serve_refuses_a_bad_listen_address_in_one_line() {
    // Not an address: bad input (exit 2, as every malformed argument).
    let e = fails(&["metrics", "serve", "--listen", "localhost"], 2);
    assert!(e.contains("--listen"), "{e}");
    // An address that cannot be listened on: taken, or not the host's.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let e = fails(&["metrics", "serve", "--listen", &addr], 1);
    assert!(e.contains(&addr) && e.contains("in use"), "{e}");
    let e = fails(&["metrics", "serve", "--listen", "192.0.2.1:9370"], 1);
    assert!(e.contains("192.0.2.1:9370"), "{e}");
}

#[test]
fn metrics_help_warns_about_exposing_it() {
    let help = ok(&["metrics", "serve", "--help"]);
    for words in ["127.0.0.1:9370", "loopback", "namespace"] {
        assert!(help.contains(words), "metrics serve --help lacks {words}:\n{help}");
    }
}
