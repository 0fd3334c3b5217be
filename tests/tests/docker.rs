//! Docker (Debian's 20.10, a private dockerd with its iptables on) with `switch
//! docker-plugin` as its network driver (issue #26): networks made and removed with `-d` and
//! `-o` options (an unknown option refused, Docker showing the driver's error), containers
//! reaching each other by address and by name (Docker's embedded DNS), the gateway and the
//! outside (masqueraded, through an uplink the test makes), `-p` from outside (the client's
//! address kept), from the host and from another container (hairpin), `-p 80` given a free
//! host port, `docker rm` and `network rm` leaving nothing, the plugin restarted and dockerd
//! restarted with containers running, the switch made again after a "reboot" (the driver's
//! records and the host's switch gone, Docker's networks kept), and 20 containers at once.
//!
//! Traffic goes only to the containers, their gateways and the outside namespaces the tests
//! make (10.192.N.0/24); the networks are 10.191.N.0/24.
use std::collections::BTreeSet;

use switch_tests::{
    Value,
    docker::{Docker, http_get_cmd, network_leftovers, switch_of},
    json,
    outside::Outside,
};

/// Polls `f` for up to 60 s (containers restarting, Docker's DNS catching up).
fn eventually(f: impl FnMut() -> bool) -> bool {
    container_env::command::wait_until(std::time::Duration::from_secs(60), f)
}

/// A container that only idles.
const IDLE: &str = "sleep 3600";

/// An outside namespace for test `n` (`dknoN`, uplink `dknuN` at 10.192.N.1).
fn outside(n: u8) -> Outside {
    Outside::at(
        format!("dkno{}{n}", std::process::id() % 10_000),
        format!("dknu{}{n}", std::process::id() % 10_000),
        &format!("10.192.{n}"),
    )
}

/// Pings `ip` (a name or an address) from container `from`, twice; whether both came back.
fn ping(d: &Docker, from: &str, ip: &str) -> bool {
    let r = d.exec(from, &format!("ping -c 2 -i 0.2 -W 2 -q {ip}"));
    r.code == 0 && r.stdout.contains("2 packets received")
}

/// The ports of the switch of network `id` whose owner is a Docker endpoint's.
fn docker_ports(id: &str) -> Vec<Value> {
    let ports = json(&["ports", "--switch", &switch_of(id)]);
    ports.as_array().unwrap().iter().filter(|p| p["kind"] == "adopted").cloned().collect()
}

/// The port of endpoint `ep`.
fn port_of(id: &str, ep: &str) -> Option<Value> {
    docker_ports(id).into_iter().find(|p| p["owner"] == format!("dk-{}", &ep[..12]).as_str())
}

/// Host interfaces whose names start with `prefix`.
fn links_with(prefix: &str) -> Vec<String> {
    switch_tests::host_links().into_iter().filter(|l| l.starts_with(prefix)).collect()
}

/// Nothing is left of endpoint `ep` (of network `id`): no port, no veth end on the host, no
/// endpoint record.
fn endpoint_gone(id: &str, ep: &str) {
    assert!(port_of(id, ep).is_none(), "endpoint {ep} still has a port: {:?}", docker_ports(id));
    let left = links_with(&format!("dkc{}", &ep[..12]));
    assert!(left.is_empty(), "the container end of {ep} is left: {left:?}");
    let record = std::path::Path::new("/run/switch/docker").join(format!("{ep}.json"));
    assert!(!record.exists(), "{} is left", record.display());
}

/// `docker network rm NAME` leaves nothing of network `id`. Docker releases the endpoints of
/// removed containers in the background: until it has, it refuses (its "active endpoints").
fn network_removed(d: &Docker, name: &str, id: &str) {
    let mut last = None;
    let removed = eventually(|| {
        let r = d.docker(&["network", "rm", name]);
        let ok = r.code == 0;
        last = Some(r);
        ok
    });
    assert!(removed, "docker network rm {name}: {last:?}\n{}", d.plugin_log());
    network_left_nothing(d, name, id);
}

/// Nothing is left of removed network `id`: no switch, rule or network record.
fn network_left_nothing(d: &Docker, name: &str, id: &str) {
    let left = network_leftovers(id);
    assert!(left.is_empty(), "network {name} left {left:?}");
    let record = d.dir().join("driver/networks").join(format!("{id}.json"));
    assert!(!record.exists(), "{} is left", record.display());
}

#[test]
fn networks_with_options_and_refusals() {
    let mut d = Docker::new();
    let out = outside(1);
    // The driver's switches (other processes' come and go meanwhile).
    let driver_switches = || -> Vec<Value> {
        json(&["list"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["name"].as_str().unwrap().starts_with("dk-"))
            .cloned()
            .collect()
    };
    let before = driver_switches();
    // Refused: Docker shows the driver's one line, and nothing is made.
    for (opt, says) in [
        ("bogus=1", "unknown option 'bogus'"),
        ("datapath=nope", "datapath=nope: one of tc, xdp, userspace, bridge"),
        ("mtu=20", "mtu=20: a number from 68 to 65535"),
        ("masquerade=maybe", "masquerade=maybe: true or false"),
    ] {
        let r = d.docker(&["network", "create", "-d", &d.driver, "--subnet", "10.191.1.0/24", "-o", opt, "dkbad"]);
        assert_ne!(r.code, 0, "-o {opt} was taken");
        assert!(r.stderr.contains(says), "-o {opt}: Docker said {:?}", r.stderr);
        assert_eq!(r.stderr.trim().lines().count(), 1, "{:?}", r.stderr);
    }
    assert_eq!(driver_switches(), before, "a refused network left a switch");
    let up = &format!("uplink={}", out.uplink);
    let id = d.network("dkn1", "10.191.1.0/24", &[up, "mtu=1400", "datapath=tc"]);
    let sw = switch_of(&id);
    let listed = json(&["list"]);
    let s = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == sw.as_str())
        .unwrap_or_else(|| panic!("no switch {sw}: {listed}"));
    assert_eq!(s["datapath"], "tc", "{s}");
    let ports = json(&["ports", "--switch", &sw]);
    let kinds: BTreeSet<String> =
        ports.as_array().unwrap().iter().map(|p| format!("{} {}", p["kind"], p["ip"])).collect();
    assert!(kinds.contains("\"gateway\" \"10.191.1.1/24\""), "{ports}");
    assert!(
        ports.as_array().unwrap().iter().any(|p| p["kind"] == "uplink" && p["owner"] == out.uplink.as_str()),
        "{ports}"
    );
    // The containers get the network's MTU; an address on the segment; the gateway Docker's.
    d.run("dka", "dkn1", &[], IDLE);
    let mtu = d.exec("dka", "cat /sys/class/net/eth0/mtu");
    assert_eq!(mtu.stdout.trim(), "1400", "{mtu:?}");
    let route = d.exec("dka", "ip route");
    assert!(route.stdout.contains("default via 10.191.1.1 dev eth0"), "{route:?}");
    // A second network on the same uplink, with port security off.
    let id2 = d.network("dkn2", "10.191.2.0/24", &[up, "port-security=false"]);
    d.run("dkb", "dkn2", &[], IDLE);
    let p = docker_ports(&id2);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0]["security"], "off", "{p:?}");
    d.ok(&["rm", "-f", "dka", "dkb"]);
    network_removed(&d, "dkn1", &id);
    network_removed(&d, "dkn2", &id2);
}

#[test]
fn containers_reach_each_other_the_gateway_and_the_outside() {
    let mut d = Docker::new();
    let out = outside(2);
    let id = d.network("dkn", "10.191.3.0/24", &[&format!("uplink={}", out.uplink)]);
    d.serve("dka", "dkn", &[]);
    d.run("dkb", "dkn", &[], IDLE);
    let (a, b) = (d.address("dka", "dkn"), d.address("dkb", "dkn"));
    // Each is a port bound to the address and MAC Docker gave it, named by its endpoint.
    for (name, ip) in [("dka", &a), ("dkb", &b)] {
        let ep = d.endpoint(name, "dkn");
        let p = port_of(&id, &ep).unwrap_or_else(|| panic!("{name} has no port: {:?}", docker_ports(&id)));
        assert_eq!(p["ip"], format!("{ip}/24").as_str(), "{p}");
        assert_eq!(p["security"], "mac+ip", "{p}");
        let mac = d.ok(&["inspect", "-f", "{{(index .NetworkSettings.Networks \"dkn\").MacAddress}}", name]);
        assert_eq!(p["mac"], mac.as_str(), "{name}'s port is bound to another MAC than eth0's");
        // Named by the container, as Docker's API says (the driver protocol does not).
        let named = eventually(|| port_of(&id, &ep).is_some_and(|p| p["workload"] == name));
        assert!(named, "{name}'s port is not labelled with its name: {:?}\n{}", port_of(&id, &ep), d.plugin_log());
    }
    assert!(ping(&d, "dkb", &a), "dkb cannot reach dka by address");
    assert!(ping(&d, "dkb", "dka"), "dkb cannot reach dka by name (Docker's DNS)");
    assert!(ping(&d, "dka", "10.191.3.1"), "dka cannot reach its gateway");
    let page = d.exec("dkb", &http_get_cmd("dka", 80, "/"));
    assert_eq!(page.stdout.trim(), "dka", "{page:?}");
    // The outside: ping, and TCP arriving from the uplink's address (masqueraded).
    assert!(ping(&d, "dka", "10.192.2.2"), "dka cannot reach the outside");
    let mut peer = out.spawn_python(switch_tests::outside::PEER_SERVER, &["9000"]);
    let got = d.exec("dkb", "nc -w 3 10.192.2.2 9000");
    assert!(got.stdout.starts_with("peer 10.192.2.1:"), "not masqueraded: {got:?}");
    let _ = peer.wait();
    // docker rm leaves nothing of the containers, network rm nothing of the network.
    let eps = [d.endpoint("dka", "dkn"), d.endpoint("dkb", "dkn")];
    d.ok(&["rm", "-f", "dka", "dkb"]);
    for ep in &eps {
        endpoint_gone(&id, ep);
    }
    network_removed(&d, "dkn", &id);
}

#[test]
fn published_ports_from_outside_the_host_and_another_container() {
    let mut d = Docker::new();
    let out = outside(3);
    let id = d.network("dkn", "10.191.4.0/24", &[&format!("uplink={}", out.uplink)]);
    d.serve("dkweb", "dkn", &["-p", "17380:80"]);
    d.serve("dkany", "dkn", &["-p", "80"]);
    d.run("dkcli", "dkn", &[], IDLE);
    let web = d.address("dkweb", "dkn");
    // From outside, through the uplink: the server sees the client's own address.
    let curl = |url: &str| {
        let o = std::process::Command::new("ip")
            .args(["netns", "exec", &out.ns, "curl", "-s", "-m", "5", url])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    };
    assert_eq!(curl("http://10.192.3.1:17380/"), "dkweb", "{}", d.plugin_log());
    let peer = curl("http://10.192.3.1:17380/cgi-bin/peer");
    // httpd listens on IPv6 too: an IPv4 client is `[::ffff:A.B.C.D]`.
    let kept = peer == "peer 10.192.3.2" || peer == "peer [::ffff:10.192.3.2]";
    assert!(kept, "the client's address was not kept: {peer:?}");
    // From the host.
    let host = std::process::Command::new("curl").args(["-s", "-m", "5", "http://127.0.0.1:17380/"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&host.stdout).trim(), "dkweb");
    // From another container of the network, to the uplink's address (hairpin).
    let hairpin = d.exec("dkcli", &http_get_cmd("10.192.3.1", 17380, "/"));
    assert_eq!(hairpin.stdout.trim(), "dkweb", "{hairpin:?}");
    // `-p 80`: a free host port from Docker's range, listed by the switch.
    let forwards = json(&["forward", "list", "--switch", &switch_of(&id)]);
    let rows = forwards.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{forwards}");
    assert!(rows.iter().any(|f| f["host_ports"] == "17380" && f["to"] == format!("{web}:80").as_str()), "{forwards}");
    let any: u16 = rows
        .iter()
        .find(|f| f["host_ports"] != "17380")
        .and_then(|f| f["host_ports"].as_str()?.parse().ok())
        .unwrap_or_else(|| panic!("no forward for -p 80: {forwards}"));
    assert!((49153..=60999).contains(&any), "-p 80 got host port {any}");
    assert_eq!(curl(&format!("http://10.192.3.1:{any}/")), "dkany");
    // docker rm takes the forwards along.
    d.ok(&["rm", "-f", "dkweb", "dkany", "dkcli"]);
    let forwards = json(&["forward", "list", "--switch", &switch_of(&id)]);
    assert_eq!(forwards.as_array().unwrap().len(), 0, "{forwards}");
    network_removed(&d, "dkn", &id);
}

/// A `switch monitor` of switch `sw` (`--json` or text, drops only), its output in a file
/// read back; stopped on drop.
struct Monitor {
    child: std::process::Child,
    out: std::path::PathBuf,
}

impl Monitor {
    fn start(d: &Docker, sw: &str, json: bool) -> Self {
        let out = d.dir().join(format!("monitor-{json}.out"));
        let mut cmd = std::process::Command::new(switch_tests::switch_bin());
        cmd.args(if json { &["--json"][..] } else { &[][..] });
        cmd.args(["monitor", "--switch", sw, "--type", "drop"]);
        let child = cmd.stdout(std::fs::File::create(&out).unwrap()).stderr(std::process::Stdio::null()).spawn();
        Self { child: child.unwrap(), out }
    }

    /// The first line matching `f` within 60 s.
    fn line(&self, f: impl Fn(&str) -> bool) -> Option<String> {
        let mut found = None;
        eventually(|| {
            found = std::fs::read_to_string(&self.out).unwrap_or_default().lines().find(|l| f(l)).map(str::to_owned);
            found.is_some()
        });
        found
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        switch_tests::interrupt_and_reap(&mut self.child);
    }
}

/// The row of `rows` (a JSON array) whose `field` is `value`.
fn row_with(rows: &Value, field: &str, value: &str) -> Value {
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r[field] == value)
        .cloned()
        .unwrap_or_else(|| panic!("{field} {value}: {rows}"))
}

/// The text line of `switch ARGS` that mentions `what`.
fn line_with(args: &[&str], what: &str) -> String {
    let out = switch_tests::ok(args);
    out.lines().find(|l| l.contains(what)).map(str::to_owned).unwrap_or_else(|| panic!("{args:?}: no {what}:\n{out}"))
}

/// Docker's containers by name, as `switch ports` has them (the port's workload), in `forward
/// list` (the forward of a `-p` to it), `stats` (its port's row) and `monitor` (an event of its
/// port), in text and in `--json`.
#[test]
fn containers_are_named_in_ports_forwards_stats_and_monitor() {
    let mut d = Docker::new();
    let out = outside(9);
    let id = d.network("dkn", "10.191.20.0/24", &[&format!("uplink={}", out.uplink)]);
    let sw = switch_of(&id);
    d.serve("dkweb", "dkn", &["-p", "17980:80"]);
    d.run("dkspoof", "dkn", &["--cap-add", "NET_ADMIN"], IDLE);
    let (web, spoof) = (d.endpoint("dkweb", "dkn"), d.endpoint("dkspoof", "dkn"));
    for (name, ep) in [("dkweb", &web), ("dkspoof", &spoof)] {
        let named = eventually(|| port_of(&id, ep).is_some_and(|p| p["workload"] == name));
        assert!(named, "{name}'s port is not labelled: {:?}\n{}", port_of(&id, ep), d.plugin_log());
    }
    let port = port_of(&id, &web).unwrap();
    let (owner, iface) = (port["owner"].as_str().unwrap(), port["interface"].as_str().unwrap());
    let text = line_with(&["ports", "--switch", &sw], iface);
    assert!(text.split_whitespace().any(|w| w == "dkweb"), "{text}");
    // forward list: the -p forward goes to dkweb.
    let forwards = json(&["forward", "list", "--switch", &sw]);
    let f = row_with(&forwards, "host_ports", "17980");
    assert_eq!((f["namespace"].as_str(), f["workload"].as_str()), (Some(owner), Some("dkweb")), "{f}");
    let text = line_with(&["forward", "list", "--switch", &sw], "17980");
    assert!(text.split_whitespace().any(|w| w == "dkweb"), "{text}");
    // stats: each container's port row.
    let stats = json(&["stats", "--switch", &sw]);
    assert_eq!(row_with(&stats["ports"], "interface", iface)["workload"], "dkweb", "{stats}");
    let text = line_with(&["stats", "--switch", &sw], iface);
    assert!(text.split_whitespace().any(|w| w == "dkweb"), "{text}");
    // monitor: dkspoof sends from an address not its own; the drop names it.
    let (as_json, as_text) = (Monitor::start(&d, &sw, true), Monitor::start(&d, &sw, false));
    let on = || switch_tests::config_flag(&sw, switch_common::CFG_F_EVENTS);
    assert!(eventually(on), "the monitors did not turn events on");
    std::thread::sleep(std::time::Duration::from_millis(500));
    d.ok(&["exec", "dkspoof", "ip", "addr", "add", "10.191.20.99/24", "dev", "eth0"]);
    d.exec("dkspoof", "ping -c 1 -W 1 -I 10.191.20.99 10.191.20.1");
    let event = as_json.line(|l| l.contains("spoofed")).unwrap_or_else(|| panic!("no drop event"));
    let event: Value = serde_json::from_str(&event).unwrap();
    assert_eq!(event["workload"], "dkspoof", "{event}");
    let text = as_text.line(|l| l.contains("spoofed")).unwrap_or_else(|| panic!("no drop line"));
    assert!(text.contains("(dkspoof)"), "{text}");
    drop((as_json, as_text));
    d.ok(&["rm", "-f", "dkweb", "dkspoof"]);
    network_removed(&d, "dkn", &id);
}

/// A container that takes over the address of a removed one is reached from the host at
/// once: it gets the same MAC (derived from the address, as Docker's bridge does), so the
/// host's neighbour entry for the address stays right (with another MAC it went to the old
/// one for seconds).
#[test]
fn a_reused_address_is_reached_at_once() {
    let mut d = Docker::new();
    let id = d.network("dkn", "10.191.21.0/24", &[]);
    let ip = "10.191.21.50";
    let reach = || {
        let mut ping = std::process::Command::new("ping");
        ping.args(["-n", "-q", "-c", "1", "-i", "0.2", "-w", "3", ip])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let mac = |name: &str| d.ok(&["inspect", "-f", "{{(index .NetworkSettings.Networks \"dkn\").MacAddress}}", name]);
    d.run("dka", "dkn", &["--ip", ip], IDLE);
    assert!(eventually(reach), "dka at {ip} is not reached from the host");
    let first = mac("dka");
    d.ok(&["rm", "-f", "dka"]);
    d.run("dkb", "dkn", &["--ip", ip], IDLE);
    let neighbours = switch_tests::host("ip", &["neigh", "show", ip]);
    assert!(reach(), "dkb at the reused address {ip} is not reached at once (host's entry: {neighbours})");
    assert_eq!(mac("dkb"), first, "the reused address got another MAC");
    d.ok(&["rm", "-f", "dkb"]);
    network_removed(&d, "dkn", &id);
}

#[test]
fn the_plugin_restarts_with_containers_running() {
    let mut d = Docker::new();
    let id = d.network("dkn", "10.191.5.0/24", &[]);
    d.run("dka", "dkn", &[], IDLE);
    d.run("dkb", "dkn", &[], IDLE);
    d.stop_plugin();
    // Switched in the kernel: no driver needed.
    assert!(ping(&d, "dka", "dkb"), "the containers lost each other with the plugin stopped");
    // A container started meanwhile: Docker says so, and nothing is half-made.
    let r = d.docker(&["run", "-d", "--name", "dkdown", "--network", "dkn", switch_tests::docker::IMAGE, "sleep", "1"]);
    assert_ne!(r.code, 0, "a container started without its driver");
    assert!(r.stderr.contains(&d.driver), "Docker's error does not name the driver: {:?}", r.stderr);
    eprintln!("with the plugin down, Docker said: {}", r.stderr.trim());
    assert_eq!(docker_ports(&id).len(), 2, "{:?}", docker_ports(&id));
    d.start_plugin();
    d.run("dkc", "dkn", &[], IDLE);
    assert!(ping(&d, "dkc", "dka"), "a container made after the restart cannot reach an earlier one");
    let ep = d.endpoint("dka", "dkn");
    d.ok(&["rm", "-f", "dka"]);
    endpoint_gone(&id, &ep);
    assert_eq!(docker_ports(&id).len(), 2, "{:?}", docker_ports(&id));
    d.ok(&["rm", "-f", "dkb", "dkc"]);
    network_removed(&d, "dkn", &id);
}

#[test]
fn docker_restarts_with_containers_running() {
    let mut d = Docker::new();
    let out = outside(6);
    let id = d.network("dkn", "10.191.6.0/24", &[&format!("uplink={}", out.uplink)]);
    d.serve("dkweb", "dkn", &["--restart", "always", "-p", "17680:80"]);
    d.run("dkcli", "dkn", &["--restart", "always"], IDLE);
    let old = d.endpoint("dkweb", "dkn");
    d.restart_daemon();
    let up = eventually(|| d.ok(&["ps", "-q"]).lines().count() == 2);
    assert!(up, "the containers did not come back: {}", d.ok(&["ps", "-a"]));
    let new = d.endpoint("dkweb", "dkn");
    endpoint_gone(&id, &old);
    assert!(port_of(&id, &new).is_some(), "{:?}", docker_ports(&id));
    assert_eq!(docker_ports(&id).len(), 2, "{:?}", docker_ports(&id));
    let served = eventually(|| d.exec("dkcli", &http_get_cmd("dkweb", 80, "/")).stdout.trim() == "dkweb");
    assert!(served, "dkcli does not reach dkweb by name after the restart");
    let page = d.exec("dkcli", &http_get_cmd("10.192.6.1", 17680, "/"));
    assert_eq!(page.stdout.trim(), "dkweb", "the published port is gone: {page:?}");
    d.ok(&["rm", "-f", "dkweb", "dkcli"]);
    network_removed(&d, "dkn", &id);
}

#[test]
fn a_reboot_makes_the_switch_again_from_the_kept_options() {
    let mut d = Docker::new();
    let out = outside(7);
    let id = d.network("dkn", "10.191.7.0/24", &[&format!("uplink={}", out.uplink), "mtu=1450"]);
    d.run("dka", "dkn", &["--restart", "always"], IDLE);
    // What a reboot empties: the host's switch, ports and rules, the driver's /run records.
    d.stop_plugin();
    if let Some(c) = d.stop_daemon() {
        panic!("{c}");
    }
    switch_tests::ok(&["down", "--switch", &switch_of(&id)]);
    let rules = network_leftovers(&id);
    assert_eq!(rules.len(), 3, "the network's iptables rules were expected: {rules:?}");
    for e in std::fs::read_dir("/run/switch/docker").unwrap().filter_map(Result::ok) {
        if std::fs::read_to_string(e.path()).is_ok_and(|r| r.contains(&id)) {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    d.start_plugin();
    d.start_daemon();
    let up = eventually(|| d.ok(&["ps", "-q"]).lines().count() == 1);
    assert!(up, "dka did not come back: {}\n{}", d.ok(&["ps", "-a"]), d.plugin_log());
    assert_eq!(docker_ports(&id).len(), 1, "{:?}", docker_ports(&id));
    assert_eq!(d.exec("dka", "cat /sys/class/net/eth0/mtu").stdout.trim(), "1450");
    assert!(ping(&d, "dka", "10.192.7.2"), "dka cannot reach the outside after the reboot");
    d.ok(&["rm", "-f", "dka"]);
    network_removed(&d, "dkn", &id);
}

#[test]
fn twenty_containers_at_once() {
    let mut d = Docker::new();
    let id = d.network("dkn", "10.191.8.0/24", &[]);
    let names: Vec<String> = (0..20).map(|i| format!("dk{i:02}")).collect();
    std::thread::scope(|s| {
        for n in &names {
            let d = &d;
            s.spawn(move || d.run(n, "dkn", &[], IDLE));
        }
    });
    let ports = docker_ports(&id);
    assert_eq!(ports.len(), 20, "{ports:?}");
    let addrs: BTreeSet<String> = ports.iter().map(|p| p["ip"].as_str().unwrap().to_owned()).collect();
    assert_eq!(addrs.len(), 20, "{addrs:?}");
    for (a, b) in [(0, 19), (7, 13), (19, 1)] {
        assert!(ping(&d, &names[a], &names[b]), "{} cannot reach {}", names[a], names[b]);
    }
    let mut a = vec!["rm", "-f"];
    a.extend(names.iter().map(String::as_str));
    d.ok(&a);
    assert!(docker_ports(&id).is_empty(), "{:?}", docker_ports(&id));
    network_removed_after_a_batch(&mut d, "dkn", &id);
}

/// `network_removed` for a network whose 20 containers went in one `docker rm`: Docker 20.10
/// now and then keeps counting an endpoint of such a batch after every endpoint's Leave and
/// DeleteEndpoint succeeded (its "has active endpoints" with no container left on the
/// network, for good: seen in about one full run in three, never alone). A daemon restart
/// recounts them (Docker's own remedy for stale endpoints); the driver's part is checked
/// either way (every port gone above, the network's switch and rules by `network_removed`).
fn network_removed_after_a_batch(d: &mut Docker, name: &str, id: &str) {
    let gone = container_env::command::wait_until(std::time::Duration::from_secs(15), || {
        d.docker(&["network", "rm", name]).code == 0
    });
    let attached = d.docker(&["network", "inspect", "-f", "{{len .Containers}}", name]);
    if !gone && attached.stdout.trim() == "0" {
        eprintln!("docker: network {name} has no container but 'active endpoints': restarting dockerd");
        d.restart_daemon();
    }
    if gone {
        network_left_nothing(d, name, id);
    } else {
        network_removed(d, name, id);
    }
}

/// `POST /METHOD BODY` to the plugin at `socket`, as dockerd sends it; the JSON reply.
fn call(socket: &std::path::Path, method: &str, body: &str) -> Value {
    let out = std::process::Command::new("curl")
        .args(["-s", "-m", "20", "--unix-socket"])
        .arg(socket)
        .args(["-H", "Content-Type: application/vnd.docker.plugins.v1.2+json", "-d", body])
        .arg(format!("http://docker/{method}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method}: not JSON ({e}): {text:?}"))
}

/// The protocol without Docker: what dockerd would send, straight to the plugin's socket.
/// Join is idempotent (the same answer, one port) while its far end waits on the host, and
/// makes the port anew once that end went into a namespace (a container that restarted);
/// Leave and DeleteEndpoint twice are fine; errors are `{"Err": ...}`.
#[test]
fn the_protocol_join_is_idempotent_and_errors_are_one_line() {
    let dir = std::env::temp_dir().join(format!("switch-docker-proto-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("dkproto.sock");
    let plugin = std::process::Command::new(switch_tests::switch_bin())
        .args(["docker-plugin", "--socket"])
        .arg(&socket)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut plugin = switch_tests::Reaped::new(plugin);
    assert!(eventually(|| socket.exists()), "the plugin does not serve");
    let (net, ep) = (format!("{:064x}", 0xdc0ffee_u64 + u64::from(std::process::id())), format!("{:064x}", 0xe9_u64));
    let sw = switch_of(&net);
    // A namespace for the "sandbox" (Docker makes it after Join; here it exists already).
    let sandbox = format!("dknp{}", std::process::id() % 10_000);
    switch_tests::host("ip", &["netns", "add", &sandbox]);
    let cleanup = Cleanup { netns: sandbox.clone(), switch: sw.clone(), net: net.clone() };

    assert_eq!(call(&socket, "Plugin.Activate", ""), serde_json::json!({"Implements": ["NetworkDriver"]}));
    assert_eq!(call(&socket, "NetworkDriver.GetCapabilities", "")["Scope"], "local");
    let err = call(&socket, "NetworkDriver.Nope", "{}");
    assert!(err["Err"].as_str().is_some_and(|e| e.contains("not a call") && !e.contains('\n')), "{err}");
    let err = call(&socket, "NetworkDriver.CreateNetwork", "{not json");
    assert!(err["Err"].as_str().is_some_and(|e| e.contains("not JSON")), "{err}");
    let unknown = serde_json::json!({"NetworkID": net, "EndpointID": ep, "Interface": {"Address": "10.191.9.2/24"}});
    let err = call(&socket, "NetworkDriver.CreateEndpoint", &unknown.to_string());
    assert!(err["Err"].as_str().is_some_and(|e| e.contains("not known to the switch driver")), "{err}");

    let create = serde_json::json!({
        "NetworkID": net,
        "Options": {"com.docker.network.generic": {"mtu": "1400"}},
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "10.191.9.0/24", "Gateway": "10.191.9.1/24"}],
        "IPv6Data": [],
    });
    assert_eq!(call(&socket, "NetworkDriver.CreateNetwork", &create.to_string()), serde_json::json!({}));
    let made = call(&socket, "NetworkDriver.CreateEndpoint", &unknown.to_string());
    let mac = made["Interface"]["MacAddress"].as_str().unwrap_or_else(|| panic!("no MAC chosen: {made}")).to_owned();
    assert!(made["Interface"].get("Address").is_none(), "the driver must not answer what Docker gave: {made}");
    let join = serde_json::json!({"NetworkID": net, "EndpointID": ep, "SandboxKey": format!("/run/netns/{sandbox}")});
    let first = call(&socket, "NetworkDriver.Join", &join.to_string());
    let src = first["InterfaceName"]["SrcName"].as_str().unwrap_or_else(|| panic!("{first}")).to_owned();
    assert_eq!(first["InterfaceName"]["DstPrefix"], "eth");
    assert_eq!(first["Gateway"], "10.191.9.1");
    let ports = || {
        json(&["ports", "--switch", &sw])
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["kind"] == "adopted")
            .cloned()
            .collect::<Vec<_>>()
    };
    let before = ports();
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0]["mac"], mac.as_str());
    assert_eq!(before[0]["ip"], "10.191.9.2/24");
    assert_eq!(switch_tests::host("cat", &[&format!("/sys/class/net/{src}/mtu")]).trim(), "1400");
    // Again: the same answer, the same port.
    assert_eq!(call(&socket, "NetworkDriver.Join", &join.to_string()), first);
    assert_eq!(ports(), before, "a repeated Join changed the port");
    // Docker moves the far end into the sandbox; a Join again (a restarted container) makes
    // the port anew, its far end waiting on the host again.
    switch_tests::host("ip", &["link", "set", &src, "netns", &sandbox]);
    assert_eq!(call(&socket, "NetworkDriver.Join", &join.to_string()), first);
    assert!(std::path::Path::new("/sys/class/net").join(&src).exists(), "no far end waits on the host");
    assert_eq!(ports().len(), 1, "{:?}", ports());
    let r = serde_json::json!({"NetworkID": net, "EndpointID": ep});
    for method in ["Leave", "Leave", "DeleteEndpoint", "DeleteEndpoint"] {
        assert_eq!(
            call(&socket, &format!("NetworkDriver.{method}"), &r.to_string()),
            serde_json::json!({}),
            "{method}"
        );
    }
    assert!(ports().is_empty(), "{:?}", ports());
    assert_eq!(
        call(&socket, "NetworkDriver.DeleteNetwork", &serde_json::json!({"NetworkID": net}).to_string()),
        serde_json::json!({})
    );
    assert!(network_leftovers(&net).is_empty());
    drop(cleanup);
    // SAFETY: signals the plugin this test started.
    unsafe { libc::kill(plugin.id() as i32, libc::SIGTERM) };
    assert!(eventually(|| plugin.try_wait().ok().flatten().is_some()), "the plugin did not stop on SIGTERM");
    assert!(!socket.exists(), "the plugin left its socket");
    let _ = std::fs::remove_dir_all(&dir);
}

/// What the protocol test made, removed also when it fails.
struct Cleanup {
    netns: String,
    switch: String,
    net: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = switch_tests::switch(&["down", "--switch", &self.switch]);
        let _ = network_leftovers(&self.net);
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.netns]).status();
    }
}

/// Every datapath takes Docker's ports (their far ends handed over to Docker): two containers
/// reach each other by name and their gateway; the ports go with the containers.
#[test]
fn every_datapath_switches_containers() {
    let mut d = Docker::new();
    for (i, datapath) in ["tc", "xdp", "userspace", "bridge"].into_iter().enumerate() {
        let net = format!("dk{datapath}");
        let id = d.network(&net, &format!("10.191.{}.0/24", 10 + i), &[&format!("datapath={datapath}")]);
        let (a, b) = (format!("{net}a"), format!("{net}b"));
        d.run(&a, &net, &[], IDLE);
        d.run(&b, &net, &[], IDLE);
        assert!(ping(&d, &a, &b), "{datapath}: {a} cannot reach {b} by name");
        assert!(ping(&d, &b, &format!("10.191.{}.1", 10 + i)), "{datapath}: {b} cannot reach the gateway");
        d.ok(&["rm", "-f", &a, &b]);
        assert!(docker_ports(&id).is_empty(), "{datapath}: {:?}", docker_ports(&id));
        network_removed(&d, &net, &id);
    }
}
