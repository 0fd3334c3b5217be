//! Containers under real podman on a CNI network (issue #12): two containers ping each other
//! and the gateway and `podman inspect` shows their address and MAC; a published port answers
//! from an outside namespace through an uplink, from the host at 127.0.0.1 and at the uplink
//! address, and from another container (hairpin), and the server records who connected;
//! `podman stop`, `restart` and `rm -f` leave no interface, address reservation, rule or
//! namespace; 20 containers started at once all get addresses and connectivity.
//!
//! Every test body takes the [`NetKind`] it runs on, and [`network_matrix!`] instantiates it
//! per kind: today podman's own bridge+portmap network (the baseline the switch's CNI plugin
//! is measured against); a switch-cni kind runs the same bodies once `Podman::network` writes
//! its conflist. Where the kinds legitimately differ (which client address the server sees),
//! the bodies `match` on the kind, so a new kind has to state its expectation.
//!
//! Traffic goes only to addresses inside namespaces the tests make (containers, the outside
//! namespace) and to the host's own addresses on their links; nothing touches eth0.
use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use container_env::command::wait_until;
use switch_tests::{
    Run, host,
    podman::{NetKind, Network, Podman, sh},
    switch_bin,
};

/// Instantiates each listed `fn name(kind: NetKind)` once per network kind, as
/// `bridge::name` (and later `switch_cni::name`).
macro_rules! network_matrix {
    ($($test:ident),* $(,)?) => {
        mod bridge {
            $(
                #[test]
                fn $test() {
                    super::$test(switch_tests::podman::NetKind::Bridge)
                }
            )*
        }
        mod switch_cni {
            $(
                #[test]
                fn $test() {
                    super::$test(switch_tests::podman::NetKind::SwitchCni)
                }
            )*
        }
    };
}

network_matrix!(ping_and_inspect, published_port, stop_restart_rm, parallel_starts, dual_stack);

/// Where the workspace's binaries are built: switch-cni lands next to `switch`, so this is
/// the first CNI plugin directory of every environment.
fn plugin_dir() -> PathBuf {
    switch_bin().parent().expect("switch binary in a directory").to_owned()
}

/// A container that only idles.
const IDLE: &[&str] = &["sleep", "3600"];

/// An HTTP server whose /cgi-bin/peer answers `client ADDRESS` with the address of whoever
/// connected: the server's own record of its client, which the tests compare with the
/// address the client really has.
const HTTPD: &str = r#"mkdir -p /www/cgi-bin && printf '#!/bin/sh\necho Content-Type: text/plain\necho\necho "client $REMOTE_ADDR"\n' > /www/cgi-bin/peer && chmod +x /www/cgi-bin/peer && exec httpd -f -v -p 80 -h /www"#;

/// A shell command that asks the server at `addr:port` who is connecting, with `nc` (busybox
/// `wget` crashes in Debian 12's busybox-static 1.35, in and out of containers).
fn ask(nc: &str, addr: &str, port: &str) -> String {
    format!(r"printf 'GET /cgi-bin/peer HTTP/1.0\r\n\r\n' | {nc} -w 3 {addr} {port}")
}

/// The client address the server reports in `r`'s output, if it answered. Busybox httpd
/// listens on IPv6, so IPv4 clients arrive as `[::ffff:A.B.C.D]`.
fn peer(r: &Run) -> Option<String> {
    let a = r.stdout.lines().find_map(|l| l.strip_prefix("client "))?.trim();
    let a = a.trim_start_matches('[').split(']').next()?;
    Some(a.strip_prefix("::ffff:").unwrap_or(a).to_owned())
}

/// Asks from the host.
fn ask_host(addr: &str, port: &str) -> Option<String> {
    peer(&sh(&ask("busybox nc", addr, port)))
}

/// Asks from container `from`.
fn ask_container(pm: &Podman, from: &str, addr: &str, port: &str) -> Option<String> {
    peer(&pm.exec(from, &["sh", "-c", &ask("nc", addr, port)]))
}

/// Pings `ip` from container `from` (twice); returns whether both replies came.
fn ping(pm: &Podman, from: &str, ip: &str) -> bool {
    let r = pm.exec(from, &["ping", "-c", "2", "-i", "0.2", "-W", "2", "-q", ip]);
    r.code == 0 && r.stdout.contains("2 packets received")
}

/// Pings `ip` from the host once.
fn ping_host(ip: &str) -> bool {
    Command::new("ping").args(["-c", "1", "-W", "2", "-q", ip]).output().is_ok_and(|o| o.status.success())
}

/// A unicast MAC that is not all zeros, as `aa:bb:cc:dd:ee:ff`.
fn valid_mac(mac: &str) -> bool {
    let bytes: Vec<u8> = mac.split(':').filter_map(|b| u8::from_str_radix(b, 16).ok()).collect();
    bytes.len() == 6 && mac.len() == 17 && bytes[0] & 1 == 0 && bytes.iter().any(|b| *b != 0)
}

/// A namespace standing for the outside world: a veth whose outside end (172.29.N.2) is in
/// the namespace with a default route to the host end (172.29.N.1), like an uplink.
struct Outside {
    ns: String,
    uplink: String,
    /// The host's address on the uplink.
    host_ip: String,
    /// The outside client's address.
    ip: String,
}

impl Outside {
    fn new(pm: &Podman, n: u8) -> Self {
        let (ns, uplink) = (format!("{}out", pm.prefix), format!("u{}", pm.prefix));
        let o = Self { ns, uplink, host_ip: format!("172.29.{n}.1"), ip: format!("172.29.{n}.2") };
        // Also removed by the environment's tear-down, or the next run if this one is killed.
        pm.own_netns(&o.ns);
        pm.own_link(&o.uplink);
        host("ip", &["netns", "add", &o.ns]);
        host("ip", &["link", "add", &o.uplink, "type", "veth", "peer", "name", "eth0", "netns", &o.ns]);
        host("ip", &["addr", "add", &format!("{}/24", o.host_ip), "dev", &o.uplink]);
        host("ip", &["link", "set", &o.uplink, "up"]);
        host("ip", &["-n", &o.ns, "addr", "add", &format!("{}/24", o.ip), "dev", "eth0"]);
        host("ip", &["-n", &o.ns, "link", "set", "eth0", "up"]);
        host("ip", &["-n", &o.ns, "link", "set", "lo", "up"]);
        host("ip", &["-n", &o.ns, "route", "add", "default", "via", &o.host_ip]);
        o
    }

    /// Asks the server at `addr:port` from the outside namespace.
    fn ask(&self, addr: &str, port: &str) -> Option<String> {
        let r: Run = Command::new("ip")
            .args(["netns", "exec", &self.ns, "sh", "-c", &ask("busybox nc", addr, port)])
            .output()
            .unwrap()
            .into();
        peer(&r)
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        // Quietly: the environment's tear-down may have removed them already.
        let _ = Command::new("ip").args(["link", "del", &self.uplink]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

/// Checks what a running container on `net` looks like from podman and from inside.
fn check_address(pm: &Podman, net: &Network, name: &str) -> switch_tests::podman::Inspect {
    let i = pm.inspect(name);
    assert!(i.running, "{name} is not running: {i:?}");
    assert!(net.holds(&i.ip), "{name}: podman shows address {:?}, not one of {}", i.ip, net.subnet);
    assert_eq!(i.prefix_len, 24, "{name}: {i:?}");
    assert_eq!(i.gateway, net.gateway, "{name}: {i:?}");
    assert!(valid_mac(&i.mac), "{name}: podman shows MAC {:?}", i.mac);
    assert!(std::path::Path::new(&i.netns).exists(), "{name} has no network namespace: {i:?}");
    i
}

/// Two containers ping each other and the gateway; podman reports the address and MAC the
/// container really has, each address is reserved once and each container has one port.
fn ping_and_inspect(kind: NetKind) {
    let t = Instant::now();
    let pm = Podman::new(&plugin_dir());
    let net = pm.network(kind, 101);
    let (a, b) = (pm.run_detached("a", &net.name, &[], IDLE), pm.run_detached("b", &net.name, &[], IDLE));
    let (ia, ib) = (check_address(&pm, &net, &a), check_address(&pm, &net, &b));
    assert_ne!(ia.ip, ib.ip);
    assert_ne!(ia.mac, ib.mac);
    for (name, i) in [(&a, &ia), (&b, &ib)] {
        let mac = pm.exec(name, &["cat", "/sys/class/net/eth0/address"]);
        assert_eq!(mac.stdout.trim(), i.mac, "{name}: podman's MAC is not eth0's");
        let addr = pm.exec(name, &["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
        assert!(
            addr.stdout.contains(&format!("inet {}/24 ", i.ip)),
            "{name}: eth0 has {:?}, podman says {}",
            addr.stdout,
            i.ip
        );
        let route = pm.exec(name, &["ip", "route", "show", "default"]);
        assert!(route.stdout.contains(&format!("via {}", net.gateway)), "{name}: default route {:?}", route.stdout);
    }
    let mut ips = vec![ia.ip.clone(), ib.ip.clone()];
    ips.sort();
    assert_eq!(net.reservations(), ips, "one reservation per container");
    assert_eq!(net.ports().len(), 2, "one host interface per container: {:?}", net.ports());
    assert!(ping(&pm, &a, &ib.ip), "{a} -> {b} ({})", ib.ip);
    assert!(ping(&pm, &b, &ia.ip), "{b} -> {a} ({})", ia.ip);
    assert!(ping(&pm, &a, &net.gateway), "{a} -> gateway {}", net.gateway);
    assert!(ping(&pm, &b, &net.gateway), "{b} -> gateway {}", net.gateway);
    assert!(ping_host(&ia.ip) && ping_host(&ib.ip), "host -> containers");
    drop(pm);
    eprintln!("ping_and_inspect({kind:?}): {:?}", t.elapsed());
}

/// A dual-stack network (host-local with an IPv4 and an IPv6 range, what `podman network
/// create --ipv6` writes for the bridge): each container has an address of each family on
/// eth0 and podman shows the IPv6 one; they reach each other, the gateway and the host over
/// IPv6; removing them gives back both families' reservations.
fn dual_stack(kind: NetKind) {
    let pm = Podman::new(&plugin_dir());
    let net = pm.network_dual(kind, 107);
    let gw6 = net.gateway6.clone().unwrap();
    let (a, b) = (pm.run_detached("a", &net.name, &[], IDLE), pm.run_detached("b", &net.name, &[], IDLE));
    let (ia, ib) = (check_address(&pm, &net, &a), check_address(&pm, &net, &b));
    for (name, i) in [(&a, &ia), (&b, &ib)] {
        assert!(i.ip6.starts_with("fd00:89:107::"), "{name}: podman shows no IPv6 address: {i:?}");
        let addr = pm.exec(name, &["ip", "-6", "-o", "addr", "show", "dev", "eth0"]);
        assert!(addr.stdout.contains(&format!("inet6 {}/64 ", i.ip6)), "{name}: eth0 has {:?}", addr.stdout);
        let route = pm.exec(name, &["ip", "-6", "route", "show", "default"]);
        assert!(route.stdout.contains(&format!("via {gw6}")), "{name}: default IPv6 route {:?}", route.stdout);
    }
    assert_eq!(net.reservations().len(), 4, "one reservation per container and family: {:?}", net.reservations());
    let ping6 = |from: &str, ip: &str| {
        let r = pm.exec(from, &["ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", "-q", ip]);
        r.code == 0 && r.stdout.contains("2 packets received")
    };
    assert!(ping6(&a, &ib.ip6), "{a} -> {b} ({})", ib.ip6);
    assert!(ping6(&b, &gw6), "{b} -> gateway {gw6}");
    assert!(ping(&pm, &a, &ib.ip), "IPv4 beside IPv6");
    let host = Command::new("ping").args(["-6", "-c", "1", "-W", "2", "-q", &ia.ip6]).output();
    assert!(host.is_ok_and(|o| o.status.success()), "host -> {a} over IPv6");
    pm.rm_f(&a);
    pm.rm_f(&b);
    assert!(net.reservations().is_empty(), "reservations left: {:?}", net.reservations());
}

/// Who the server sees when a client reaches a published port through the host: the real
/// client where the path has no reason to hide it; on bridge+portmap, portmap masquerades
/// what comes from 127.0.0.1 or from the container subnet (so the reply comes back through
/// the host), and the server sees the gateway.
///
/// On switch-cni the socket hooks point a connection to a published port straight at the
/// container, before any packet exists: a container is seen with its own address (hairpin),
/// and the host with its address on the segment (the gateway), whichever address it used.
fn expected_peer(kind: NetKind, net: &Network, client: &str, masqueraded: bool) -> String {
    match kind {
        NetKind::Bridge if masqueraded => net.gateway.clone(),
        NetKind::Bridge => client.to_owned(),
        NetKind::SwitchCni if net.holds(client) => client.to_owned(),
        NetKind::SwitchCni => net.gateway.clone(),
    }
}

/// `podman run -p HOSTPORT:80` with busybox httpd: it answers from an outside namespace
/// through the uplink (the server sees the real client), from the host at 127.0.0.1 and at
/// the uplink address, and from another container through the host port (hairpin) and
/// directly.
fn published_port(kind: NetKind) {
    let t = Instant::now();
    let pm = Podman::new(&plugin_dir());
    let out = Outside::new(&pm, 102);
    let net = pm.network_on(kind, 102, Some(&out.uplink));
    let port = "38102";
    let web = pm.run_detached("web", &net.name, &["-p", &format!("{port}:80")], &["sh", "-c", HTTPD]);
    let client = pm.run_detached("client", &net.name, &[], IDLE);
    let (w, c) = (check_address(&pm, &net, &web), check_address(&pm, &net, &client));
    assert!(
        wait_until(Duration::from_secs(10), || ask_host("127.0.0.1", port).is_some()),
        "the published port does not answer at 127.0.0.1:{port}"
    );
    let started = t.elapsed();

    let seen = out.ask(&out.host_ip, port);
    assert_eq!(seen, Some(out.ip.clone()), "outside -> uplink {}:{port}: the server sees the real client", out.host_ip);
    let seen = ask_host("127.0.0.1", port);
    assert_eq!(seen, Some(expected_peer(kind, &net, "127.0.0.1", true)), "host -> 127.0.0.1:{port}");
    let seen = ask_host(&out.host_ip, port);
    assert_eq!(seen, Some(expected_peer(kind, &net, &out.host_ip, false)), "host -> {}:{port}", out.host_ip);
    for addr in [&out.host_ip, &net.gateway] {
        let seen = ask_container(&pm, &client, addr, port);
        assert_eq!(seen, Some(expected_peer(kind, &net, &c.ip, true)), "{client} -> {addr}:{port} (hairpin)");
    }
    let seen = ask_container(&pm, &client, &w.ip, "80");
    assert_eq!(seen, Some(c.ip.clone()), "{client} -> {web} directly");
    // Another port of the host is not forwarded.
    assert_eq!(out.ask(&out.host_ip, "38199"), None, "an unpublished port answers");
    drop(out);
    drop(pm);
    eprintln!("published_port({kind:?}): {:?} (server answering after {started:?})", t.elapsed());
}

/// Checks that what the container `i` had on `net` is gone: its namespace, its rules, its
/// address reservation; `ports` host interfaces stay (the other containers').
fn check_released(net: &Network, i: &switch_tests::podman::Inspect, ports: usize, what: &str) {
    let gone = || {
        !std::path::Path::new(&i.netns).exists()
            && !net.reservations().contains(&i.ip)
            && net.ports().len() == ports
            && net.iptables_rules().iter().all(|r| !r.contains(&i.id))
    };
    assert!(
        wait_until(Duration::from_secs(5), gone),
        "{what} left: netns {} exists {}, reservations {:?} (had {}), ports {:?} (expected {ports}), rules {:?}",
        i.netns,
        std::path::Path::new(&i.netns).exists(),
        net.reservations(),
        i.ip,
        net.ports(),
        net.iptables_rules().iter().filter(|r| r.contains(&i.id)).collect::<Vec<_>>()
    );
}

/// `podman stop` and `podman rm -f` release the container's interface, address, port
/// mapping and namespace; `podman restart` (of a stopped and of a running container) brings
/// it back with working connectivity and nothing doubled; the name is free after `rm -f`.
fn stop_restart_rm(kind: NetKind) {
    let t = Instant::now();
    let pm = Podman::new(&plugin_dir());
    let net = pm.network(kind, 103);
    let port = "38103";
    let mapping = format!("{port}:80");
    let publish = ["-p", mapping.as_str()];
    let a = pm.run_detached("a", &net.name, &publish, &["sh", "-c", HTTPD]);
    let b = pm.run_detached("b", &net.name, &[], IDLE);
    let ia = check_address(&pm, &net, &a);
    let ib = check_address(&pm, &net, &b);
    let answers = || wait_until(Duration::from_secs(10), || ask_host("127.0.0.1", port).is_some());
    assert!(answers(), "{a}'s published port does not answer");
    if kind == NetKind::Bridge {
        // What must go: the masquerade chain and the port mapping, named by the container.
        let rules = net.iptables_rules();
        assert!(rules.iter().filter(|r| r.contains(&ia.id)).count() >= 2, "no rules of {a}: {rules:#?}");
    }

    pm.ok(&["stop", &a]);
    assert!(!pm.inspect(&a).running, "{a} still runs after stop");
    check_released(&net, &ia, 1, "podman stop");
    assert_eq!(ask_host("127.0.0.1", port), None, "a stopped container's port answers");

    pm.ok(&["restart", &a]);
    let ia2 = check_address(&pm, &net, &a);
    assert!(answers(), "{a}'s published port does not answer after restart (from stopped)");
    assert!(ping(&pm, &b, &ia2.ip) && ping(&pm, &a, &ib.ip), "{a} <-> {b} after restart");
    assert_eq!(net.reservations().len(), 2, "{:?}", net.reservations());
    assert_eq!(net.ports().len(), 2, "{:?}", net.ports());

    pm.ok(&["restart", &a]);
    let ia3 = check_address(&pm, &net, &a);
    assert_ne!(ia3.netns, ia2.netns, "restart kept the old namespace");
    assert!(!std::path::Path::new(&ia2.netns).exists(), "restart left the old namespace");
    assert!(answers(), "{a}'s published port does not answer after restart (from running)");
    assert!(ping(&pm, &b, &ia3.ip), "{b} -> {a} after the second restart");
    let mut ips = vec![ia3.ip.clone(), ib.ip.clone()];
    ips.sort();
    assert_eq!(net.reservations(), ips, "a restart doubles nothing");
    assert_eq!(net.ports().len(), 2, "{:?}", net.ports());

    pm.rm_f(&a);
    check_released(&net, &ia3, 1, "podman rm -f");
    assert_eq!(ask_host("127.0.0.1", port), None, "a removed container's port answers");
    let ps = pm.ok(&["ps", "--all", "--format", "{{.Names}}"]);
    assert_eq!(ps.lines().collect::<Vec<_>>(), [b.as_str()], "podman ps -a after rm -f");

    let again = pm.run_detached("a", &net.name, &publish, &["sh", "-c", HTTPD]);
    let i = check_address(&pm, &net, &again);
    assert!(answers(), "a new container on the released port does not answer");
    assert!(ping(&pm, &b, &i.ip), "{b} -> the new {again}");
    drop(pm);
    eprintln!("stop_restart_rm({kind:?}): {:?}", t.elapsed());
}

/// 20 containers started at once all get distinct addresses and connectivity (to the host,
/// to each other), and removing them at once releases everything.
fn parallel_starts(kind: NetKind) {
    const N: usize = 20;
    let t = Instant::now();
    let pm = Podman::new(&plugin_dir());
    let net = pm.network(kind, 104);
    let start = Instant::now();
    let results: Vec<Result<String, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..N)
            .map(|i| {
                let (pm, net) = (&pm, &net);
                s.spawn(move || pm.run_detached(&format!("c{i:02}"), &net.name, &[], IDLE))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().map_err(|p| {
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default()
                })
            })
            .collect()
    });
    let started = start.elapsed();
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failed.is_empty(), "{} of {N} parallel starts failed: {failed:#?}", failed.len());
    let names: Vec<String> = results.into_iter().map(Result::unwrap).collect();

    let infos: Vec<_> = names.iter().map(|n| check_address(&pm, &net, n)).collect();
    let mut ips: Vec<String> = infos.iter().map(|i| i.ip.clone()).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), N, "addresses are not distinct: {infos:#?}");
    let mut macs: Vec<&str> = infos.iter().map(|i| i.mac.as_str()).collect();
    macs.sort_unstable();
    macs.dedup();
    assert_eq!(macs.len(), N, "MACs are not distinct");
    assert_eq!(net.reservations(), ips, "one reservation per container");
    assert_eq!(net.ports().len(), N, "one host interface per container");
    let check = Instant::now();
    let unreachable: Vec<&String> = ips.iter().filter(|ip| !ping_host(ip)).collect();
    assert!(unreachable.is_empty(), "host -> {unreachable:?} failed");
    // The first container reaches every other one and the gateway, in one exec.
    let others: Vec<&str> = infos[1..].iter().map(|i| i.ip.as_str()).chain([net.gateway.as_str()]).collect();
    let script =
        format!("for ip in {}; do ping -c 1 -W 2 -q $ip >/dev/null || echo unreachable $ip; done", others.join(" "));
    let r = pm.exec(&names[0], &["sh", "-c", &script]);
    assert!(r.code == 0 && r.stdout.trim().is_empty(), "{} -> the others: {}{}", names[0], r.stdout, r.stderr);
    let checked = check.elapsed();

    let remove = Instant::now();
    let mut args = vec!["rm", "--force", "--time", "0"];
    args.extend(names.iter().map(String::as_str));
    pm.ok(&args);
    let removed = remove.elapsed();
    assert_eq!(net.reservations(), Vec::<String>::new(), "reservations after removing all");
    assert_eq!(net.ports(), Vec::<String>::new(), "host interfaces after removing all");
    assert_eq!(net.iptables_rules(), Vec::<String>::new(), "iptables rules after removing all");
    drop(pm);
    eprintln!(
        "parallel_starts({kind:?}): {N} starts in {started:?}, connectivity checked in {checked:?}, \
         removed in {removed:?}, {:?} in all",
        t.elapsed()
    );
}
