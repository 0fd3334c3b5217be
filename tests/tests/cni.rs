//! The CNI plugin `switch-cni`, driven the way a container runtime drives it: `CNI_*`
//! variables, the network configuration on stdin, the result or an error on stdout. The
//! protocol suite needs no namespace; the rest attaches real namespaces (made here with `ip
//! netns add`, as a runtime would) with the real `host-local` IPAM plugin.
use std::{
    io::Write as _,
    path::PathBuf,
    process::{Command, Stdio},
};

use serde_json::json;
use switch_tests::{outside::Outside, *};

/// `switch-cni`, next to the `switch` binary under test.
fn cni_bin() -> PathBuf {
    switch_bin().with_file_name("switch-cni")
}

/// Where the Debian package puts the reference plugins (host-local).
const CNI_PATH: &str = "/usr/lib/cni";

/// One plugin run: exit status and stdout as JSON (Null when empty).
struct Out {
    ok: bool,
    json: Value,
}

/// Runs the plugin with `vars` (CNI_COMMAND and friends) and `stdin`.
fn plugin(vars: &[(&str, &str)], stdin: &str) -> Out {
    plugin_at(&cni_bin(), vars, stdin)
}

/// Runs the CNI plugin at `bin` (switch-cni or a reference plugin) as `plugin` does.
fn plugin_at(bin: &std::path::Path, vars: &[(&str, &str)], stdin: &str) -> Out {
    let mut child = Command::new(bin)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let json = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {text}"))
    };
    Out { ok: out.status.success(), json }
}

/// An error the plugin printed: its code, with the spec's shape checked.
fn error_code(o: &Out) -> u64 {
    assert!(!o.ok, "expected an error, got {}", o.json);
    for key in ["cniVersion", "code", "msg"] {
        assert!(o.json.get(key).is_some(), "error without {key}: {}", o.json);
    }
    o.json["code"].as_u64().unwrap()
}

/// A network for the tests: a switch of the sandbox, a /24 of its own, host-local keeping its
/// leases in a directory of the test, containers as namespaces made here.
struct Net {
    sb: Sandbox,
    switch: String,
    net: u8,
    data_dir: PathBuf,
    containers: Vec<String>,
    extra: Value,
}

impl Net {
    fn new(net: u8) -> Self {
        let mut sb = Sandbox::new();
        let switch = sb.name("cni");
        sb.adopt(&switch);
        let data_dir = std::env::temp_dir().join(format!("switch-cni-test-{}", sb.prefix));
        Self { sb, switch, net, data_dir, containers: vec![], extra: json!({}) }
    }

    /// The configuration in spec `version`, with `extra` keys merged in.
    fn conf(&self, version: &str) -> Value {
        let mut c = json!({
            "cniVersion": version,
            "name": format!("{}-net", self.sb.prefix),
            "type": "switch-cni",
            "switch": self.switch,
            "capabilities": {"portMappings": true},
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": format!("10.{}.0.0/24", self.net), "gateway": format!("10.{}.0.1", self.net)}]],
                "dataDir": self.data_dir,
            },
        });
        for (k, v) in self.extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    /// A container: a namespace made the way a runtime makes one. Returns its ID and path.
    fn container(&mut self, suffix: &str) -> (String, String) {
        let ns = self.sb.name(suffix);
        host("ip", &["netns", "add", &ns]);
        self.containers.push(ns.clone());
        (format!("{ns}-id"), format!("/run/netns/{ns}"))
    }

    fn run(&self, command: &str, id: &str, netns: &str, conf: &Value) -> Out {
        self.run_if(command, id, netns, "eth0", conf)
    }

    /// `run` for the attachment with interface `ifname`.
    fn run_if(&self, command: &str, id: &str, netns: &str, ifname: &str, conf: &Value) -> Out {
        self.run_with(command, (id, netns, ifname), &[], conf)
    }

    /// `run` for the attachment (container ID, namespace, interface), with `more` variables.
    fn run_with(&self, command: &str, at: (&str, &str, &str), more: &[(&str, &str)], conf: &Value) -> Out {
        let mut vars = vec![
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", at.0),
            ("CNI_NETNS", at.1),
            ("CNI_IFNAME", at.2),
            ("CNI_PATH", CNI_PATH),
        ];
        vars.extend_from_slice(more);
        plugin(&vars, &conf.to_string())
    }

    /// ADD, asserting it worked; returns the result.
    fn add(&self, id: &str, netns: &str, version: &str) -> Value {
        let o = self.run("ADD", id, netns, &self.conf(version));
        assert!(o.ok, "ADD failed: {}", o.json);
        o.json
    }

    /// The owners of the switch's ports of kind adopted (the containers').
    fn adopted_owners(&self) -> Vec<String> {
        json(&["ports", "--switch", &self.switch])
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["kind"] == "adopted")
            .map(|p| p["owner"].as_str().unwrap().to_owned())
            .collect()
    }

    /// host-local's reservations (one file per leased address).
    fn leases(&self) -> Vec<String> {
        self.leases_of(&format!("{}-net", self.sb.prefix))
    }

    /// host-local's reservations for network `network` (sharing the data directory).
    fn leases_of(&self, network: &str) -> Vec<String> {
        let dir = self.data_dir.join(network);
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("10."))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.containers {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

#[test]
fn version_and_every_error_without_a_namespace() {
    // VERSION answers whatever the config says, even with none.
    for stdin in ["", r#"{"cniVersion": "0.3.1"}"#] {
        let o = plugin(&[("CNI_COMMAND", "VERSION")], stdin);
        assert!(o.ok);
        let v: Vec<&str> =
            o.json["supportedVersions"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(v, ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]);
    }
    let net = Net::new(160);
    let good = net.conf("1.0.0").to_string();
    let env = |cmd: &'static str| vec![("CNI_COMMAND", cmd), ("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0")];
    // 6: not JSON; 4: a variable missing or wrong; 1: a version it does not speak; 7: JSON
    // that is no valid configuration.
    assert_eq!(error_code(&plugin(&env("ADD"), "{not json")), 6);
    assert_eq!(error_code(&plugin(&[("CNI_CONTAINERID", "c1")], &good)), 4, "no CNI_COMMAND");
    assert_eq!(error_code(&plugin(&env("FROB"), &good)), 4, "unknown command");
    assert_eq!(error_code(&plugin(&[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")], &good)), 4, "no container ID");
    assert_eq!(error_code(&plugin(&env("ADD"), &good)), 4, "no CNI_NETNS");
    let mut bad_id = env("ADD");
    bad_id[1] = ("CNI_CONTAINERID", "../etc");
    assert_eq!(error_code(&plugin(&bad_id, &good)), 4, "container ID with a slash");
    let mut old = net.conf("0.2.0");
    assert_eq!(error_code(&plugin(&env("ADD"), &old.to_string())), 1);
    old["cniVersion"] = json!("1.0.0");
    old.as_object_mut().unwrap().remove("name");
    let o = plugin(&env("ADD"), &old.to_string());
    assert_eq!(error_code(&o), 7, "no name");
    assert_eq!(o.json["cniVersion"], "1.0.0", "the error is in the config's version");
    // The IPAM plugin: by name only, and it must be on CNI_PATH.
    let mut sneaky = net.conf("0.4.0");
    sneaky["ipam"]["type"] = json!("../../bin/sh");
    let mut with_netns = env("ADD");
    with_netns.push(("CNI_NETNS", "/run/netns/none"));
    with_netns.push(("CNI_PATH", CNI_PATH));
    let o = plugin(&with_netns, &sneaky.to_string());
    assert_eq!((error_code(&o), o.json["cniVersion"].as_str()), (7, Some("0.4.0")));
    let mut missing = net.conf("1.0.0");
    missing["ipam"]["type"] = json!("no-such-ipam");
    assert_eq!(error_code(&plugin(&with_netns, &missing.to_string())), 4);
    // A namespace path that is not a namespace: the plugin's own code, the lease given back.
    let o = plugin(
        &[
            ("CNI_NETNS", "/etc/hostname"),
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", CNI_PATH),
        ],
        &good,
    );
    assert!(error_code(&o) == 7 || error_code(&o) >= 100, "{}", o.json);
    assert!(net.leases().is_empty(), "the lease of a failed ADD was kept: {:?}", net.leases());
    // DEL of something never added, twice, without a namespace: fine.
    for _ in 0..2 {
        let o = plugin(
            &[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "c9"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_NETNS", ""),
                ("CNI_PATH", CNI_PATH),
            ],
            &good,
        );
        assert!(o.ok && o.json.is_null(), "DEL: {}", o.json);
    }
}

/// ADD, CHECK and DEL in every spec version, on real namespaces with host-local.
#[test]
fn add_check_del_in_every_version() {
    let mut net = Net::new(161);
    let clean = Snapshot::take(&net.sb.prefix);
    let (peer_id, peer_ns) = net.container("peer");
    net.add(&peer_id, &peer_ns, "1.0.0");
    for (i, version) in ["0.3.0", "0.3.1", "0.4.0", "1.0.0"].into_iter().enumerate() {
        let (id, netns) = net.container(&format!("c{i}"));
        let r = net.add(&id, &netns, version);
        assert_eq!(r["cniVersion"], version);
        let ip = &r["ips"][0];
        assert_eq!(ip.get("version").is_some(), version != "1.0.0", "{version}: {r}");
        assert_eq!((ip["interface"].as_u64(), ip["gateway"].as_str()), (Some(1), Some("10.161.0.1")));
        let sandbox = &r["interfaces"][1];
        assert_eq!((sandbox["name"].as_str(), sandbox["sandbox"].as_str()), (Some("eth0"), Some(netns.as_str())));
        // The interface inside has the address and the MAC the result says.
        let ns = netns.trim_start_matches("/run/netns/");
        let link = exec_ip(ns, &["-j", "addr", "show", "eth0"]);
        let addr = ip["address"].as_str().unwrap().split('/').next().unwrap().to_owned();
        assert!(link.contains(&addr) && link.contains(sandbox["mac"].as_str().unwrap()), "{link}");
        // Connectivity: the gateway and the other container.
        let peer_ip = "10.161.0.2";
        assert!(ping(ns, "10.161.0.1", 1) && ping(ns, peer_ip, 1), "{version}: no connectivity");
        // CHECK with ADD's result; with another address it says what is wrong.
        let mut conf = net.conf(version);
        conf["prevResult"] = r.clone();
        let o = net.run("CHECK", &id, &netns, &conf);
        assert!(o.ok, "CHECK: {}", o.json);
        conf["prevResult"]["ips"][0]["address"] = json!("10.161.0.250/24");
        assert_eq!(error_code(&net.run("CHECK", &id, &netns, &conf)), 102);
        // CHECK runs IPAM's too (from 0.4.0, where the spec has CHECK): a lease gone is found.
        if !version.starts_with("0.3.") {
            conf["prevResult"] = r.clone();
            let lease = net.data_dir.join(format!("{}-net", net.sb.prefix)).join(&addr);
            let kept = std::fs::read(&lease).unwrap();
            std::fs::remove_file(&lease).unwrap();
            let o = net.run("CHECK", &id, &netns, &conf);
            assert!(!o.ok && o.json["msg"].as_str().unwrap().contains("host-local"), "{version}: {}", o.json);
            std::fs::write(&lease, kept).unwrap();
        }
        // DEL: port, veth and lease go; again, and without the namespace, is fine.
        let o = net.run("DEL", &id, &netns, &net.conf(version));
        assert!(o.ok, "DEL: {}", o.json);
        assert!(!net.leases().contains(&addr), "{version}: lease kept");
        assert_eq!(exec_ip(ns, &["-br", "link"]).lines().count(), 1, "only lo is left in the namespace");
        assert!(net.run("DEL", &id, &netns, &net.conf(version)).ok);
        assert!(net.run("DEL", &id, "", &net.conf(version)).ok);
    }
    assert!(net.run("DEL", &peer_id, &peer_ns, &net.conf("1.0.0")).ok);
    assert!(net.leases().is_empty(), "{:?}", net.leases());
    let mine = |r: &&Value| r["namespace"].as_str().unwrap().starts_with(&net.sb.prefix);
    assert!(json(&["ns", "list"]).as_array().unwrap().iter().filter(mine).all(|r| r["kind"] != "attached"));
    ok(&["down", "--switch", &net.switch]);
    for ns in std::mem::take(&mut net.containers) {
        host("ip", &["netns", "del", &ns]);
    }
    assert_eq!(Snapshot::take(&net.sb.prefix), clean, "the plugin left something behind");
}

/// `ip -n NS ARGS` output.
fn exec_ip(ns: &str, args: &[&str]) -> String {
    let mut a = vec!["-n", ns];
    a.extend_from_slice(args);
    String::from_utf8(Command::new("ip").args(&a).output().unwrap().stdout).unwrap()
}

/// Runtimes run ADDs and DELs in parallel: they all land, with distinct addresses.
#[test]
fn concurrent_adds_and_dels_all_land() {
    let mut net = Net::new(162);
    let containers: Vec<(String, String)> = (0..10).map(|i| net.container(&format!("p{i}"))).collect();
    let conf = net.conf("1.0.0");
    let results: Vec<Out> = std::thread::scope(|s| {
        let handles: Vec<_> =
            containers.iter().map(|(id, netns)| s.spawn(|| net.run("ADD", id, netns, &conf))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut addrs: Vec<String> = results
        .iter()
        .map(|o| {
            assert!(o.ok, "a parallel ADD failed: {}", o.json);
            o.json["ips"][0]["address"].as_str().unwrap().to_owned()
        })
        .collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 10, "addresses handed out twice");
    let first = containers[0].1.trim_start_matches("/run/netns/");
    for a in &addrs[1..] {
        assert!(ping(first, a.split('/').next().unwrap(), 1), "no connectivity to {a}");
    }
    std::thread::scope(|s| {
        for (id, netns) in &containers {
            let conf = &conf;
            let net = &net;
            s.spawn(move || assert!(net.run("DEL", id, netns, conf).ok));
        }
    });
    assert!(net.leases().is_empty(), "{:?}", net.leases());
    assert_eq!(json(&["ports", "--switch", &net.switch]).as_array().unwrap().len(), 1, "only the gateway is left");
}

/// Published ports become the switch's forwards: reachable from outside through the uplink
/// and from the host; DEL takes them (and the connections) away.
#[test]
fn port_mappings_are_forwards_and_go_with_the_container() {
    let mut net = Net::new(163);
    let outside = Outside::new(&net.sb, 163);
    net.extra = json!({ "uplink": outside.uplink });
    let (id, netns) = net.container("web");
    let mut conf = net.conf("0.4.0");
    conf["runtimeConfig"] = json!({ "portMappings": [
        { "hostPort": 16380, "containerPort": 80, "protocol": "tcp" },
        { "hostPort": 16353, "containerPort": 53, "protocol": "udp", "hostIP": "" },
    ]});
    let o = net.run("ADD", &id, &netns, &conf);
    assert!(o.ok, "ADD: {}", o.json);
    let ns = netns.trim_start_matches("/run/netns/").to_owned();
    let mut server =
        spawn_until(Command::new("ip").args(["netns", "exec", &ns, "python3", "-c", HTTP_SERVER]), "ready");
    let get = |from: Option<&str>, addr: &str| {
        let script =
            format!("import urllib.request;print(urllib.request.urlopen('http://{addr}/',timeout=3).read().decode())");
        let out = match from {
            Some(ns) => Command::new("ip").args(["netns", "exec", ns, "python3", "-c", &script]).output(),
            None => Command::new("python3").args(["-c", &script]).output(),
        };
        String::from_utf8(out.unwrap().stdout).unwrap().trim().to_owned()
    };
    assert_eq!(get(Some(&outside.ns), "172.31.163.1:16380"), "client 172.31.163.2", "from outside");
    assert!(get(None, "127.0.0.1:16380").starts_with("client "), "from the host");
    let rows = json(&["forward", "list", "--switch", &net.switch]);
    assert_eq!(rows.as_array().unwrap().len(), 2, "{rows}");
    // CHECK sees the forwards; a mapping that is not there is reported.
    conf["prevResult"] = o.json.clone();
    assert!(net.run("CHECK", &id, &netns, &conf).ok);
    let mut wrong = conf.clone();
    wrong["runtimeConfig"]["portMappings"][0]["hostPort"] = json!(16381);
    assert_eq!(error_code(&net.run("CHECK", &id, &netns, &wrong)), 102);
    // A second container cannot take a published port.
    let (id2, netns2) = net.container("web2");
    let o = net.run("ADD", &id2, &netns2, &conf);
    assert!(error_code(&o) == 7, "{}", o.json);
    assert_eq!(net.leases().len(), 1, "the failed ADD kept its lease: {:?}", net.leases());
    assert!(json(&["ns", "list"]).as_array().unwrap().iter().all(|r| r["namespace"] != id2.as_str()));
    // hostIP: the uplink's own address is fine, any other is refused (nothing published).
    let (id3, netns3) = net.container("web3");
    let mut pinned = net.conf("1.0.0");
    pinned["runtimeConfig"] = json!({ "portMappings": [{ "hostPort": 16390, "containerPort": 80, "protocol": "tcp", "hostIP": "192.0.2.1" }]});
    assert_eq!(error_code(&net.run("ADD", &id3, &netns3, &pinned)), 7);
    pinned["runtimeConfig"]["portMappings"][0]["hostIP"] = json!("172.31.163.1");
    assert!(net.run("ADD", &id3, &netns3, &pinned).ok);
    assert!(net.run("DEL", &id3, &netns3, &pinned).ok);
    let _ = server.kill();
    let _ = server.wait();
    assert!(net.run("DEL", &id, &netns, &conf).ok);
    assert!(json(&["forward", "list", "--switch", &net.switch]).as_array().unwrap().is_empty());
    assert_eq!(table_stats(&net.switch, "conntrack")["entries"], 0, "connections outlived the container");
    drop(outside);
}

/// Answers one GET with "client ADDRESS", after printing "ready".
const HTTP_SERVER: &str = r#"
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b = ("client " + self.client_address[0]).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(b))); self.end_headers(); self.wfile.write(b)
    def log_message(self, *a): pass
s = http.server.HTTPServer(("0.0.0.0", 80), H); print("ready", flush=True); s.serve_forever()
"#;

/// A network whose switch is already up with other settings is refused, not bent.
#[test]
fn a_mismatch_with_the_running_switch_is_an_error() {
    let mut net = Net::new(164);
    ok(&["up", "--switch", &net.switch, "--gateway", "10.164.0.254/24"]);
    let (id, netns) = net.container("c");
    let o = net.run("ADD", &id, &netns, &net.conf("1.0.0"));
    assert_eq!(error_code(&o), 7, "{}", o.json);
    assert!(o.json["msg"].as_str().unwrap().contains("gateway"), "{}", o.json);
    assert!(net.leases().is_empty(), "{:?}", net.leases());
}

/// A container MAC (`runtimeConfig.mac`, `MAC=` in CNI_ARGS) that the gateway or another
/// container holds is refused, the lease given back and no port made; so is a gateway whose
/// prefix would route a large part of the address space into the segment.
#[test]
fn a_mac_in_use_and_a_huge_segment_are_refused() {
    let mut net = Net::new(167);
    let (id1, ns1) = net.container("c1");
    net.add(&id1, &ns1, "1.0.0");
    let rows = json(&["ports", "--switch", &net.switch]);
    let mac_of = |kind: &str, owner: &str| -> String {
        let row =
            rows.as_array().unwrap().iter().find(|r| r["kind"] == kind && (owner.is_empty() || r["owner"] == owner));
        row.unwrap_or_else(|| panic!("no {kind} port in {rows}"))["mac"].as_str().unwrap().to_owned()
    };
    let (gw, c1) = (mac_of("gateway", ""), mac_of("adopted", &id1));
    let (id2, ns2) = net.container("c2");
    let leases = net.leases();
    let args = format!("IgnoreUnknown=1;MAC={gw}");
    let o = net.run_with("ADD", (&id2, &ns2, "eth0"), &[("CNI_ARGS", &args)], &net.conf("1.0.0"));
    assert!(error_code(&o) >= 100, "{}", o.json);
    let msg = o.json["msg"].as_str().unwrap();
    assert!(msg.contains(&format!("MAC address {gw} is already used by the gateway of switch")), "{msg}");
    let mut conf = net.conf("1.0.0");
    conf["runtimeConfig"] = serde_json::json!({"mac": c1});
    let o = net.run("ADD", &id2, &ns2, &conf);
    assert!(error_code(&o) >= 100, "{}", o.json);
    let msg = o.json["msg"].as_str().unwrap();
    assert!(msg.contains(&format!("MAC address {c1} is already used by namespace '{id1}'")), "{msg}");
    assert_eq!(net.leases(), leases, "a lease of a refused ADD was kept");
    assert!(!json(&["ns", "list"]).as_array().unwrap().iter().any(|r| r["namespace"] == id2.as_str()));

    // A gateway of /7: refused as a configuration error, before anything is made.
    let other = Net::new(168);
    let (id3, ns3) = net.container("c3");
    let mut conf = other.conf("1.0.0");
    conf["gateway"] = serde_json::json!("10.168.0.1/7");
    let o = other.run("ADD", &id3, &ns3, &conf);
    assert_eq!(error_code(&o), 7, "{}", o.json);
    assert!(o.json["msg"].as_str().unwrap().contains("shorter than /8"), "{}", o.json);
    assert!(other.leases().is_empty(), "{:?}", other.leases());
    assert!(!json(&["list"]).as_array().unwrap().iter().any(|s| s["name"] == other.switch.as_str()));
}

/// Spec 1.1: STATUS says the plugin is ready; GC removes every attachment of the network the
/// runtime no longer lists (port and lease), and keeps the ones it lists. A 1.1.0
/// configuration works with Debian's host-local, which speaks 1.0.0 at most.
#[test]
fn gc_and_status_of_spec_1_1() {
    let mut net = Net::new(166);
    let conf = net.conf("1.1.0");
    let o = plugin(&[("CNI_COMMAND", "STATUS"), ("CNI_PATH", CNI_PATH)], &conf.to_string());
    assert!(o.ok && o.json.is_null(), "STATUS: {}", o.json);
    let ids: Vec<(String, String)> = (0..3).map(|i| net.container(&format!("g{i}"))).collect();
    for (id, netns) in &ids {
        let r = net.run("ADD", id, netns, &conf);
        assert!(r.ok, "ADD 1.1.0: {}", r.json);
        assert!(r.json["ips"][0].get("version").is_none(), "{}", r.json);
    }
    assert_eq!(net.leases().len(), 3);
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{ "containerID": ids[1].0, "ifname": "eth0" }]);
    let o = plugin(&[("CNI_COMMAND", "GC"), ("CNI_PATH", CNI_PATH)], &gc.to_string());
    assert!(o.ok, "GC: {}", o.json);
    let ports = net.adopted_owners();
    assert_eq!(ports, [ids[1].0.clone()], "GC kept the wrong ports");
    assert_eq!(net.leases().len(), 1, "GC kept stale leases: {:?}", net.leases());
    assert!(ping(ids[1].1.trim_start_matches("/run/netns/"), "10.166.0.1", 1), "the valid one still works");
    assert!(net.run("DEL", &ids[1].0, &ids[1].1, &conf).ok);
}

/// `switch ns attach` does for people what the plugin does for runtimes: any existing
/// namespace plugged in, taken out again, never deleted.
#[test]
fn ns_attach_plugs_any_namespace_and_never_deletes_it() {
    let mut sb = Sandbox::new();
    let sw = sb.switch("att", "tc", &["--gateway", "10.165.0.254/24"]);
    let b = sb.port(&sw, "b", "10.165.0.2/24", &[]);
    let (theirs, name) = (sb.name("theirs"), sb.name("ctr"));
    host("ip", &["netns", "add", &theirs]);
    let path = format!("/run/netns/{theirs}");
    let r = json(&["ns", "attach", &name, "--netns", &path, "--ip", "10.165.0.5/24", "--switch", &sw, "--mtu", "1400"]);
    assert_eq!(r["created"], true, "{r}");
    assert!(ping(&theirs, "10.165.0.2", 1) && ping(&theirs, "10.165.0.254", 1));
    assert!(exec_ip(&theirs, &["link", "show", "eth0"]).contains("mtu 1400"));
    let row = ns_info(&name);
    assert_eq!((row["kind"].as_str(), row["netns"].as_str()), (Some("attached"), Some(path.as_str())), "{row}");
    // Again: nothing to do. Elsewhere, or a file that is no namespace, or a name the switch
    // uses: refused, nothing recorded.
    let again =
        json(&["ns", "attach", &name, "--netns", &path, "--ip", "10.165.0.5/24", "--switch", &sw, "--mtu", "1400"]);
    assert_eq!(again["created"], false);
    let e = fails(
        &["ns", "attach", &sb.name("x"), "--netns", "/etc/hostname", "--ip", "10.165.0.6/24", "--switch", &sw],
        2,
    );
    assert!(e.contains("not a namespace"), "{e}");
    let e = fails(&["ns", "attach", &b, "--netns", &path, "--ip", "10.165.0.7/24", "--switch", &sw], 2);
    assert!(e.contains("already exists"), "{e}");
    assert!(json(&["ns", "list"]).as_array().unwrap().iter().all(|r| r["namespace"] != sb.name("x").as_str()));
    // Detach: the veth goes, the namespace stays; a second detach is no error.
    assert_eq!(json(&["ns", "detach", &name])["removed"], true);
    assert_eq!(exec_ip(&theirs, &["-br", "link"]).lines().count(), 1);
    assert_eq!(json(&["ns", "detach", &name])["removed"], false);
    // Attached again, then the whole switch goes: still not their namespace.
    ok(&["ns", "attach", &name, "--netns", &path, "--ip", "10.165.0.5/24", "--switch", &sw]);
    ok(&["down", "--switch", &sw]);
    assert!(std::path::Path::new(&path).exists(), "down deleted a namespace it did not make");
    assert_eq!(exec_ip(&theirs, &["-br", "link"]).lines().count(), 1, "down left the veth in their namespace");
    host("ip", &["netns", "del", &theirs]);
}

/// An attachment is (network, container, interface): one container on two networks (`eth0`
/// on one, `net1` on the other, as Multus and `podman --network a --network b` make it) has
/// both; ADD of the same attachment again is idempotent; CHECK and DEL name one attachment
/// and leave the other.
#[test]
fn one_container_on_two_networks() {
    let mut a = Net::new(170);
    let b = Net::new(171);
    let (id, netns) = a.container("multi");
    let ns = netns.trim_start_matches("/run/netns/").to_owned();
    let ra = a.run_if("ADD", &id, &netns, "eth0", &a.conf("1.0.0"));
    assert!(ra.ok, "ADD on a: {}", ra.json);
    let rb = b.run_if("ADD", &id, &netns, "net1", &b.conf("0.4.0"));
    assert!(rb.ok, "ADD on b: {}", rb.json);
    assert!(ping(&ns, "10.170.0.1", 1) && ping(&ns, "10.171.0.1", 1), "not on both networks");
    // The container's default route stays a's; b's result says it has none.
    assert!(exec_ip(&ns, &["route", "show", "default"]).contains("via 10.170.0.1 dev eth0"));
    assert_eq!(rb.json["routes"], json!([]), "{}", rb.json);
    // Again: the same result, no second lease.
    let again = b.run_if("ADD", &id, &netns, "net1", &b.conf("0.4.0"));
    assert!(again.ok, "ADD on b again: {}", again.json);
    assert_eq!((&again.json["ips"], &again.json["interfaces"]), (&rb.json["ips"], &rb.json["interfaces"]));
    assert_eq!(b.leases().len(), 1, "{:?}", b.leases());
    // CHECK names one attachment: b's result is right for net1 on b, there is no eth0 on b.
    let mut check = b.conf("0.4.0");
    check["prevResult"] = rb.json.clone();
    let o = b.run_if("CHECK", &id, &netns, "net1", &check);
    assert!(o.ok, "CHECK: {}", o.json);
    assert_eq!(error_code(&b.run_if("CHECK", &id, &netns, "eth0", &check)), 102);
    // DEL of b's attachment leaves a's; a DEL on a naming net1 takes nothing of b's or a's.
    assert!(b.run_if("DEL", &id, &netns, "net1", &b.conf("0.4.0")).ok);
    assert!(b.leases().is_empty(), "{:?}", b.leases());
    assert!(!exec_ip(&ns, &["-br", "link"]).contains("net1"), "net1 outlived its DEL");
    assert!(a.run_if("DEL", &id, &netns, "net1", &a.conf("1.0.0")).ok);
    assert_eq!(a.leases().len(), 1, "{:?}", a.leases());
    assert!(ping(&ns, "10.170.0.1", 1), "DEL of one attachment took the other");
    assert!(a.run_if("DEL", &id, &netns, "eth0", &a.conf("1.0.0")).ok);
    assert!(a.leases().is_empty(), "{:?}", a.leases());
}

/// Container IDs as long as runtimes make them (nerdctl sends `NAMESPACE-<64 hex>`): two that
/// differ only in their last character get ports of their own, which CHECK and DEL find.
#[test]
fn container_ids_as_long_as_runtimes_make_them() {
    let mut net = Net::new(172);
    let hex = "0123456789abcdef".repeat(4);
    let mut attached = vec![];
    for last in ["a", "b"] {
        let (_, netns) = net.container(&format!("long{last}"));
        let id = format!("{}-{}{last}", net.sb.prefix, &hex[..63]);
        assert!(id.len() > 64);
        let r = net.add(&id, &netns, "1.0.0");
        attached.push((id, netns, r));
    }
    let owners = net.adopted_owners();
    assert_eq!(owners.len(), 2, "{owners:?}");
    assert_ne!(owners[0], owners[1]);
    let other = attached[1].2["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_owned();
    assert!(ping(attached[0].1.trim_start_matches("/run/netns/"), &other, 1));
    for (id, netns, r) in &attached {
        let mut check = net.conf("1.0.0");
        check["prevResult"] = r.clone();
        let o = net.run("CHECK", id, netns, &check);
        assert!(o.ok, "CHECK: {}", o.json);
        assert!(net.run("DEL", id, netns, &net.conf("1.0.0")).ok);
    }
    assert!(net.leases().is_empty(), "{:?}", net.leases());
    assert_eq!(json(&["ports", "--switch", &net.switch]).as_array().unwrap().len(), 1, "only the gateway is left");
}

/// GC removes only the attachments the plugin made for the network it runs for: never a
/// `switch ns attach` port or another network's on the same switch. It goes on past a failing
/// removal, and releases the leases of attachments whose port is already gone.
#[test]
fn gc_takes_only_the_networks_own_attachments() {
    let mut net = Net::new(173);
    let conf = net.conf("1.1.0");
    let ids: Vec<(String, String)> = (0..3).map(|i| net.container(&format!("g{i}"))).collect();
    for (id, netns) in &ids {
        assert!(net.run("ADD", id, netns, &conf).ok);
    }
    // Another network on the same switch (addresses of its own), with a container of its own.
    let other_name = format!("{}-other", net.sb.prefix);
    let mut other = conf.clone();
    other["name"] = json!(other_name);
    other["ipam"]["ranges"][0][0]["rangeStart"] = json!("10.173.0.200");
    let (other_id, other_ns) = net.container("g3");
    let o = net.run("ADD", &other_id, &other_ns, &other);
    assert!(o.ok, "ADD on the other network: {}", o.json);
    // A port made by hand, and an attachment whose port is gone but whose lease is not.
    let (_, path) = net.container("byhand");
    let by_hand = net.sb.name("byhand-port");
    ok(&["ns", "attach", &by_hand, "--netns", &path, "--ip", "10.173.0.150/24", "--switch", &net.switch]);
    ok(&["ns", "detach", &ids[1].0]);
    assert_eq!(net.leases().len(), 3);
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{ "containerID": ids[2].0, "ifname": "eth0" }]);
    // Every removal fails: GC says so, and releases the leases all the same.
    let failing = [("CNI_COMMAND", "GC"), ("CNI_PATH", CNI_PATH), ("SWITCH_FAILPOINT", "ns-detach:start:error")];
    let o = plugin(&failing, &gc.to_string());
    assert!(error_code(&o) >= 100, "{}", o.json);
    assert!(o.json["msg"].as_str().unwrap().contains(&ids[0].0), "{}", o.json);
    assert_eq!(net.leases().len(), 1, "GC stopped at the failure: {:?}", net.leases());
    let o = plugin(&[("CNI_COMMAND", "GC"), ("CNI_PATH", CNI_PATH)], &gc.to_string());
    assert!(o.ok, "GC: {}", o.json);
    let rows = json(&["ports", "--switch", &net.switch]);
    let adopted: Vec<&Value> = rows.as_array().unwrap().iter().filter(|p| p["kind"] == "adopted").collect();
    assert_eq!(adopted.len(), 3, "GC took the wrong ports: {rows}");
    for owner in [&ids[2].0, &by_hand, &other_id] {
        assert!(adopted.iter().any(|p| p["owner"] == owner.as_str()), "GC took {owner}: {rows}");
    }
    assert!(!adopted.iter().any(|p| p["owner"] == ids[0].0.as_str()), "{rows}");
    assert_eq!(net.leases_of(&other_name).len(), 1, "GC took the other network's lease");
    assert!(ping(other_ns.trim_start_matches("/run/netns/"), "10.173.0.1", 1), "the other network's port broke");
    assert!(net.run("DEL", &other_id, &other_ns, &other).ok);
    assert!(net.run("DEL", &ids[2].0, &ids[2].1, &conf).ok);
    ok(&["ns", "detach", &by_hand]);
    assert!(net.leases().is_empty() && net.leases_of(&other_name).is_empty());
}

/// Chained after another plugin (here what `loopback` returns): its result is kept and
/// extended, indexes right; IPAM's routes (in the namespace too) and the configuration's
/// `dns` reach the result; CHECK finds the address on its interface. DEL releases the lease
/// when the port cannot be removed, and when it is gone already.
#[test]
fn chained_results_and_del_releasing_the_lease() {
    let mut net = Net::new(174);
    let dns = json!({ "nameservers": ["10.174.0.53"], "search": ["example.test"] });
    net.extra = json!({ "dns": dns });
    let (id, netns) = net.container("chain");
    let ns = netns.trim_start_matches("/run/netns/").to_owned();
    let mut conf = net.conf("1.0.0");
    conf["ipam"]["routes"] = json!([{ "dst": "0.0.0.0/0" }, { "dst": "198.51.100.0/24" }]);
    conf["prevResult"] = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{ "name": "lo", "mac": "00:00:00:00:00:00", "sandbox": netns }],
        "ips": [{ "address": "127.0.0.1/8", "interface": 0 }],
    });
    let o = net.run("ADD", &id, &netns, &conf);
    assert!(o.ok, "ADD: {}", o.json);
    let r = &o.json;
    let names: Vec<&str> = r["interfaces"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!((names.len(), names[0], names[2]), (3, "lo", "eth0"), "{r}");
    assert_eq!(r["ips"][0], conf["prevResult"]["ips"][0], "{r}");
    assert_eq!((r["ips"][1]["interface"].as_u64(), r["ips"][1]["gateway"].as_str()), (Some(2), Some("10.174.0.1")));
    let routes = r["routes"].as_array().unwrap();
    assert!(routes.contains(&json!({ "dst": "198.51.100.0/24" })), "{r}");
    assert!(routes.contains(&json!({ "dst": "0.0.0.0/0", "gw": "10.174.0.1" })), "{r}");
    assert_eq!(r["dns"], dns);
    assert!(exec_ip(&ns, &["route"]).contains("198.51.100.0/24 via 10.174.0.1"), "IPAM's route is not there");
    // A repeated ADD answers the same routes (read back: IPAM is not asked twice) and DNS.
    let again = net.run("ADD", &id, &netns, &conf);
    assert!(again.ok, "ADD again: {}", again.json);
    let routes = again.json["routes"].as_array().unwrap();
    assert!(routes.contains(&json!({ "dst": "198.51.100.0/24", "gw": "10.174.0.1" })), "{}", again.json);
    assert_eq!(again.json["dns"], dns);
    let mut check = net.conf("1.0.0");
    check["prevResult"] = r.clone();
    let o = net.run("CHECK", &id, &netns, &check);
    assert!(o.ok, "CHECK: {}", o.json);
    // The port cannot be removed: DEL says so, and the lease goes all the same.
    let del = |failpoint: &str| {
        net.run_with("DEL", (&id, &netns, "eth0"), &[("SWITCH_FAILPOINT", failpoint)], &net.conf("1.0.0"))
    };
    assert!(error_code(&del("ns-detach:start:error")) >= 100);
    assert!(net.leases().is_empty(), "the lease outlived a failed DEL: {:?}", net.leases());
    assert!(del("").ok);
    // The namespace is gone (and the port with it) before DEL: the lease goes too.
    let (id2, netns2) = net.container("gone");
    net.add(&id2, &netns2, "1.0.0");
    host("ip", &["netns", "del", netns2.trim_start_matches("/run/netns/")]);
    assert!(net.run("DEL", &id2, "", &net.conf("1.0.0")).ok);
    assert!(net.leases().is_empty(), "{:?}", net.leases());
    assert_eq!(json(&["ports", "--switch", &net.switch]).as_array().unwrap().len(), 1, "only the gateway is left");
}

/// STATUS runs the IPAM plugin's STATUS when it speaks 1.1.0 (a stand-in here: Debian's
/// host-local speaks 1.0.0, and counts as ready), and passes its error on.
#[test]
fn status_asks_an_ipam_plugin_that_speaks_1_1() {
    let net = Net::new(175);
    let dir = net.data_dir.join("bin");
    std::fs::create_dir_all(&dir).unwrap();
    let fake = dir.join("fake-ipam");
    std::fs::write(
        &fake,
        "#!/bin/sh\n[ \"$CNI_COMMAND\" = VERSION ] || cat >/dev/null\ncase \"$CNI_COMMAND\" in\n\
         VERSION) echo '{\"cniVersion\":\"1.1.0\",\"supportedVersions\":[\"1.0.0\",\"1.1.0\"]}' ;;\n\
         STATUS) echo '{\"cniVersion\":\"1.1.0\",\"code\":50,\"msg\":\"out of addresses\"}'; exit 1 ;;\n\
         esac\n",
    )
    .unwrap();
    host("chmod", &["+x", fake.to_str().unwrap()]);
    let mut conf = net.conf("1.1.0");
    conf["ipam"] = json!({ "type": "fake-ipam" });
    let path = format!("{}:{CNI_PATH}", dir.display());
    let o = plugin(&[("CNI_COMMAND", "STATUS"), ("CNI_PATH", &path)], &conf.to_string());
    assert_eq!(error_code(&o), 50, "{}", o.json);
    assert_eq!(o.json["msg"], "fake-ipam: out of addresses");
    let o = plugin(&[("CNI_COMMAND", "STATUS"), ("CNI_PATH", &path)], &net.conf("1.1.0").to_string());
    assert!(o.ok, "STATUS with host-local: {}", o.json);
}

/// Containers that ran before an upgrade: their ports were made by a switch-cni that did not
/// record attachments (an `eth0` port named by its container ID). CHECK and DEL of the new
/// plugin still find them; DEL removes the port and releases the lease.
#[test]
fn ports_made_before_attachments_were_recorded_are_still_deleted() {
    let mut net = Net::new(175);
    let (id, netns) = net.container("old");
    let r = net.add(&id, &netns, "1.0.0");
    forget_attachment(&id);
    assert_eq!(net.adopted_owners(), std::slice::from_ref(&id));
    let mut check = net.conf("1.0.0");
    check["prevResult"] = r;
    let o = net.run("CHECK", &id, &netns, &check);
    assert!(o.ok, "CHECK of a port from before: {}", o.json);
    assert!(net.run("DEL", &id, &netns, &net.conf("1.0.0")).ok);
    assert!(net.adopted_owners().is_empty(), "DEL left the port from before");
    assert!(net.leases().is_empty(), "{:?}", net.leases());
}

/// Rewrites port `owner`'s record as an older switch-cni wrote it (no `cni` attachment),
/// under the state lock every command takes.
fn forget_attachment(owner: &str) {
    use std::os::fd::AsRawFd as _;
    let lock = std::fs::File::open("/run/switch/lock").unwrap();
    // SAFETY: flock on a descriptor we own, released when it is closed.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let path = "/run/switch/state.json";
    let mut state: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let port = state["ports"].as_array_mut().unwrap().iter_mut().find(|p| p["owner"] == owner).expect("the port");
    assert!(port.as_object_mut().unwrap().remove("attachment").is_some(), "the new plugin records the attachment");
    std::fs::write(path, serde_json::to_vec_pretty(&state).unwrap()).unwrap();
}

/// A chain of plugins run for one attachment as libcni runs a conflist: ADD in order, each
/// given the network's name and version and the result before it; DEL in reverse order, each
/// given the chain's last result. `switch-cni` first, reference plugins after it.
struct Chain<'a> {
    net: &'a Net,
    plugins: Vec<Value>,
    /// `CNI_ARGS`.
    args: String,
}

impl Chain<'_> {
    /// The configuration plugin `i` gets: its own keys, the network's name and version.
    fn conf(&self, i: usize, prev: Option<&Value>) -> Value {
        let mut c = self.plugins[i].clone();
        c["name"] = json!(format!("{}-net", self.net.sb.prefix));
        c["cniVersion"] = json!("1.0.0");
        if let Some(p) = prev {
            c["prevResult"] = p.clone();
        }
        c
    }

    fn run(&self, i: usize, command: &str, (id, netns): (&str, &str), prev: Option<&Value>) -> Out {
        let kind = self.plugins[i]["type"].as_str().unwrap();
        let bin = if kind == "switch-cni" { cni_bin() } else { PathBuf::from(CNI_PATH).join(kind) };
        let vars = [
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", id),
            ("CNI_NETNS", netns),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", CNI_PATH),
            ("CNI_ARGS", &self.args),
        ];
        plugin_at(&bin, &vars, &self.conf(i, prev).to_string())
    }

    /// ADD through the chain: the last result, or the first failure's error after the DEL a
    /// runtime sends when an ADD fails.
    fn add(&self, at: (&str, &str)) -> Result<Value, Value> {
        let mut prev: Option<Value> = None;
        for i in 0..self.plugins.len() {
            let o = self.run(i, "ADD", at, prev.as_ref());
            if !o.ok {
                self.del(at, prev.as_ref());
                return Err(o.json);
            }
            prev = Some(o.json);
        }
        Ok(prev.unwrap())
    }

    /// DEL through the chain in reverse, asserting each plugin succeeds.
    fn del(&self, at: (&str, &str), result: Option<&Value>) {
        for i in (0..self.plugins.len()).rev() {
            let o = self.run(i, "DEL", at, result);
            assert!(o.ok, "DEL of {}: {}", self.plugins[i]["type"], o.json);
        }
    }
}

/// The reference plugins chained after switch-cni, each working or refused:
/// - `firewall` works: its FORWARD rules for the container's address come and go with it;
/// - `tuning` works: its sysctls apply, and a MAC given to the container (`MAC=` in
///   `CNI_ARGS`, which both plugins read) is the one port security binds. A MAC set by
///   `tuning` alone is another station's to port security: the container's frames are dropped
///   and counted as spoofed, unless the network turns port security off;
/// - `bandwidth` is refused: it cannot add its ingress qdisc where the switch's clsact qdisc is
///   (and would not see switched frames if it could); the chain fails and leaves nothing.
#[test]
fn reference_plugins_chained_after_it() {
    let mut net = Net::new(176);
    let containers = ["fw", "tune", "mac", "bw"].map(|c| net.container(c));
    let base = net.conf("1.0.0");
    let chain = |next: Value, args: &str| Chain { net: &net, plugins: vec![base.clone(), next], args: args.to_owned() };
    let gateway = "10.176.0.1";
    let had_chains = container_env::iptables::chains();

    let (id, netns) = containers[0].clone();
    let ns = netns.trim_start_matches("/run/netns/").to_owned();
    let fw = chain(json!({ "type": "firewall", "backend": "iptables" }), "");
    let r = fw.add((&id, &netns)).unwrap_or_else(|e| panic!("switch-cni + firewall: {e}"));
    let addr = r["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_owned();
    assert!(ping(&ns, gateway, 1));
    assert!(!container_env::iptables::rules_with("filter", &addr).is_empty(), "firewall made no rule for {addr}");
    fw.del((&id, &netns), Some(&r));
    assert!(container_env::iptables::rules_with("filter", &addr).is_empty(), "firewall's rules outlived DEL");
    // The firewall plugin leaves its chains for the next container: given back here.
    for c in ["CNI-FORWARD", "CNI-ADMIN"] {
        if !had_chains.contains(&format!("ip/filter/{c}")) {
            container_env::iptables::remove_chain("filter", c);
        }
    }

    let (id, netns) = containers[1].clone();
    let ns = netns.trim_start_matches("/run/netns/").to_owned();
    let tuning = json!({ "type": "tuning", "sysctl": { "net.ipv4.conf.eth0.arp_notify": "1" } });
    let tune = chain(tuning, "IgnoreUnknown=1;MAC=02:76:00:00:00:21");
    let r = tune.add((&id, &netns)).unwrap_or_else(|e| panic!("switch-cni + tuning: {e}"));
    assert_eq!(r["interfaces"][1]["mac"], "02:76:00:00:00:21", "{r}");
    assert_eq!(exec(&ns, &["sysctl", "-n", "net.ipv4.conf.eth0.arp_notify"]).stdout.trim(), "1");
    assert!(ping(&ns, gateway, 1), "a MAC both plugins were given");
    tune.del((&id, &netns), Some(&r));

    // A MAC tuning alone sets: the container's frames are another station's to the switch.
    let (id, netns) = containers[2].clone();
    let ns = netns.trim_start_matches("/run/netns/").to_owned();
    let own_mac = chain(json!({ "type": "tuning", "mac": "02:76:00:00:00:22" }), "");
    let r = own_mac.add((&id, &netns)).unwrap_or_else(|e| panic!("switch-cni + tuning mac: {e}"));
    assert!(!ping(&ns, gateway, 1), "port security let a MAC it was not given through");
    let spoofed = counter(&port_stats(&net.switch, &id), "spoofed_mac").unwrap_or(0);
    assert!(spoofed > 0, "the dropped frames are not counted: {}", port_stats(&net.switch, &id));
    own_mac.del((&id, &netns), Some(&r));
    let mut open = own_mac;
    open.plugins[0]["portSecurity"] = json!(false);
    let r = open.add((&id, &netns)).unwrap_or_else(|e| panic!("switch-cni without port security + tuning mac: {e}"));
    assert!(ping(&ns, gateway, 1), "without port security, tuning's MAC works");
    open.del((&id, &netns), Some(&r));

    let (id, netns) = containers[3].clone();
    let limits = json!({ "type": "bandwidth", "ingressRate": 1_000_000, "ingressBurst": 100_000,
                         "egressRate": 1_000_000, "egressBurst": 100_000 });
    let err = chain(limits, "").add((&id, &netns)).expect_err("bandwidth cannot shape a switch port");
    assert!(err["msg"].as_str().unwrap_or_default().contains("qdisc"), "{err}");
    assert!(net.adopted_owners().is_empty(), "the refused chain left a port: {:?}", net.adopted_owners());
    assert!(net.leases().is_empty(), "the refused chain left a lease: {:?}", net.leases());
}

/// host-local with an IPv4 and an IPv6 range (`ranges: [[v4], [v6]]`, what podman and
/// Kubernetes dual-stack configurations hand a plugin): the result has both addresses with
/// their gateways and both default routes, the container has both with IPv6 on, reaches
/// another container and the gateway over IPv6, is bound to its IPv6 address (port
/// security), a repeated ADD answers the same, and DEL gives back both leases.
#[test]
fn dual_stack_ipam_gives_both_families() {
    let mut net = Net::new(165);
    let dir = net.data_dir.clone();
    let (a_id, a_ns) = net.container("a");
    let (b_id, b_ns) = net.container("b");
    let conf = |v: &str| {
        let mut c = net.conf(v);
        c["ipam"]["ranges"] = json!([
            [{"subnet": "10.165.0.0/24", "gateway": "10.165.0.1"}],
            [{"subnet": "fd00:165::/64", "gateway": "fd00:165::1"}],
        ]);
        c["ipam"]["dataDir"] = json!(dir);
        c
    };
    let o = net.run("ADD", &a_id, &a_ns, &conf("1.0.0"));
    assert!(o.ok, "ADD: {}", o.json);
    let r = o.json;
    let ips: Vec<&str> = r["ips"].as_array().unwrap().iter().map(|i| i["address"].as_str().unwrap()).collect();
    assert_eq!(ips.len(), 2, "{r}");
    let a6 = ips.iter().find(|a| a.contains(':')).expect("an IPv6 address").split('/').next().unwrap().to_owned();
    assert!(a6.starts_with("fd00:165::"), "{r}");
    assert!(r["ips"].as_array().unwrap().iter().any(|i| i["gateway"] == "fd00:165::1"), "{r}");
    assert!(r["routes"].as_array().unwrap().contains(&json!({"dst": "::/0", "gw": "fd00:165::1"})), "{r}");
    let o = net.run("ADD", &b_id, &b_ns, &conf("0.4.0"));
    assert!(o.ok, "ADD: {}", o.json);
    assert!(o.json["ips"].as_array().unwrap().iter().any(|i| i["version"] == "6"), "{}", o.json);
    let (a, b) = (a_ns.trim_start_matches("/run/netns/"), b_ns.trim_start_matches("/run/netns/"));
    let ping6 = |from: &str, to: &str| exec_ip_cmd(from, &["ping", "-6", "-c", "2", "-i", "0.01", "-W", "1", "-q", to]);
    assert!(ping6(b, &a6), "b cannot reach a over IPv6");
    assert!(ping6(a, "fd00:165::1"), "a cannot reach the IPv6 gateway");
    let route = exec_ip(a, &["-6", "route", "show", "default"]);
    assert!(route.contains("via fd00:165::1"), "{route}");
    // The port is bound to its IPv6 address too: another source from a is dropped.
    let port = json(&["ports", "--switch", &net.switch]);
    assert!(port.as_array().unwrap().iter().any(|p| p["ip6"] == format!("{a6}/64")), "{port}");
    // A repeated ADD answers both families again.
    let again = net.run("ADD", &a_id, &a_ns, &conf("1.0.0"));
    assert!(again.ok && again.json["ips"] == r["ips"], "{} vs {r}", again.json);
    for (id, ns) in [(&a_id, &a_ns), (&b_id, &b_ns)] {
        assert!(net.run("DEL", id, ns, &conf("1.0.0")).ok);
    }
    let leases: Vec<String> = std::fs::read_dir(dir.join(format!("{}-net", net.sb.prefix)))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(!leases.iter().any(|l| l.starts_with("10.") || l.starts_with("fd00")), "leases kept: {leases:?}");
    ok(&["down", "--switch", &net.switch]);
}

/// Runs `CMD ARGS` in namespace `ns` (a plain one, as runtimes make them); whether it worked.
fn exec_ip_cmd(ns: &str, cmd: &[&str]) -> bool {
    let mut a = vec!["netns", "exec", ns];
    a.extend_from_slice(cmd);
    Command::new("ip").args(&a).output().is_ok_and(|o| o.status.success())
}
