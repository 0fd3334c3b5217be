//! Smoke run of the benchmark harness: it must produce well-formed results for every
//! contender (not meet targets: that is for `cargo xtask bench`, on a quiet machine).
use switch_tests::*;

/// Removes a file the test asked for on the way out, also when an assertion fails first.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One benchmark at a time: a second is refused (the quick run checks that it is).
static BENCH: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Whether Debian's openvswitch-switch is installed (the `ovs` contender runs then).
fn ovs_installed() -> bool {
    std::process::Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status}", "openvswitch-switch"])
        .output()
        .is_ok_and(|o| o.stdout == b"installed")
}

/// Open vSwitch daemons the benchmark started (their command lines name its directory).
fn bench_ovs_daemons() -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.parse::<u32>().is_ok()))
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.starts_with("ovs") && c.contains("switch-bench-ovs"))
        .collect()
}

/// Nothing of the `ovs` contender is left: daemons, directory, taps, veths.
fn assert_no_ovs_left() {
    assert_eq!(bench_ovs_daemons(), Vec::<String>::new());
    assert!(!std::env::temp_dir().join("switch-bench-ovs").exists(), "the Open vSwitch directory is left");
    let links: Vec<String> = host_links().into_iter().filter(|l| l.starts_with("benchovs")).collect();
    assert!(links.is_empty(), "{links:?}");
    assert!(!netns_list().iter().any(|n| n.starts_with("benchovs")), "{:?}", netns_list());
}

#[test]
fn quick_bench_produces_well_formed_results() {
    let _one = BENCH.lock().unwrap_or_else(|e| e.into_inner());
    const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
    let forward_before = std::fs::read_to_string(IP_FORWARD).unwrap();
    let svg = std::env::temp_dir().join(format!("switch-bench-{}.svg", std::process::id()));
    let _chart = RemoveOnDrop(svg.clone());
    let report = quick_bench_refusing_a_second(&svg);
    let metrics = report["metrics"].as_array().expect("metrics");
    let ids: Vec<&str> = metrics.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "tcp",
            "udp64",
            "lat_p50",
            "lat_p99",
            "lat_poll_p50",
            "lat_poll_p99",
            "fwd_tcp",
            "fwd_conn",
            "bringup_10",
            "removal_10",
            "cni_add",
            "cni_del",
            "cni_add_parallel",
            "pod_start_p50",
            "pod_start_p99",
            "pod_parallel",
            "pod_parallel_failed",
            "pod_port_conn",
            "pod_port_tcp",
            "vxlan_tcp",
            "vxlan_udp64",
            "svc_pod_tcp",
            "svc_pod_udp64",
            "svc_tcp",
            "svc_conn",
            "cri_pod_p50",
            "cri_pod_p99",
            "ipv6_tcp",
            "ipv6_udp64"
        ]
    );
    metrics[..6].iter().for_each(switches_are_measured_against_their_baselines);
    metrics[6..8].iter().for_each(forwards_are_measured_against_routing_and_iptables);
    metrics[8..10].iter().for_each(bringup_is_measured_against_ip_commands);
    metrics[10..13].iter().for_each(switch_cni_is_measured_against_the_bridge_plugin);
    metrics[13..19].iter().for_each(podman_is_measured_against_bridge_and_portmap);
    metrics[19..21].iter().for_each(the_tunnel_is_measured_against_bridge_and_vxlan);
    metrics[21..25].iter().for_each(services_are_measured_with_and_without_rules);
    metrics[25..27].iter().for_each(cri_pods_are_measured_against_the_bridge_plugin);
    metrics[27..29].iter().for_each(ipv6_is_measured_against_bridge_and_veth);
    let targets = report["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 28);
    assert!(targets.iter().all(|t| t["what"].is_string() && t["goal"].is_string()));
    the_chart_has_a_bar_per_measurement(&svg, metrics);
    // Nothing of the benchmark is left, podman's containers and environment included.
    assert!(!netns_list().iter().any(|n| n.starts_with("bench") || n.starts_with("sbench")), "{:?}", netns_list());
    assert!(!std::env::temp_dir().join("switch-bench-podman").exists(), "the podman environment is left");
    assert!(!std::env::temp_dir().join("switch-bench-cri").exists(), "the CRI environment is left");
    let links: Vec<String> = host_links().into_iter().filter(|l| l.starts_with("benchp")).collect();
    assert!(links.is_empty(), "{links:?}");
    assert_no_ovs_left();
    // The bridge plugin turns ip_forward on: the bench gives it back.
    assert_eq!(std::fs::read_to_string(IP_FORWARD).unwrap(), forward_before);
}

/// Runs `switch bench --quick` with its chart in `svg`, checking that a second run meanwhile
/// is refused; returns its JSON report.
fn quick_bench_refusing_a_second(svg: &std::path::Path) -> Value {
    let svg_s = svg.to_string_lossy().into_owned();
    let run = Reaped::new(
        std::process::Command::new(switch_bin())
            .args(["bench", "--quick", "--svg", &svg_s, "--json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // A second run while the first holds the machine's benchmark lock is refused, clearly,
    // and changes nothing (their contenders have the same names).
    std::thread::sleep(std::time::Duration::from_secs(3));
    let e = fails(&["bench", "--quick"], 1);
    assert!(e.contains("another 'switch bench' runs"), "{e}");
    let out = run.take().wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON report")
}

/// The contenders of metric `m`'s rows, in order.
fn contenders(m: &Value) -> Vec<&str> {
    m["rows"].as_array().unwrap().iter().map(|r| r["contender"].as_str().unwrap()).collect()
}

/// A per-packet metric: every switch and Open vSwitch, against the veth, the bridge and
/// Open vSwitch measured in the same run.
fn switches_are_measured_against_their_baselines(m: &Value) {
    let rows = m["rows"].as_array().unwrap();
    assert_eq!(
        contenders(m),
        [
            "veth",
            "bridge",
            "tc",
            "tc-open",
            "tc-egress",
            "tc-monitor",
            "tc-capture",
            "xdp",
            "userspace",
            "userspace-poll",
            "ovs"
        ],
        "{}",
        m["id"]
    );
    for r in rows {
        if let Some(e) = r["error"].as_str() {
            // trafgen cannot drive an XDP-mode veth (it gives up when the ring is full);
            // Open vSwitch runs where it is installed; every other contender and metric
            // must be measured.
            let xdp = m["id"] == "udp64" && r["contender"] == "xdp" && e.contains("trafgen");
            let ovs = r["contender"] == "ovs" && !ovs_installed() && e.contains("not installed");
            assert!(xdp || ovs, "{}: {r}", m["id"]);
            assert!(r["samples"].as_array().unwrap().is_empty());
            continue;
        }
        let median = r["median"].as_f64().unwrap();
        assert!(median > 0.0 && median.is_finite(), "{}: {r}", m["id"]);
        assert!(r["min"].as_f64().unwrap() <= median && median <= r["max"].as_f64().unwrap());
    }
    // Ratios are against the baselines of the same run, and Open vSwitch (measured in it).
    assert_eq!(m["baselines"], serde_json::json!(["bridge", "veth", "ovs"]));
    assert_eq!(rows[1]["vs"]["bridge"].as_f64(), Some(1.0));
    assert_eq!(rows[0]["vs"]["veth"].as_f64(), Some(1.0));
    if ovs_installed() {
        assert_eq!(rows[10]["vs"]["ovs"].as_f64(), Some(1.0), "{}", m["id"]);
        assert!(rows[8]["vs"]["ovs"].as_f64().is_some_and(|v| v > 0.0), "{}: {}", m["id"], rows[8]);
    }
}

/// Forwards compare against plain routing (the limit) and iptables DNAT.
fn forwards_are_measured_against_routing_and_iptables(m: &Value) {
    let rows = m["rows"].as_array().unwrap();
    assert_eq!(contenders(m), ["routed", "iptables", "ebpf-forward"], "{}", m["id"]);
    assert!(rows.iter().all(|r| r["median"].as_f64().unwrap() > 0.0), "{}", m["id"]);
    assert_eq!(m["baselines"], serde_json::json!(["routed", "iptables"]));
    assert_eq!(rows[0]["vs"]["routed"].as_f64(), Some(1.0));
    assert_eq!(rows[1]["vs"]["iptables"].as_f64(), Some(1.0));
    assert!(rows[2]["vs"]["routed"].as_f64().unwrap() > 0.0, "{}", m["id"]);
}

/// Bring-up and removal of namespaces: switch against ip commands and a bridge.
fn bringup_is_measured_against_ip_commands(m: &Value) {
    let rows = m["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{}", m["id"]);
    assert_eq!(rows[1]["contender"], "ip commands + bridge");
    assert!(rows.iter().all(|r| r["median"].as_f64().unwrap() > 0.0), "{}: {rows:?}", m["id"]);
}

/// CNI plugins: switch-cni against the bridge plugin (the baseline), times in ms.
fn switch_cni_is_measured_against_the_bridge_plugin(m: &Value) {
    let rows = m["rows"].as_array().unwrap();
    assert_eq!(contenders(m), ["switch-cni", "bridge-cni"], "{}", m["id"]);
    assert!(rows.iter().all(|r| r["median"].as_f64().unwrap() > 0.0), "{}: {rows:?}", m["id"]);
    assert_eq!(rows[1]["vs"]["bridge-cni"].as_f64(), Some(1.0));
}

/// Pods through containerd's CRI: switch-cni against the bridge plugin (the baseline), both
/// measured.
fn cri_pods_are_measured_against_the_bridge_plugin(m: &Value) {
    assert_eq!(contenders(m), ["cri-switch-cni", "cri-bridge"], "{}", m["id"]);
    assert_eq!(m["baselines"], serde_json::json!(["cri-bridge"]));
    for r in m["rows"].as_array().unwrap() {
        let median = r["median"].as_f64().unwrap_or(0.0);
        assert!(median > 0.0 && median < 10_000.0, "{}: {r}", m["id"]);
    }
}

/// IPv6 between two namespaces: tc against the bridge and the bare veth pair, every row
/// measured.
fn ipv6_is_measured_against_bridge_and_veth(m: &Value) {
    assert_eq!(contenders(m), ["veth6", "bridge6", "tc6"], "{}", m["id"]);
    assert_eq!(m["baselines"], serde_json::json!(["bridge6", "veth6"]));
    for r in m["rows"].as_array().unwrap() {
        let median = r["median"].as_f64().unwrap_or_else(|| panic!("{}: {r}", m["id"]));
        assert!(median > 0.0 && median.is_finite(), "{}: {r}", m["id"]);
    }
}

/// Containers under podman: a switch-cni network against bridge+portmap (the baseline).
fn podman_is_measured_against_bridge_and_portmap(m: &Value) {
    assert_eq!(contenders(m), ["podman-switch-cni", "podman-bridge"], "{}", m["id"]);
    assert_eq!(m["baselines"], serde_json::json!(["podman-bridge"]));
    for r in m["rows"].as_array().unwrap() {
        let median = r["median"].as_f64().unwrap_or_else(|| panic!("{}: {r}", m["id"]));
        if m["id"] == "pod_parallel_failed" {
            assert_eq!(median, 0.0, "starts at once failed: {r}");
        } else {
            assert!(median > 0.0 && median.is_finite(), "{}: {r}", m["id"]);
        }
    }
}

/// Across two simulated hosts: the switch's tunnel against bridge + VXLAN (the baseline).
fn the_tunnel_is_measured_against_bridge_and_vxlan(m: &Value) {
    let rows = m["rows"].as_array().unwrap();
    assert_eq!(contenders(m), ["switch-vxlan", "bridge-vxlan"], "{}", m["id"]);
    assert_eq!(m["baselines"], serde_json::json!(["bridge-vxlan"]));
    assert!(rows.iter().all(|r| r["median"].as_f64().is_some_and(|v| v > 0.0)), "{}: {rows:?}", m["id"]);
}

/// Services: pod to pod on the tc switch with and without 100 Services' rules on the node (and
/// on the bridge with br_netfilter), pod to ClusterIP on the switch against that bridge, and a
/// row saying the bridge cannot without br_netfilter.
fn services_are_measured_with_and_without_rules(m: &Value) {
    let rows = m["rows"].as_array().unwrap();
    let measured = if m["id"].as_str().unwrap().starts_with("svc_pod") {
        assert_eq!(contenders(m), ["tc-no-rules", "tc-services", "bridge-services"], "{}", m["id"]);
        assert_eq!(m["baselines"], serde_json::json!(["tc-no-rules", "bridge-services"]));
        assert_eq!(rows[0]["vs"]["tc-no-rules"].as_f64(), Some(1.0));
        &rows[..]
    } else {
        assert_eq!(contenders(m), ["tc-services", "bridge-services", "bridge-no-br-netfilter"], "{}", m["id"]);
        assert_eq!(m["baselines"], serde_json::json!(["bridge-services"]));
        let plain = &rows[2];
        assert!(plain["error"].as_str().unwrap().contains("without br_netfilter"), "{plain}");
        assert!(plain["samples"].as_array().unwrap().is_empty());
        &rows[..2]
    };
    for r in measured {
        assert!(r["error"].is_null(), "{}: {r}", m["id"]);
        assert!(r["median"].as_f64().is_some_and(|v| v > 0.0 && v.is_finite()), "{}: {r}", m["id"]);
    }
    assert!(rows[1]["vs"]["bridge-services"].as_f64().is_some_and(|v| v > 0.0), "{}: {}", m["id"], rows[1]);
}

/// Lines of the machine's own netfilter tables naming the Services bench's ClusterIPs.
fn services_rules_on_the_machine() -> usize {
    let saved = std::process::Command::new("iptables-save").output().unwrap();
    String::from_utf8_lossy(&saved.stdout).lines().filter(|l| l.contains("10.190.")).count()
}

/// The jumps to Services in node namespace `ns` (none where it does not exist).
fn services_in_node(ns: &str) -> usize {
    let saved = std::process::Command::new("ip").args(["netns", "exec", ns, "iptables-save"]).output().unwrap();
    String::from_utf8_lossy(&saved.stdout).lines().filter(|l| l.contains("-j KUBE-SVC-")).count()
}

/// Starts `switch bench --only services` and waits until its nodes are built: the two nodes
/// with rules have their 100 Services, the baseline's none, the machine none.
fn services_bench_built(args: &[&str]) -> Reaped {
    assert_eq!(services_rules_on_the_machine(), 0, "the machine has rules for the bench's ClusterIPs before it runs");
    let run = Reaped::new(
        std::process::Command::new(switch_bin())
            .args(["--json", "bench", "--only", "services"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while services_in_node("sbench2") < 100 {
        assert!(std::time::Instant::now() < deadline, "the bridge's node never got its 100 Services");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(services_in_node("sbench1"), 100, "the switch's node has the same Services");
    assert_eq!(services_in_node("sbench0"), 0, "the baseline's node has none");
    assert_eq!(services_rules_on_the_machine(), 0, "the machine's own tables have none of them");
    run
}

/// Nothing of the Services bench is left: nodes, pods, their state, servers; and the
/// machine's ip_forward is `forward`.
fn nothing_of_the_services_bench_is_left(forward: &str) {
    assert!(!netns_list().iter().any(|n| n.starts_with("sbench")), "{:?}", netns_list());
    assert_eq!(services_rules_on_the_machine(), 0);
    assert_eq!(std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(), forward);
    let states = std::fs::read_dir("/run/switch").map_or(vec![], |d| {
        d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect::<Vec<_>>()
    });
    assert!(!states.iter().any(|n| n.starts_with("@sbench")), "{states:?}");
    let servers: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| (c.starts_with("iperf3") || c.starts_with("sockperf")) && c.contains(" 10.18"))
        .collect();
    assert!(servers.is_empty(), "{servers:?}");
}

/// The Services comparison alone: measured, and the machine's netfilter tables, ip_forward and
/// namespaces as they were (the rules and settings live in the bench's own node namespaces).
#[test]
fn services_bench_keeps_its_rules_in_its_nodes() {
    let _one = BENCH.lock().unwrap_or_else(|e| e.into_inner());
    let forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let run = services_bench_built(&["--rounds", "2", "--secs", "1"]);
    let out = run.take().wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let metrics = report["metrics"].as_array().unwrap();
    let ids: Vec<&str> = metrics.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["svc_pod_tcp", "svc_pod_udp64", "svc_tcp", "svc_conn"]);
    metrics.iter().for_each(services_are_measured_with_and_without_rules);
    for r in metrics.iter().flat_map(|m| m["rows"].as_array().unwrap()) {
        assert!(r["error"].is_string() || r["samples"].as_array().unwrap().len() == 2, "two rounds: {r}");
    }
    let targets = report["targets"].as_array().unwrap();
    let services: Vec<&Value> = targets
        .iter()
        .filter(|t| ["Services", "ClusterIP"].iter().any(|w| t["what"].as_str().unwrap().contains(w)))
        .collect();
    assert_eq!(services.len(), 4);
    assert!(services.iter().all(|t| t["measured"].as_f64().is_some_and(|v| v > 0.0)), "{services:?}");
    nothing_of_the_services_bench_is_left(&forward);
}

/// Ctrl-C while the Services comparison measures: the run stops and its nodes go, and with
/// them their rules, switches, bridge and settings.
#[test]
fn services_bench_interrupted_leaves_nothing() {
    let _one = BENCH.lock().unwrap_or_else(|e| e.into_inner());
    let forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let run = services_bench_built(&["--rounds", "5", "--secs", "3"]);
    let child = run.take();
    // SAFETY: signalling our own child, not yet waited for.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("benchmark interrupted"), "{stderr}");
    nothing_of_the_services_bench_is_left(&forward);
}

/// The chart in `svg` (removed once read) is an SVG with one bar per measured contender and
/// metric, and every contender was measured but where it may not be.
fn the_chart_has_a_bar_per_measurement(svg: &std::path::Path, metrics: &[Value]) {
    let chart = std::fs::read_to_string(svg).unwrap();
    std::fs::remove_file(svg).unwrap();
    assert!(chart.starts_with("<svg") && chart.trim_end().ends_with("</svg>"));
    let measured = metrics.iter().flat_map(|m| m["rows"].as_array().unwrap()).filter(|r| r["error"].is_null()).count();
    assert_eq!(chart.matches("<rect").count(), 1 + measured, "one bar per measured contender and metric");
    let ovs = if ovs_installed() { 6 } else { 0 };
    assert!(
        measured >= 6 * 7 + ovs + 2 * 3 + 2 * 2 + 3 * 2 + 6 * 2 + 2 * 2 + 2 * 3 + 2 * 2 - 1,
        "only xdp's 64-byte UDP may go unmeasured"
    );
}

/// Open vSwitch's userspace datapath as a contender: it forwards every kind of traffic the
/// benchmark sends between its namespaces, the userspace engine is compared with it, and it
/// leaves nothing behind (its own daemons, directory, taps, veths, namespaces).
#[test]
fn ovs_contender_forwards_and_leaves_nothing() {
    let _one = BENCH.lock().unwrap_or_else(|e| e.into_inner());
    let out = ok(&["--json", "bench", "--only", "ovs", "--rounds", "1", "--secs", "1"]);
    let report: Value = serde_json::from_str(&out).expect("JSON report");
    let metrics = report["metrics"].as_array().unwrap();
    assert_eq!(metrics.len(), 6, "only the per-packet comparison runs");
    for m in metrics {
        let rows = m["rows"].as_array().unwrap();
        assert_eq!(contenders(m), ["veth", "bridge", "ovs"], "{}", m["id"]);
        assert_eq!(m["baselines"], serde_json::json!(["bridge", "veth", "ovs"]));
        let ovs = &rows[2];
        if !ovs_installed() {
            assert!(ovs["error"].as_str().unwrap().contains("openvswitch-switch"), "{ovs}");
            continue;
        }
        assert!(ovs["error"].is_null(), "{}: {ovs}", m["id"]);
        let median = ovs["median"].as_f64().unwrap();
        assert!(median > 0.0 && median.is_finite(), "{}: {ovs}", m["id"]);
        assert_eq!(ovs["vs"]["ovs"].as_f64(), Some(1.0));
        assert!(rows[1]["vs"]["ovs"].as_f64().is_some_and(|v| v > 0.0), "{}", m["id"]);
    }
    let target = report["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["what"] == "userspace 64-byte UDP frame rate vs Open vSwitch userspace")
        .expect("the target")
        .clone();
    assert!(target["met"].is_null(), "userspace was not measured: {target}");
    assert_no_ovs_left();
}
