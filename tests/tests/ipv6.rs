//! IPv6 on the switch: dual-stack namespaces and gateways on every datapath, and port
//! security for IPv6 (source addresses, neighbour discovery, RA guard, header chains) attacked
//! from a real namespace on the datapaths that enforce it.
use std::{net::Ipv6Addr, thread::sleep, time::Duration};

use switch_tests::{
    frames::{Sniffer, send_raw},
    hosts::Hosts,
    ipv6::{self as v6, ALL_NODES_MAC, DSTOPTS, FRAGMENT, HOP, ICMPV6, UDP},
    *,
};

fn v6addr(net: u8, host: u16) -> Ipv6Addr {
    format!("fd00:{net}::{host:x}").parse().unwrap()
}

fn u(v: &Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or_else(|| panic!("no {field} in {v}"))
}

/// A dual-stack switch (both gateways) on `dp`; its name.
fn dual_stack_switch(sb: &mut Sandbox, dp: &str, net: u8) -> String {
    let (g4, g6) = (format!("10.{net}.0.254/24"), format!("fd00:{net}::fe/64"));
    sb.switch("v6", dp, &["--gateway", &g4, "--gateway", &g6])
}

/// Namespace `suffix` with addresses `10.NET.0.HOST/24` and `fd00:NET::HOST/64`.
fn dual_stack_port(sb: &Sandbox, sw: &str, suffix: &str, net: u8, host: u16, extra: &[&str]) -> String {
    let v6 = format!("{}/64", v6addr(net, host));
    let mut args = vec!["--ip", &v6];
    args.extend_from_slice(extra);
    sb.port(sw, suffix, &format!("10.{net}.0.{host}/24"), &args)
}

fn ping6(ns: &str, ip: &str, count: u32) -> bool {
    let c = count.to_string();
    let r = exec(ns, &["ping", "-6", "-c", &c, "-i", "0.01", "-W", "1", "-q", ip]);
    r.code == 0 && r.stdout.contains(&format!("{count} received"))
}

/// Sends `text` over TCP from `client` to `[ip]:7000` in `server`; what the server read.
fn tcp6(server: &str, client: &str, ip: &str, text: &str) -> String {
    let serve = "import socket; s=socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); \
                 s.bind(('::', 7000)); s.listen(); print('ready', flush=True); c,_=s.accept(); print(c.recv(100).decode(), flush=True)";
    let mut cmd = std::process::Command::new(switch_bin());
    cmd.args(["ns", "exec", server, "--", "timeout", "10", "python3", "-c", serve]);
    let srv = spawn_until(&mut cmd, "ready");
    let send = format!("import socket; s=socket.create_connection(('{ip}', 7000), timeout=5); s.sendall(b'{text}')");
    let r = exec(client, &["python3", "-c", &send]);
    assert_eq!(r.code, 0, "{r:?}");
    let out = srv.take().wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().to_owned()
}

/// Two dual-stack namespaces and one IPv4-only one: IPv6 between them (global and link-local
/// addresses, ICMPv6 and TCP), to and from the host through the gateway, at once after `ns
/// add` (no duplicate address detection to wait for); IPv6 stays off without an address; the
/// listings show both families; bad addresses are refused and change nothing.
fn dual_stack_namespaces_and_gateway(dp: &str, net: u8) {
    let mut sb = Sandbox::new();
    let sw = dual_stack_switch(&mut sb, dp, net);
    let a = dual_stack_port(&sb, &sw, "a", net, 1, &[]);
    // Usable right away: no address is still tentative.
    let addrs = exec(&a, &["ip", "-6", "addr", "show", "dev", "eth0"]).stdout;
    assert!(addrs.contains(&format!("{}/64", v6addr(net, 1))) && !addrs.contains("tentative"), "{addrs}");
    let b = dual_stack_port(&sb, &sw, "b", net, 2, &[]);
    let c = sb.port(&sw, "c", &format!("10.{net}.0.3/24"), &[]);
    let (a6, b6, gw6) = (v6addr(net, 1).to_string(), v6addr(net, 2).to_string(), v6addr(net, 0xfe).to_string());

    assert!(ping6(&a, &b6, 3), "a cannot reach b over IPv6");
    assert!(ping6(&b, &a6, 3), "b cannot reach a over IPv6");
    assert!(ping6(&a, &gw6, 3), "a cannot reach the IPv6 gateway");
    let b_ll = format!("{}%eth0", v6::link_local(&ns_mac(&b)));
    assert!(ping6(&a, &b_ll, 3), "a cannot reach b's link-local address");
    assert!(ping(&a, &format!("10.{net}.0.2"), 2), "IPv4 beside IPv6");
    let host_ping =
        std::process::Command::new("ping").args(["-6", "-c", "2", "-i", "0.01", "-W", "1", "-q", &a6]).output();
    assert!(host_ping.unwrap().status.success(), "the host cannot reach a over IPv6");
    let route = exec(&a, &["ip", "-6", "route", "show", "default"]).stdout;
    assert!(route.contains(&format!("via {gw6}")), "no default IPv6 route via the gateway: {route}");
    assert_eq!(tcp6(&b, &a, &b6, "over-ipv6"), "over-ipv6");

    // IPv6 is off in a namespace without an IPv6 address, as it always was.
    let off = exec(&c, &["cat", "/proc/sys/net/ipv6/conf/eth0/disable_ipv6"]).stdout;
    assert_eq!(off.trim(), "1", "IPv6 is on in an IPv4-only namespace");

    // Listings: both families where there are two.
    let rows = json(&["ns", "list"]);
    let row = |ns: &str| rows.as_array().unwrap().iter().find(|r| r["namespace"] == ns).cloned().unwrap();
    assert_eq!(row(&a)["ip6"], format!("{a6}/64"), "{rows}");
    assert!(row(&c).get("ip6").is_none(), "{rows}");
    let ports = json(&["ports", "--switch", &sw]);
    assert!(
        ports.as_array().unwrap().iter().any(|p| p["owner"] == "host" && p["ip6"] == format!("{gw6}/64")),
        "{ports}"
    );
    let text = ok(&["ns", "list"]);
    assert!(text.contains(&format!("10.{net}.0.1/24,{a6}/64")), "{text}");
    let list = json(&["list"]);
    assert!(list.as_array().unwrap().iter().any(|s| s["name"] == sw && s["gateway6"] == format!("{gw6}/64")), "{list}");

    // Re-adding as it is changes nothing; bad input is refused with one line, making nothing.
    let again =
        ok(&["ns", "add", &a, "--switch", &sw, "--ip", &format!("10.{net}.0.1/24"), "--ip", &format!("{a6}/64")]);
    assert!(again.contains("is already on"), "{again}");
    let x = sb.name("x");
    let v4 = format!("10.{net}.0.9/24");
    for (args, why) in [
        (vec!["--ip", &format!("fd00:{net}::9/64")], "an IPv4 address is required"),
        (
            vec!["--ip", &v4, "--ip", &format!("fd00:{net}::9/64"), "--ip", &format!("fd00:{net}::a/64")],
            "IPv6 given twice",
        ),
        (vec!["--ip", &v4, "--ip", "fd00:ffff::9/64"], "not on switch"),
        (vec!["--ip", &v4, "--ip", &format!("{b6}/64")], &b),
        (vec!["--ip", &v4, "--ip", &format!("{gw6}/64")], "gateway"),
        (vec!["--ip", &v4, "--ip", "fe80::9/64"], "link-local"),
    ] {
        let mut cmd = vec!["ns", "add", &x, "--switch", &sw];
        cmd.extend(args);
        let e = fails(&cmd, 2);
        assert!(e.contains(why) && e.trim().lines().count() == 1, "{cmd:?}: {e}");
    }
    assert!(!netns_list().contains(&x), "a refused namespace was made");
}

#[test]
fn tc_dual_stack_namespaces_and_gateway() {
    dual_stack_namespaces_and_gateway("tc", 220);
}

#[test]
fn xdp_dual_stack_namespaces_and_gateway() {
    dual_stack_namespaces_and_gateway("xdp", 221);
}

#[test]
fn userspace_dual_stack_namespaces_and_gateway() {
    dual_stack_namespaces_and_gateway("userspace", 222);
}

#[test]
fn bridge_dual_stack_namespaces_and_gateway() {
    dual_stack_namespaces_and_gateway("bridge", 223);
}

/// Attacks on IPv6 from a namespace with port security (c), watched from b, against a: each
/// frame is dropped and counted under its reason, while what c may send (its link-local
/// source, its own duplicate address detection) passes, and so do a port without port
/// security's router advertisements.
fn ipv6_port_security(dp: &str, net: u8) {
    let mut sb = Sandbox::new();
    let sw = dual_stack_switch(&mut sb, dp, net);
    let a = dual_stack_port(&sb, &sw, "a", net, 1, &[]);
    let b = dual_stack_port(&sb, &sw, "b", net, 2, &[]);
    let c = dual_stack_port(&sb, &sw, "c", net, 3, &[]);
    let d = dual_stack_port(&sb, &sw, "d", net, 4, &["--no-port-security"]);
    let (a_mac, b_mac, c_mac) = (ns_mac(&a), ns_mac(&b), ns_mac(&c));
    let (a6, b6, c6) = (v6addr(net, 1), v6addr(net, 2), v6addr(net, 3));
    let c_ll = v6::link_local(&c_mac);
    let all_nodes: Ipv6Addr = "ff02::1".parse().unwrap();
    // b knows a (so a forged advertisement would have an entry to overwrite).
    assert!(ping6(&b, &a6.to_string(), 2));
    // What c's own stack sent when it came up passed; count from here.
    sleep(Duration::from_millis(300));
    let base = port_stats(&sw, &c);
    let counted = |what: &str| u(&port_stats(&sw, &c), what) - u(&base, what);
    let udp_to_b = |src: Ipv6Addr| v6::frame(&b_mac, &c_mac, src, b6, UDP, &[], &v6::udp(8));
    let delivered = |frame: &str, to: &str| {
        let at = Sniffer::start(to, frame);
        send_raw(&c, frame);
        sleep(Duration::from_millis(200));
        at.count()
    };

    // Source addresses: another's, and `::` outside duplicate address detection.
    assert_eq!(delivered(&udp_to_b(a6), &b), 0, "a packet from a's address reached b");
    send_raw(&c, &udp_to_b(Ipv6Addr::UNSPECIFIED));
    // Its own link-local address is its own.
    assert_eq!(delivered(&udp_to_b(c_ll), &b), 1, "c's link-local source was dropped");

    // Neighbour discovery claiming a's address or MAC.
    let na = |target, opts: &[Vec<u8>]| {
        v6::frame(ALL_NODES_MAC, &c_mac, c6, all_nodes, ICMPV6, &[], &v6::na(c6, all_nodes, target, opts))
    };
    send_raw(&c, &na(a6, &[v6::ll_option(2, &c_mac)]));
    send_raw(&c, &na(c6, &[v6::ll_option(2, &a_mac)]));
    let (group, group_mac) = v6::solicited_node(b6);
    let ns_frame = |src, target, opts: &[Vec<u8>]| {
        v6::frame(&group_mac, &c_mac, src, group, ICMPV6, &[], &v6::ns(src, group, target, opts))
    };
    send_raw(&c, &ns_frame(c6, b6, &[v6::ll_option(1, &a_mac)]));
    // A decoy target option first: the receiver uses the source option after it.
    send_raw(&c, &ns_frame(c6, b6, &[v6::ll_option(2, &c_mac), v6::ll_option(1, &a_mac)]));
    // Duplicate address detection for a's address would make a newcomer give it up.
    send_raw(&c, &ns_frame(Ipv6Addr::UNSPECIFIED, a6, &[]));
    let neigh = exec(&b, &["ip", "-6", "neigh", "show", &a6.to_string()]).stdout;
    assert!(!neigh.contains(&c_mac), "b's neighbour entry for a was poisoned: {neigh}");
    // Its own duplicate address detection passes (to the solicited-node group, flooded).
    let (own_group, own_group_mac) = v6::solicited_node(c6);
    let dad = v6::frame(
        &own_group_mac,
        &c_mac,
        Ipv6Addr::UNSPECIFIED,
        own_group,
        ICMPV6,
        &[],
        &v6::ns(Ipv6Addr::UNSPECIFIED, own_group, c6, &[]),
    );
    assert_eq!(delivered(&dad, &b), 1, "c's own duplicate address detection was dropped");

    // Router advertisements: plain, and behind two extension headers.
    let ra = v6::ra(c_ll, all_nodes, &c_mac);
    assert_eq!(delivered(&v6::frame(ALL_NODES_MAC, &c_mac, c_ll, all_nodes, ICMPV6, &[], &ra), &b), 0);
    let hidden = [v6::options_header(DSTOPTS), v6::options_header(ICMPV6)];
    send_raw(&c, &v6::frame(ALL_NODES_MAC, &c_mac, c_ll, all_nodes, HOP, &hidden, &ra));
    let routes = exec(&b, &["ip", "-6", "route"]).stdout;
    assert!(!routes.contains(&c_ll.to_string()), "b took c as a router: {routes}");

    // What the parser cannot see through: a chain longer than its bound, and neighbour
    // discovery in a fragment.
    let mut chain: Vec<Vec<u8>> = (0..6).map(|_| v6::options_header(DSTOPTS)).collect();
    chain.push(v6::options_header(UDP));
    send_raw(&c, &v6::frame(&b_mac, &c_mac, c6, b6, DSTOPTS, &chain, &v6::udp(8)));
    let frag = [v6::fragment_header(ICMPV6, 0, true)];
    send_raw(&c, &v6::frame(ALL_NODES_MAC, &c_mac, c6, all_nodes, FRAGMENT, &frag, &v6::na(c6, all_nodes, c6, &[])));

    sleep(Duration::from_millis(200));
    let got: Vec<(&str, u64)> =
        ["spoofed_ip", "spoofed_nd", "router_guard", "malformed"].iter().map(|w| (*w, counted(w))).collect();
    assert_eq!(got, [("spoofed_ip", 2), ("spoofed_nd", 5), ("router_guard", 2), ("malformed", 2)]);

    an_open_port_may_carry_a_router(&d, &b);
    // The victim's traffic never stopped.
    assert!(ping6(&b, &a6.to_string(), 3));
}

/// A router advertisement from `d`, a port without port security, reaches `b`.
fn an_open_port_may_carry_a_router(d: &str, b: &str) {
    let (d_mac, all_nodes) = (ns_mac(d), "ff02::1".parse().unwrap());
    let d_ll = v6::link_local(&d_mac);
    let from_d = v6::frame(ALL_NODES_MAC, &d_mac, d_ll, all_nodes, ICMPV6, &[], &v6::ra(d_ll, all_nodes, &d_mac));
    let at_b = Sniffer::start(b, &from_d);
    send_raw(d, &from_d);
    sleep(Duration::from_millis(200));
    assert_eq!(at_b.count(), 1, "an open port's router advertisement was dropped");
}

#[test]
fn tc_ipv6_port_security() {
    ipv6_port_security("tc", 224);
}

#[test]
fn xdp_ipv6_port_security() {
    ipv6_port_security("xdp", 225);
}

#[test]
fn userspace_ipv6_port_security() {
    ipv6_port_security("userspace", 226);
}

/// `ip -n NS ARGS` on the machine, asserting success.
fn ip_in(ns: &str, args: &[&str]) {
    let mut a = vec!["-n", ns];
    a.extend_from_slice(args);
    host("ip", &a);
}

/// Whether `ping -6` of `to` from namespace `ns` (a plain one: a test host) gets its answers.
fn ping6_from(ns: &str, to: &str) -> bool {
    std::process::Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-6", "-c", "2", "-i", "0.2", "-W", "1", "-q", to])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// An attacker on the uplink's network, with a route to the segment through a host that
/// forwards IPv6: the uplink's programs judge only IPv4, so the gateway must not let its
/// IPv6 into the segment (counted as routed in unsolicited), unless the segment is routable.
/// The hosts are namespaces of the test: the machine's own IPv6 forwarding is not touched.
#[test]
fn unsolicited_ipv6_from_the_uplink_stays_out_unless_routable() {
    let mut h = Hosts::new(2);
    let (h1, h2) = (h.hosts[0].clone(), h.hosts[1].clone());
    host("ip", &["netns", "exec", &h1, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    ip_in(&h1, &["addr", "add", "fd00:77::1/64", "dev", "ul0", "nodad"]);
    ip_in(&h2, &["addr", "add", "fd00:77::2/64", "dev", "ul0", "nodad"]);
    for (net, routable) in [(228u8, false), (229, true)] {
        let sw = h.sb.name(&format!("r{net}"));
        let (g4, g6) = (format!("10.{net}.0.254/24"), format!("fd00:{net}::fe/64"));
        let mut extra = vec!["--gateway", &g4, "--gateway", &g6, "--uplink", "ul0"];
        if routable {
            extra.push("--routable");
        }
        h.up(1, &sw, &extra);
        let ns = h.sb.name(&format!("a{net}"));
        let (v4, v6) = (format!("10.{net}.0.1/24"), format!("fd00:{net}::1/64"));
        h.on(1, &["ns", "add", &ns, "--switch", &sw, "--ip", &v4, "--ip", &v6]);
        ip_in(&h2, &["-6", "route", "add", &format!("fd00:{net}::/64"), "via", "fd00:77::1"]);
        let target = format!("fd00:{net}::1");
        // The host itself reaches it either way.
        assert!(ping6_from(&h1, &target), "the host cannot reach its namespace");
        let drops = || h.json_on(1, &["stats", "--switch", &sw])["switch"]["unsolicited_routed"].as_u64().unwrap();
        let before = drops();
        assert_eq!(ping6_from(&h2, &target), routable, "routable {routable}: the uplink's IPv6 reached the segment");
        if !routable {
            assert!(drops() >= before + 2, "the refused packets were not counted");
        }
    }
}

/// IPv6 between namespaces of two hosts over a VXLAN tunnel (an IPv4 underlay): neighbour
/// discovery floods through the tunnel, unicast follows it; port security still binds each
/// namespace to its addresses.
#[test]
fn ipv6_crosses_the_tunnel() {
    let mut h = Hosts::new(2);
    let sw = h.sb.name("tun6");
    let mut names = vec![];
    for i in 1..=2usize {
        let g6 = format!("fd00:230::f{i}/64");
        h.switch(i, &sw, 46, &["--gateway", &format!("10.230.0.25{i}/24"), "--gateway", &g6]);
        let ns = h.sb.name(&format!("n{i}"));
        let (v4, v6) = (format!("10.230.0.{i}/24"), format!("fd00:230::{i}/64"));
        h.on(i, &["ns", "add", &ns, "--switch", &sw, "--ip", &v4, "--ip", &v6]);
        names.push(ns);
    }
    h.mesh(&sw, &[1, 2]);
    assert!(ping6(&names[0], "fd00:230::2", 3), "no IPv6 across the tunnel");
    assert!(ping6(&names[1], "fd00:230::1", 3), "no IPv6 back across the tunnel");
    assert!(ping(&names[0], "10.230.0.2", 2), "IPv4 beside it");
    let b_ll = format!("{}%eth0", v6::link_local(&h.mac(2, &names[1])));
    assert!(ping6(&names[0], &b_ll, 2), "no link-local IPv6 across the tunnel");
}
