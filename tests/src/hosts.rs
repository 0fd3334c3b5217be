//! Several hosts on one machine: each host is a network namespace with its own switch
//! instances (`switch --host-netns HOST`, which `nsenter --net` would give too), and the hosts'
//! underlay interfaces (`ul0`, 10.77.0.N/24) meet on a Linux bridge in a namespace of the
//! test's own, so nothing of it is on the machine's own interfaces. The VXLAN tests join their
//! switches over it; the Services tests use a host as a Kubernetes node.
//!
//! ```text
//!   host h1                      underlay ns             host h2 ...
//!   [a][b]── switch ov ─ vov-… ─ ul0 ══ p1 ─ br0 ─ p2 ══ ul0 ─ vov-… ─ switch ov ─[a][b]
//!            (VNI 42)   (vxlan)   10.77.0.1                10.77.0.2
//! ```
use std::process::Command;

use serde_json::Value;

use crate::{Sandbox, host, json, netns_list, note_programs, ok, report_leftovers, switch};

/// Hosts on one underlay bridge, with the switches made on them; all of it removed on drop
/// (and anything left reported).
pub struct Hosts {
    /// Names of everything the hosts are made of.
    pub sb: Sandbox,
    /// The underlay's own namespace (with the bridge `br0`).
    pub underlay: String,
    /// The hosts' namespaces, host `i` at index `i - 1`.
    pub hosts: Vec<String>,
    /// (host, switch) made with `up` or `switch`: taken down on drop (a test that takes one
    /// down itself removes it here).
    pub switches: Vec<(usize, String)>,
}

impl Hosts {
    /// `n` hosts, host `i` (1-based) at 10.77.0.i on the underlay.
    pub fn new(n: usize) -> Self {
        let sb = Sandbox::new();
        let underlay = sb.name("ul");
        let hosts: Vec<String> = (1..=n).map(|i| sb.name(&format!("h{i}"))).collect();
        let me = Self { sb, underlay, hosts, switches: vec![] };
        host("ip", &["netns", "add", &me.underlay]);
        host("ip", &["-n", &me.underlay, "link", "add", "br0", "type", "bridge"]);
        host("ip", &["-n", &me.underlay, "link", "set", "br0", "up"]);
        for (i, h) in me.hosts.iter().enumerate() {
            let i = i + 1;
            host("ip", &["netns", "add", h]);
            let port = format!("p{i}");
            host(
                "ip",
                &["link", "add", "ul0", "netns", h, "type", "veth", "peer", "name", &port, "netns", &me.underlay],
            );
            host("ip", &["-n", &me.underlay, "link", "set", &port, "master", "br0", "up"]);
            host("ip", &["-n", h, "addr", "add", &format!("10.77.0.{i}/24"), "dev", "ul0"]);
            host("ip", &["-n", h, "link", "set", "ul0", "up"]);
            host("ip", &["-n", h, "link", "set", "lo", "up"]);
        }
        me
    }

    /// `switch --host-netns HOST ARGS` on host `i`, asserting success.
    pub fn on(&self, i: usize, args: &[&str]) -> String {
        let mut a = vec!["--host-netns", &self.hosts[i - 1]];
        a.extend_from_slice(args);
        ok(&a)
    }

    /// The same, with `--json`, parsed.
    pub fn json_on(&self, i: usize, args: &[&str]) -> Value {
        let mut a = vec!["--host-netns", &self.hosts[i - 1]];
        a.extend_from_slice(args);
        json(&a)
    }

    /// Switch `sw` on host `i` without a tunnel, with `extra` arguments of `up`.
    pub fn up(&mut self, i: usize, sw: &str, extra: &[&str]) {
        self.switches.push((i, sw.to_owned()));
        let mut a = vec!["up", "--switch", sw];
        a.extend_from_slice(extra);
        self.on(i, &a);
        note_programs(&self.sb.prefix);
    }

    /// Switch `sw` with VNI `vni` on host `i`, with `extra` arguments of `up`.
    pub fn switch(&mut self, i: usize, sw: &str, vni: u32, extra: &[&str]) {
        self.switches.push((i, sw.to_owned()));
        let vni = vni.to_string();
        let mut a = vec!["up", "--switch", sw, "--vxlan", &vni, "--underlay", "ul0"];
        a.extend_from_slice(extra);
        self.on(i, &a);
        note_programs(&self.sb.prefix);
    }

    /// Makes every host of `hosts` a peer of every other one on switch `sw`.
    pub fn mesh(&self, sw: &str, hosts: &[usize]) {
        for &i in hosts {
            for &j in hosts.iter().filter(|&&j| j != i) {
                self.on(i, &["peer", "add", &format!("10.77.0.{j}"), "--switch", sw]);
            }
        }
    }

    /// Namespace `suffix` on switch `sw` of host `i`, at `ip`/24; returns its name.
    pub fn ns(&self, i: usize, sw: &str, suffix: &str, ip: &str) -> String {
        let ns = self.sb.name(suffix);
        self.on(i, &["ns", "add", &ns, "--ip", &format!("{ip}/24"), "--switch", sw]);
        ns
    }

    /// The MAC of namespace `ns` of host `i`.
    pub fn mac(&self, i: usize, ns: &str) -> String {
        let v = self.json_on(i, &["ns", "list"]);
        let row = v.as_array().unwrap().iter().find(|r| r["namespace"] == ns).cloned();
        row.unwrap_or_else(|| panic!("no {ns} on host {i}: {v}"))["mac"].as_str().unwrap().to_owned()
    }

    /// `switch fdb` of `sw` on host `i` as (mac, peer) pairs.
    pub fn fdb(&self, i: usize, sw: &str) -> Vec<(String, Option<String>)> {
        let v = self.json_on(i, &["fdb", "--switch", sw]);
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| (r["mac"].as_str().unwrap().to_owned(), r["peer"].as_str().map(str::to_owned)))
            .collect()
    }

    /// The `switch stats` row of the tunnel port of `sw` on host `i`.
    pub fn tunnel_stats(&self, i: usize, sw: &str, vni: u32) -> Value {
        let v = self.json_on(i, &["stats", "--switch", sw]);
        let rows = v["ports"].as_array().unwrap().clone();
        rows.into_iter().find(|r| r["namespace"] == format!("vxlan{vni}")).unwrap_or_else(|| panic!("{v}"))
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for (i, sw) in self.switches.drain(..) {
            let _ = switch(&["--host-netns", &self.hosts[i - 1], "down", "--switch", &sw]);
        }
        let mut left = vec![];
        for h in &self.hosts {
            let pins = format!("/sys/fs/bpf/switch/@{h}");
            if std::path::Path::new(&pins).exists() {
                left.push(pins.clone());
                let _ = std::fs::remove_dir_all(&pins);
            }
            let dir = format!("/run/switch/@{h}");
            let state = std::fs::read_to_string(format!("{dir}/state.json")).unwrap_or_default();
            let v: Value = serde_json::from_str(&state).unwrap_or(Value::Null);
            if v["ports"].as_array().is_some_and(|p| !p.is_empty())
                || v["switches"].as_object().is_some_and(|s| !s.is_empty())
            {
                left.push(format!("{dir}/state.json: {state}"));
            }
            // A host's state directory goes with the host: only its lock and an empty state.
            let _ = std::fs::remove_dir_all(&dir);
            let _ = Command::new("ip").args(["netns", "del", h]).status();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.underlay]).status();
        // The namespaces of the switches went with `down`; the sandbox removes any left.
        left.extend(netns_list().into_iter().filter(|n| n.starts_with(&self.sb.prefix)).map(|n| format!("netns {n}")));
        report_leftovers("the hosts", &left);
    }
}
