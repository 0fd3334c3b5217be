//! Pods made the way kubelet makes them (issue #24): Debian's containerd with its CRI plugin
//! on, driven through the CRI gRPC API (RunPodSandbox, PodSandboxStatus, CreateContainer,
//! StartContainer, ExecSync, StopPodSandbox, RemovePodSandbox), its pods on a switch-cni
//! network with an uplink to an outside namespace.
//!
//! Checked: the pod's address from PodSandboxStatus is its port's; pods reach each other, the
//! gateway and the outside (masqueraded to the uplink's address); a hostPort answers from the
//! outside through the uplink, and the server sees the real client; `switch ports` shows each
//! pod's port as `namespace/name`; what the CRI plugin sends the plugin (`K8S_POD_*` in
//! `CNI_ARGS`, `runtimeConfig.portMappings`); StopPodSandbox + RemovePodSandbox leave no port,
//! lease, libcni result, network namespace, veth or forward; pods keep their network while
//! containerd restarts, and are cleaned up by a stop after it.
//!
//! Traffic goes only to the pods, the switch's gateway and the outside namespace the test
//! makes (10.140.N.0/24 and 10.141.N.0/24).
use container_env::cri::HostPort;
use switch_tests::{
    cri::{Cri, PodRun},
    ok,
    outside::PEER_SERVER,
};

/// A container that only idles.
const IDLE: &[&str] = &["sleep", "3600"];

/// An HTTP server on port 80 whose /cgi-bin/peer answers `client ADDRESS` with the address of
/// whoever connected.
const HTTPD: &[&str] = &[
    "sh",
    "-c",
    r#"mkdir -p /www/cgi-bin && printf '#!/bin/sh\necho Content-Type: text/plain\necho\necho "client $REMOTE_ADDR"\n' > /www/cgi-bin/peer && chmod +x /www/cgi-bin/peer && exec httpd -f -p 80 -h /www"#,
];

/// The shell command asking the server at `addr:port` who is connecting.
fn ask(addr: &str, port: &str) -> String {
    format!(r"printf 'GET /cgi-bin/peer HTTP/1.0\r\n\r\n' | nc -w 3 {addr} {port}")
}

/// The client address in a /cgi-bin/peer answer (httpd listens on IPv6: `[::ffff:A.B.C.D]`).
fn peer(out: &str) -> Option<String> {
    let a = out.lines().find_map(|l| l.strip_prefix("client "))?.trim();
    let a = a.trim_start_matches('[').split(']').next()?;
    Some(a.strip_prefix("::ffff:").unwrap_or(a).to_owned())
}

/// Pings `ip` from container `from` (twice); whether both replies came.
fn ping(cri: &mut Cri, from: &str, ip: &str) -> bool {
    let r = cri.exec(from, &["ping", "-c", "2", "-i", "0.2", "-W", "2", "-q", ip]);
    r.code == 0 && r.stdout.contains("2 packets received")
}

/// Asks the HTTP server at `addr:port` from container `from`; the client it saw.
fn ask_from(cri: &mut Cri, from: &str, addr: &str, port: &str) -> Option<String> {
    peer(&cri.exec(from, &["sh", "-c", &ask(addr, port)]).stdout)
}

/// Asks from the outside namespace.
fn ask_outside(cri: &Cri, addr: &str, port: &str) -> Option<String> {
    let script = ask(addr, port).replace("| nc", "| busybox nc");
    let o = std::process::Command::new("ip").args(["netns", "exec", &cri.outside, "sh", "-c", &script]).output();
    peer(&String::from_utf8_lossy(&o.unwrap().stdout))
}

/// Pod `pod` is on the switch: its PodSandboxStatus address is on the subnet and is its port's,
/// `switch ports` names it `namespace/name`, host-local has it reserved.
fn plugged(cri: &mut Cri, pod: &PodRun, workload: &str) {
    let net = cri.subnet.rsplit_once('.').unwrap().0.to_owned();
    assert!(pod.ip.starts_with(&format!("{net}.")) && pod.ip != cri.gateway, "{} is not a pod address", pod.ip);
    let port = cri.port_of(&pod.ip).unwrap_or_else(|| panic!("no port with {} on {}", pod.ip, cri.switch));
    assert_eq!(port.ip, format!("{}/24", pod.ip));
    assert_eq!(port.owner, pod.id, "the port is not named by the sandbox ID");
    assert!(port.netns.starts_with("/var/run/netns/cni-"), "{port:?}");
    assert_eq!(port.workload, workload, "{port:?}");
    assert!(cri.reservations().contains(&pod.ip), "{} not reserved: {:?}", pod.ip, cri.reservations());
}

/// Nothing of `pod` is left: no port, lease, libcni result, network namespace or veth.
fn unplugged(cri: &mut Cri, pod: &PodRun, netns: &str) {
    assert!(cri.port_of(&pod.ip).is_none(), "{} still has a port", pod.ip);
    assert!(!cri.reservations().contains(&pod.ip), "{} still reserved", pod.ip);
    let cached: Vec<_> = cri.cached_results().into_iter().filter(|f| f.to_string_lossy().contains(&pod.id)).collect();
    assert!(cached.is_empty(), "libcni still caches {cached:?}");
    assert!(!std::path::Path::new(netns).exists(), "{netns} is left");
    assert!(!cri.pods().contains(&pod.id), "CRI still lists {}", pod.id);
}

#[test]
#[ignore = "needs root, containerd and runc: run with --include-ignored"]
fn pods_through_cri_with_a_host_port() {
    let mut cri = Cri::new(1);
    let web_pod = cri.pod("default", "web", &[HostPort { host: 38140, container: 80, udp: false }]);
    let web = cri.run_pod(&web_pod);
    let httpd = cri.start(&web, "httpd", HTTPD);
    let client = cri.run_pod(&cri.pod("kube-system", "client", &[]));
    let idle = cri.start(&client, "idle", IDLE);
    plugged(&mut cri, &web, "default/web");
    plugged(&mut cri, &client, "kube-system/client");
    let table = ok(&["ports", "--switch", &cri.switch]);
    assert!(table.contains("default/web") && table.contains("kube-system/client"), "{table}");

    // Pod to pod, pod to gateway, pod to outside (masqueraded to the uplink's address).
    let gw = cri.gateway.clone();
    assert!(ping(&mut cri, &idle, &web.ip) && ping(&mut cri, &httpd, &client.ip), "the pods cannot ping each other");
    assert!(ping(&mut cri, &idle, &gw), "client cannot ping the gateway");
    let answered = container_env::command::wait_until(std::time::Duration::from_secs(10), || {
        ask_from(&mut cri, &idle, &web.ip, "80").is_some()
    });
    assert!(answered, "httpd in the web pod does not answer");
    assert_eq!(ask_from(&mut cri, &idle, &web.ip, "80"), Some(client.ip.clone()), "client -> web:80");
    let server = cri.spawn_outside(&["python3", "-c", PEER_SERVER, "8140"]);
    let (outside_ip, uplink_ip) = (cri.outside_ip.clone(), cri.uplink_ip.clone());
    let r = cri.exec(&idle, &["nc", "-w", "3", &outside_ip, "8140"]);
    assert!(r.stdout.starts_with(&format!("peer {uplink_ip}:")), "client -> outside: {r:?}");
    drop(server);

    // The hostPort from outside, through the uplink: the server sees the real client.
    assert_eq!(ask_outside(&cri, &uplink_ip, "38140"), Some(outside_ip.clone()), "outside -> hostPort");
    assert_eq!(ask_outside(&cri, &uplink_ip, "38141"), None, "a port that is not published answers");
    assert_eq!(cri.forwards().len(), 1, "{:?}", cri.forwards());

    what_cri_sent(&cri, &web, &client);

    // StopPodSandbox + RemovePodSandbox: nothing of the pod is left; the other pod works on.
    // Stop sends the DEL with the pod's namespace, Remove another without one.
    let netns = cri.port_of(&web.ip).unwrap().netns;
    let dels = |cri: &Cri| -> Vec<String> {
        cri.cni_calls()
            .into_iter()
            .filter(|c| c.command == "DEL" && c.container_id == web.id)
            .map(|c| c.netns)
            .collect()
    };
    cri.stop_pod(&web);
    assert_eq!(dels(&cri), std::slice::from_ref(&netns));
    cri.remove_pod(&web);
    assert_eq!(dels(&cri), [netns.clone(), String::new()]);
    unplugged(&mut cri, &web, &netns);
    assert!(cri.forwards().is_empty(), "the hostPort outlived its pod: {:?}", cri.forwards());
    assert_eq!(ask_outside(&cri, &uplink_ip, "38140"), None, "the hostPort answers without its pod");
    assert!(ping(&mut cri, &idle, &gw), "client lost the gateway when web went");
    let netns = cri.port_of(&client.ip).unwrap().netns;
    cri.stop_and_remove(&client);
    unplugged(&mut cri, &client, &netns);
    assert!(cri.pod_ports().is_empty() && cri.reservations().is_empty());
    let commands: Vec<String> = cri.cni_calls().into_iter().map(|c| c.command).collect();
    assert_eq!(commands, ["ADD", "ADD", "DEL", "DEL", "DEL", "DEL"], "{:?}", cri.cni_calls());
}

/// What the CRI plugin sent switch-cni for the pods' ADDs (printed; see docs/containers.md):
/// `CNI_ARGS` with the pod's Kubernetes namespace, name, sandbox ID and UID (in any order),
/// the pod's network namespace, `runtimeConfig.portMappings` for the pod with a hostPort only.
fn what_cri_sent(cri: &Cri, web: &PodRun, client: &PodRun) {
    let calls = cri.cni_calls();
    for c in &calls {
        eprintln!("CRI -> switch-cni: {} CNI_ARGS={} CNI_NETNS={} config={}", c.command, c.args, c.netns, c.conf);
    }
    let add = |pod: &PodRun| {
        let adds: Vec<_> = calls.iter().filter(|c| c.command == "ADD" && c.container_id == pod.id).collect();
        assert_eq!(adds.len(), 1, "ADDs of {}: {calls:?}", pod.id);
        adds[0].clone()
    };
    let (w, c) = (add(web), add(client));
    let args = |c: &switch_tests::cri::CniCall| {
        let mut v: Vec<String> = c.args.split(';').map(str::to_owned).collect();
        v.sort();
        v
    };
    let expect = |ns: &str, name: &str, pod: &PodRun| {
        let mut v = vec![
            "IgnoreUnknown=1".to_owned(),
            format!("K8S_POD_NAMESPACE={ns}"),
            format!("K8S_POD_NAME={name}"),
            format!("K8S_POD_INFRA_CONTAINER_ID={}", pod.id),
            format!("K8S_POD_UID={}-{name}-uid", cri.prefix),
        ];
        v.sort();
        v
    };
    assert_eq!(args(&w), expect("default", "web", web));
    assert_eq!(args(&c), expect("kube-system", "client", client));
    assert!(w.netns.starts_with("/var/run/netns/cni-"), "{w:?}");
    // go-cni's struct has no JSON tags: Go's field names, not the spec's camelCase (which
    // switch-cni's first version refused: "missing field `hostPort`").
    let mappings = &w.conf["runtimeConfig"]["portMappings"];
    let sent = serde_json::json!([{"HostPort": 38140, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""}]);
    assert_eq!(mappings, &sent, "{w:?}");
    assert!(c.conf["runtimeConfig"].get("portMappings").is_none(), "{c:?}");
}

#[test]
#[ignore = "needs root, containerd and runc: run with --include-ignored"]
fn pods_keep_their_network_while_containerd_restarts() {
    let mut cri = Cri::new(2);
    let a = cri.run_pod(&cri.pod("default", "a", &[HostPort { host: 38142, container: 80, udp: false }]));
    let httpd = cri.start(&a, "httpd", HTTPD);
    let b = cri.run_pod(&cri.pod("default", "b", &[]));
    let idle = cri.start(&b, "idle", IDLE);
    let uplink_ip = cri.uplink_ip.clone();
    let answered = container_env::command::wait_until(std::time::Duration::from_secs(10), || {
        ask_outside(&cri, &uplink_ip, "38142").is_some()
    });
    assert!(answered, "the hostPort does not answer");
    let ports_before = ok(&["ns", "list", "--json"]);
    let adds_before = cri.cni_calls().len();

    cri.restart_daemon();
    let mut pods = cri.pods();
    pods.sort();
    let mut expected = vec![a.id.clone(), b.id.clone()];
    expected.sort();
    assert_eq!(pods, expected, "CRI lost its pods across the restart");
    // The pods kept their network: same ports, reached, reaching.
    assert_eq!(ok(&["ns", "list", "--json"]), ports_before, "the ports changed across the restart");
    assert_eq!(cri.cni_calls().len(), adds_before, "the restart called the plugin: {:?}", cri.cni_calls());
    assert!(ping(&mut cri, &idle, &a.ip) && ping(&mut cri, &httpd, &b.ip), "the pods cannot ping each other");
    assert_eq!(ask_outside(&cri, &uplink_ip, "38142"), Some(cri.outside_ip.clone()), "outside -> hostPort");
    assert_eq!(ask_from(&mut cri, &idle, &a.ip, "80"), Some(b.ip.clone()), "b -> a:80");

    // A stop after the restart still cleans up.
    for pod in [&a, &b] {
        let netns = cri.port_of(&pod.ip).unwrap().netns;
        cri.stop_and_remove(pod);
        unplugged(&mut cri, pod, &netns);
    }
    assert!(cri.forwards().is_empty(), "{:?}", cri.forwards());
    assert!(cri.pod_ports().is_empty() && cri.reservations().is_empty());
}

/// `switch-cni install` into the configuration directory of a containerd that is running, as
/// the DaemonSet of docs/kubernetes.md does on a node: the CRI plugin takes the network it
/// writes. (containerd 1.6 ignores a file merely moved into the directory from elsewhere; the
/// install writes its temporary file there and renames it, which the plugin does reload on.)
#[test]
#[ignore = "needs root, containerd and runc: run with --include-ignored"]
fn a_network_installed_while_containerd_runs_is_taken() {
    let mut cri = Cri::new(3);
    let conf = cri.net_d().join("10-switch.conflist");
    // In the environment's own directory: its tear-down removes it, also after a failure.
    let scratch = cri.net_d().with_file_name("install");
    std::fs::create_dir_all(scratch.join("bin")).unwrap();
    let saved = scratch.join("switch.conflist");
    std::fs::copy(&conf, &saved).unwrap();
    std::fs::remove_file(&conf).unwrap();
    // The plugin reloads on the removal: no network, no pod.
    let before = cri.pod("default", "before", &[]);
    let refused = switch_tests::within(|| match cri.try_run_pod(&before) {
        Err(_) => true,
        Ok(run) => {
            cri.stop_and_remove(&run);
            false
        }
    });
    assert!(refused, "pods still got a network with no configuration");
    let installer = switch_tests::switch_bin().with_file_name("switch-cni");
    let (bin, net_d, from) = (scratch.join("bin"), cri.net_d(), saved.clone());
    let out = std::process::Command::new(&installer)
        .args(["install", "--bin-dir"])
        .arg(&bin)
        .arg("--conf-dir")
        .arg(&net_d)
        .arg("--conf")
        .arg(&from)
        .output()
        .unwrap();
    assert!(out.status.success(), "install: {}", String::from_utf8_lossy(&out.stderr));
    let after = cri.pod("default", "after", &[]);
    let mut last = String::new();
    let mut run = None;
    let taken = switch_tests::within(|| match cri.try_run_pod(&after) {
        Ok(r) => {
            run = Some(r);
            true
        }
        Err(e) => {
            last = e;
            false
        }
    });
    assert!(taken, "the installed network was not taken: {last}");
    cri.stop_and_remove(&run.unwrap());
    // The failed sandboxes too (their DEL needs the network back).
    cri.remove_all_pods();
}
