//! Kubernetes Services with pods on the switch: the rules kube-proxy writes
//! (`container_env::kube_proxy`, iptables and nftables modes) on a node whose pods are
//! namespaces on the switch. The node is a host namespace of its own (`tests/src/hosts.rs`), so
//! its netfilter tables, forwarding sysctl and routes are the test's and go with it.
//!
//! ```text
//!   outside (the underlay, 10.77.0.100) ──► ul0 10.77.0.1  node 1 (rules, forwarding on)
//!                                              │ host routing + DNAT
//!                                          gateway 10.131.0.1
//!                                              │
//!        switch: pod a 10.131.0.2 (client)   pod b .3 and pod c .4 (endpoints of "web")
//! ```
//!
//! Every path the issue names: a pod to a ClusterIP whose endpoints are pods on the same
//! switch (each endpoint chosen, the client's address kept), a pod to itself through its own
//! Service (hairpin), the node to a ClusterIP, a NodePort from outside, TCP and UDP, and a pod
//! to an endpoint behind another node over VXLAN. Without the switch sending the endpoints'
//! answers back through the node, the first of them fails: the answer reaches the client from
//! the endpoint's own address and is reset.
use std::{collections::BTreeSet, process::Command};

use container_env::kube_proxy::{Installed, Mode, Rules, Service};
use switch_tests::{hosts::Hosts, *};

/// Serves TCP and UDP on one port: each connection or datagram gets "NAME CLIENT-ADDRESS".
const SERVE: &str = r#"
import socket, sys, threading
name, port = sys.argv[1], int(sys.argv[2])
def udp():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", port))
    while True:
        d, a = u.recvfrom(100); u.sendto(f"{name} {a[0]}".encode(), a)
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("0.0.0.0", port)); t.listen(64)
threading.Thread(target=udp, daemon=True).start()
print("ready", flush=True)
while True:
    c, a = t.accept(); c.sendall(f"{name} {a[0]}".encode())
    # The client closes first: no TIME_WAIT here to refuse a reused client port.
    c.settimeout(3); c.recv(1); c.close()
"#;

/// Asks HOST PORT N times over PROTO (from SPORT if given); prints each answer, or "ERR why".
const ASK: &str = r#"
import socket, sys
host, port, n, proto = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
sport = int(sys.argv[5]) if len(sys.argv) > 5 else 0
for i in range(n):
    try:
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        s = socket.socket(socket.AF_INET, kind); s.settimeout(3)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if sport: s.bind(("0.0.0.0", sport))
        s.connect((host, port))
        if proto == "udp": s.send(b"?")
        print(s.recv(100).decode(), flush=True); s.close()
    except Exception as e:
        print("ERR", type(e).__name__, e, flush=True)
"#;

/// The Service every test uses: ClusterIP 10.231.0.10:80 (and NodePort 30080) to port 8080
/// of `endpoints`, TCP and UDP.
fn web(endpoints: &[&str]) -> Vec<Service> {
    let endpoints: Vec<_> = endpoints.iter().map(|e| (e.parse().unwrap(), 8080)).collect();
    ["tcp", "udp"]
        .into_iter()
        .map(|proto| Service {
            name: format!("default/web:{proto}"),
            proto,
            cluster_ip: "10.231.0.10".parse().unwrap(),
            port: 80,
            node_port: Some(30080),
            endpoints: endpoints.clone(),
        })
        .collect()
}

/// Starts `SERVE` as NAME in namespace `ns` (as `switch ns exec` would, on the host).
fn serve(ns: &str, name: &str) -> Reaped {
    spawn_until(Command::new("ip").args(["netns", "exec", ns, "python3", "-c", SERVE, name, "8080"]), "ready")
}

/// `ASK` from namespace `ns`: the answers, one per line.
fn ask(ns: &str, to: &str, n: u32, proto: &str, sport: Option<u16>) -> Vec<String> {
    let (n, port) = (n.to_string(), to.rsplit_once(':').unwrap());
    let sport = sport.map(|p| p.to_string());
    let mut a = vec!["netns", "exec", ns, "python3", "-c", ASK, port.0, port.1, &n, proto];
    a.extend(sport.as_deref());
    let out = host("ip", &a);
    out.lines().map(str::to_owned).collect()
}

/// Asserts every answer came, from the endpoints in `from` only, every one of them chosen,
/// each seeing the client as `client` (None: not checked). Returns the endpoints that answered.
fn all_answered(what: &str, answers: &[String], from: &[&str], client: Option<&str>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for a in answers {
        let (name, addr) = a.split_once(' ').unwrap_or_else(|| panic!("{what}: no answer: {a} (all: {answers:?})"));
        assert!(from.contains(&name), "{what}: answered by {name}, not one of {from:?}: {answers:?}");
        if let Some(c) = client {
            assert_eq!(addr, c, "{what}: the endpoint saw another client address: {answers:?}");
        }
        seen.insert(name.to_owned());
    }
    assert_eq!(seen.len(), from.len(), "{what}: not every endpoint was chosen in {} tries: {answers:?}", answers.len());
    seen
}

/// Runs `cmd ARGS` in host namespace `node`, asserting success.
fn on_node(node: &str, cmd: &str, args: &[&str]) -> String {
    let mut a = vec!["netns", "exec", node, cmd];
    a.extend_from_slice(args);
    host("ip", &a)
}

/// Node 1 of `hs` as a Kubernetes node: switch `sw` with gateway 10.131.0.1/24 and the
/// underlay as its uplink, forwarding on, pods a, b, c, and the rules of `web` to `endpoints`
/// in `mode`. Returns the pods' namespaces and the rules (removed when dropped).
fn node(hs: &mut Hosts, datapath: &str, mode: Mode, endpoints: &[&str]) -> ([String; 3], Installed) {
    // The userspace switch has no uplinks (nor the guard that needs them: what the node
    // routes into its segment gets there).
    let uplink: &[&str] = if is_ebpf(datapath) { &["--uplink", "ul0"] } else { &[] };
    hs.up(1, "svc", &[&["--datapath", datapath, "--gateway", "10.131.0.1/24"], uplink].concat());
    let pods = ["a", "b", "c"].map(|p| p.to_owned());
    let pods = [0, 1, 2].map(|i| hs.ns(1, "svc", &pods[i], &format!("10.131.0.{}", i + 2)));
    // A node routes for its pods (kubelet's prerequisite, here only inside the node).
    on_node(&hs.hosts[0], "sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    // The client from outside: the underlay's own namespace, on the node's uplink network.
    host("ip", &["-n", &hs.underlay, "addr", "add", "10.77.0.100/24", "dev", "br0"]);
    // As a real node, a default route: the node's own packets to a ClusterIP need a route
    // before its OUTPUT chain translates them.
    on_node(&hs.hosts[0], "ip", &["route", "add", "default", "via", "10.77.0.100"]);
    let rules = Rules { cluster_cidr: "10.131.0.0/24".into(), services: web(endpoints) };
    let installed = rules.install(mode, Some(&hs.hosts[0])).unwrap_or_else(|e| panic!("installing the rules: {e}"));
    (pods, installed)
}

/// Every path through one node's Service, over TCP and UDP.
fn every_path(datapath: &str, mode: Mode) {
    let mut hs = Hosts::new(1);
    let ([a, b, c], _rules) = node(&mut hs, datapath, mode, &["10.131.0.3", "10.131.0.4"]);
    let _servers = [serve(&b, "b"), serve(&c, "c")];
    for proto in ["tcp", "udp"] {
        // A pod to the ClusterIP: both endpoints chosen, the client's own address kept.
        let answers = ask(&a, "10.231.0.10:80", 16, proto, None);
        all_answered(&format!("{proto} pod to ClusterIP"), &answers, &["b", "c"], Some("10.131.0.2"));
        // An endpoint to its own Service: itself too (hairpin, masqueraded by kube-proxy).
        let answers = ask(&b, "10.231.0.10:80", 16, proto, None);
        all_answered(&format!("{proto} endpoint to its own ClusterIP"), &answers, &["b", "c"], None);
        // The node itself (its OUTPUT chain).
        let answers = ask(&hs.hosts[0], "10.231.0.10:80", 8, proto, None);
        all_answered(&format!("{proto} node to ClusterIP"), &answers, &["b", "c"], None);
        // A NodePort from outside: the underlay's own namespace as the client.
        let answers = ask(&hs.underlay, "10.77.0.1:30080", 16, proto, None);
        all_answered(&format!("{proto} NodePort from outside"), &answers, &["b", "c"], None);
        // Pods still reach each other directly.
        let answers = ask(&a, "10.131.0.3:8080", 2, proto, None);
        all_answered(&format!("{proto} pod to pod"), &answers, &["b"], Some("10.131.0.2"));
    }
    // `switch tables` (tc, xdp) shows the flows the switch sends back through the node.
    if !is_ebpf(datapath) {
        return;
    }
    let tables = hs.json_on(1, &["tables", "--switch", "svc"]);
    let row = tables.as_array().unwrap().iter().find(|r| r["table"] == "host_flows").cloned();
    let entries = row.and_then(|r| r["entries"].as_u64()).unwrap_or_else(|| panic!("no host_flows row: {tables}"));
    assert!(entries >= 2, "the Service's flows are not in the table: {tables}");
}

#[test]
#[ignore = "needs root: namespaces, eBPF programs, netfilter rules in a node namespace"]
fn services_through_iptables_rules() {
    every_path("tc", Mode::Iptables);
}

#[test]
#[ignore = "needs root: namespaces, eBPF programs, netfilter rules in a node namespace"]
fn services_through_nftables_rules() {
    every_path("tc", Mode::Nftables);
}

/// A client port used for a Service and then straight to the endpoint it landed on: the
/// direct connection's answers are not sent through the node (whose connection tracking still
/// holds the Service's connection, and would translate them or drop them as invalid), because
/// the client's direct packet tells the switch the translated flow is over.
#[test]
#[ignore = "needs root: namespaces, eBPF programs, netfilter rules in a node namespace"]
fn a_client_port_reused_directly_is_not_diverted() {
    let mut hs = Hosts::new(1);
    let ([a, b, _c], _rules) = node(&mut hs, "tc", Mode::Iptables, &["10.131.0.3"]);
    let _server = serve(&b, "b");
    for port in [41_000, 41_001] {
        let r = ask(&a, "10.231.0.10:80", 1, "tcp", Some(port));
        all_answered("through the Service", &r, &["b"], Some("10.131.0.2"));
        let r = ask(&a, "10.131.0.3:8080", 1, "tcp", Some(port));
        all_answered("straight from the same port", &r, &["b"], Some("10.131.0.2"));
    }
}

/// A pod on node 1 reaching a Service whose endpoint is a pod on node 2, the two nodes' switches
/// one segment over VXLAN: the endpoint's answer arrives through the tunnel and is sent back
/// through node 1, which translated the request.
#[test]
#[ignore = "needs root: namespaces, eBPF programs, VXLAN, netfilter rules in node namespaces"]
fn cluster_ip_to_a_pod_on_another_node_over_vxlan() {
    let mut hs = Hosts::new(2);
    hs.switch(1, "svc", 42, &["--gateway", "10.133.0.1/24"]);
    hs.switch(2, "svc", 42, &["--gateway", "10.133.0.254/24"]);
    hs.mesh("svc", &[1, 2]);
    let a = hs.ns(1, "svc", "a", "10.133.0.2");
    let c = hs.ns(2, "svc", "c", "10.133.0.3");
    on_node(&hs.hosts[0], "sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    let rules = Rules { cluster_cidr: "10.133.0.0/24".into(), services: web(&["10.133.0.3"]) };
    let _rules = rules.install(Mode::Iptables, Some(&hs.hosts[0])).unwrap();
    let _server = serve(&c, "c");
    for proto in ["tcp", "udp"] {
        let answers = ask(&a, "10.231.0.10:80", 8, proto, None);
        all_answered(&format!("{proto} pod to ClusterIP on another node"), &answers, &["c"], Some("10.133.0.2"));
    }
    // And straight across, untouched.
    let answers = ask(&a, "10.133.0.3:8080", 2, "tcp", None);
    all_answered("pod to pod across nodes", &answers, &["c"], Some("10.133.0.2"));
}

#[test]
#[ignore = "needs root: namespaces, eBPF programs, netfilter rules in a node namespace"]
fn services_on_the_xdp_datapath() {
    every_path("xdp", Mode::Iptables);
}

#[test]
#[ignore = "needs root: namespaces, the userspace switch, netfilter rules in a node namespace"]
fn services_on_the_userspace_datapath() {
    every_path("userspace", Mode::Iptables);
}
