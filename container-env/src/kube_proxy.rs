//! The rules kube-proxy writes for Services, in both of its netfilter modes, for tests and the
//! benchmark: the same chains, jumps and matches as kube-proxy 1.29+ (`KUBE-SERVICES`,
//! `KUBE-SVC-*` choosing an endpoint with `statistic`, `KUBE-SEP-*` with the DNAT,
//! `KUBE-MARK-MASQ` and `KUBE-POSTROUTING`, `KUBE-NODEPORTS`, `KUBE-FORWARD` in filter; in
//! nftables mode the `kube-proxy` table with its verdict maps and `numgen`), not one hand-made
//! DNAT. Only what a ClusterIP and a NodePort Service of TCP or UDP need; no session
//! affinity, load-balancer IPs, topology or firewall chains.
//!
//! Rules go into the network namespace the caller names (a test's "node"), or into the
//! caller's own when it names none; [`Installed`] takes them out again when dropped.
use std::{fmt::Write as _, net::Ipv4Addr, process::Command};

use crate::{Error, Result, command::output};

/// Which backend writes the rules: kube-proxy's iptables mode through `iptables-restore`
/// (Debian's `iptables` is the nf_tables-backed one), or its nftables mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `--proxy-mode iptables`.
    Iptables,
    /// `--proxy-mode nftables`.
    Nftables,
}

/// One port of a Service.
#[derive(Clone, Debug)]
pub struct Service {
    /// `namespace/name:port-name`, as kube-proxy names it in comments and hashes.
    pub name: String,
    /// `tcp` or `udp`.
    pub proto: &'static str,
    /// The ClusterIP and port.
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    /// The NodePort, if the Service has one.
    pub node_port: Option<u16>,
    /// The endpoints (pod address and target port).
    pub endpoints: Vec<(Ipv4Addr, u16)>,
}

/// The Services of a node and the node's settings that shape the rules.
#[derive(Clone, Debug)]
pub struct Rules {
    /// `--cluster-cidr`: traffic to a ClusterIP from outside it is masqueraded.
    pub cluster_cidr: String,
    pub services: Vec<Service>,
}

/// kube-proxy's chain-name hash: 16 characters of base32 over the Service (port) name and
/// protocol (it uses SHA-256; any stable hash gives the same shape).
fn hash(parts: &[&str]) -> String {
    // FNV-1a, 64 bits, twice (different seeds) for 80 bits = 16 base32 characters.
    let fnv = |seed: u64| {
        parts
            .iter()
            .flat_map(|p| p.bytes().chain([0]))
            .fold(seed, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
    };
    let (a, b) = (fnv(0xcbf2_9ce4_8422_2325), fnv(0x8422_2325_cbf2_9ce4));
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    (0..16)
        .map(|i| alphabet[((if i < 12 { a >> (5 * i) } else { b >> (5 * (i - 12)) }) & 31) as usize] as char)
        .collect()
}

impl Service {
    fn svc_chain(&self) -> String {
        format!("KUBE-SVC-{}", hash(&[&self.name, self.proto]))
    }

    fn ext_chain(&self) -> String {
        format!("KUBE-EXT-{}", hash(&[&self.name, self.proto]))
    }

    fn sep_chain(&self, (ip, port): (Ipv4Addr, u16)) -> String {
        format!("KUBE-SEP-{}", hash(&[&self.name, self.proto, &format!("{ip}:{port}")]))
    }

    /// The nftables-mode chain suffix: kube-proxy's is `HASH-NAMESPACE/NAME/PROTO/PORTNAME`.
    fn nft_id(&self) -> String {
        let name = self.name.replace(['/', ':'], "/");
        format!("{}-{name}/{}", &hash(&[&self.name, self.proto])[..8], self.proto)
    }
}

/// Mark kube-proxy gives packets to masquerade.
const MASQ_MARK: &str = "0x4000";

impl Rules {
    /// The input of `iptables-restore --noflush`: the nat and filter tables' KUBE chains and
    /// the jumps to them from the built-in chains.
    pub fn iptables_restore(&self) -> String {
        let mut nat = String::from("*nat\n");
        for c in ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"] {
            let _ = writeln!(nat, ":{c} - [0:0]");
        }
        let mut body = String::new();
        for s in &self.services {
            let _ = writeln!(nat, ":{} - [0:0]", s.svc_chain());
            if s.node_port.is_some() {
                let _ = writeln!(nat, ":{} - [0:0]", s.ext_chain());
            }
            for &e in &s.endpoints {
                let _ = writeln!(nat, ":{} - [0:0]", s.sep_chain(e));
            }
            self.iptables_service(&mut body, s);
        }
        nat.push_str(concat!(
            "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n",
            "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n",
            "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n",
        ));
        let _ = writeln!(nat, "-A KUBE-MARK-MASQ -j MARK --set-xmark {MASQ_MARK}/{MASQ_MARK}");
        let _ = writeln!(nat, "-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN");
        let _ = writeln!(nat, "-A KUBE-POSTROUTING -j MARK --set-xmark {MASQ_MARK}/0x0");
        nat.push_str(
            "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n",
        );
        nat.push_str(&body);
        nat.push_str(
            "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n",
        );
        nat.push_str("COMMIT\n");
        nat.push_str(concat!(
            "*filter\n:KUBE-FORWARD - [0:0]\n",
            "-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n",
            "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n",
            "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark 0x4000/0x4000 -j ACCEPT\n",
            "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n",
            "COMMIT\n",
        ));
        nat
    }

    /// One Service's rules: its ClusterIP (and NodePort) jumps, the endpoint choice, the DNATs.
    fn iptables_service(&self, out: &mut String, s: &Service) {
        let (svc, p) = (s.svc_chain(), s.proto);
        let comment = format!("-m comment --comment \"{} cluster IP\"", s.name);
        let _ = writeln!(
            out,
            "-A KUBE-SERVICES -d {}/32 -p {p} {comment} -m {p} --dport {} -j {svc}",
            s.cluster_ip, s.port
        );
        let _ = writeln!(
            out,
            "-A {svc} ! -s {} -d {}/32 -p {p} {comment} -m {p} --dport {} -j KUBE-MARK-MASQ",
            self.cluster_cidr, s.cluster_ip, s.port
        );
        if let Some(np) = s.node_port {
            let ext = s.ext_chain();
            let _ = writeln!(
                out,
                "-A KUBE-NODEPORTS -p {p} -m comment --comment \"{}\" -m {p} --dport {np} -j {ext}",
                s.name
            );
            let _ = writeln!(
                out,
                "-A {ext} -m comment --comment \"masquerade traffic for {} external destinations\" -j KUBE-MARK-MASQ",
                s.name
            );
            let _ = writeln!(out, "-A {ext} -j {svc}");
        }
        let n = s.endpoints.len();
        for (i, &(ip, port)) in s.endpoints.iter().enumerate() {
            let sep = s.sep_chain((ip, port));
            let comment = format!("-m comment --comment \"{} -> {ip}:{port}\"", s.name);
            // As kube-proxy: endpoint i of n is taken with probability 1/(n-i), the last always.
            let stat = if i + 1 < n {
                format!(" -m statistic --mode random --probability {:.10}", 1.0 / (n - i) as f64)
            } else {
                String::new()
            };
            let _ = writeln!(out, "-A {svc} {comment}{stat} -j {sep}");
            let _ = writeln!(out, "-A {sep} -s {ip}/32 -m comment --comment \"{}\" -j KUBE-MARK-MASQ", s.name);
            let _ = writeln!(
                out,
                "-A {sep} -p {p} -m comment --comment \"{}\" -m {p} -j DNAT --to-destination {ip}:{port}",
                s.name
            );
        }
    }

    /// kube-proxy's nftables-mode ruleset: table `ip kube-proxy`, a verdict map from
    /// (ClusterIP, protocol, port) to each Service's chain, `numgen random` over endpoints.
    pub fn nft(&self) -> String {
        let mut t = String::from("table ip kube-proxy {\n");
        t.push_str("  comment \"rules for kube-proxy\"\n");
        t.push_str("  chain mark-for-masquerade { meta mark set meta mark | 0x4000; }\n");
        t.push_str(concat!(
            "  chain masquerading {\n",
            "    meta mark & 0x4000 == 0 return\n",
            "    meta mark set meta mark ^ 0x4000\n",
            "    masquerade fully-random\n  }\n",
        ));
        let mut services = String::new();
        let mut node_ports = String::new();
        let mut chains = String::new();
        for s in &self.services {
            let id = s.nft_id();
            let _ = writeln!(services, "      {} . {} . {} : goto service-{id},", s.cluster_ip, s.proto, s.port);
            if let Some(np) = s.node_port {
                let _ = writeln!(node_ports, "      {} . {np} : goto external-{id},", s.proto);
                let _ = writeln!(
                    chains,
                    "  chain external-{id} {{\n    jump mark-for-masquerade\n    goto service-{id}\n  }}"
                );
            }
            let eps: Vec<String> =
                s.endpoints.iter().map(|(ip, port)| format!("endpoint-{}-{ip}/{port}", &id[..8])).collect();
            let vmap: Vec<String> = eps.iter().enumerate().map(|(i, e)| format!("{i} : goto {e}")).collect();
            let _ = writeln!(
                chains,
                "  chain service-{id} {{\n    ip daddr {} {} dport {} ip saddr != {} jump mark-for-masquerade\n    numgen random mod {} vmap {{ {} }}\n  }}",
                s.cluster_ip,
                s.proto,
                s.port,
                self.cluster_cidr,
                eps.len(),
                vmap.join(", ")
            );
            for (e, (ip, port)) in eps.iter().zip(&s.endpoints) {
                let _ = writeln!(
                    chains,
                    "  chain {e} {{\n    ip saddr {ip} jump mark-for-masquerade\n    meta l4proto {} dnat to {ip}:{port}\n  }}",
                    s.proto
                );
            }
        }
        let _ = write!(
            t,
            "  map service-ips {{\n    type ipv4_addr . inet_proto . inet_service : verdict\n    elements = {{\n{services}    }}\n  }}\n"
        );
        if !node_ports.is_empty() {
            let _ = write!(
                t,
                "  map service-nodeports {{\n    type inet_proto . inet_service : verdict\n    elements = {{\n{node_ports}    }}\n  }}\n"
            );
        }
        t.push_str(&chains);
        t.push_str("  chain services {\n    ip daddr . meta l4proto . th dport vmap @service-ips\n");
        if !node_ports.is_empty() {
            t.push_str("    fib daddr type local meta l4proto . th dport vmap @service-nodeports\n");
        }
        t.push_str("  }\n");
        t.push_str(concat!(
            "  chain nat-prerouting { type nat hook prerouting priority dstnat; jump services; }\n",
            "  chain nat-output { type nat hook output priority -100; jump services; }\n",
            "  chain nat-postrouting { type nat hook postrouting priority srcnat; jump masquerading; }\n",
            "  chain filter-forward { type filter hook forward priority -110; ct state invalid drop; }\n",
            "}\n",
        ));
        t
    }

    /// Writes the rules in `mode` into network namespace `netns` (the caller's own if `None`).
    /// A failure writes nothing: both tools apply their input as one transaction.
    pub fn install(&self, mode: Mode, netns: Option<&str>) -> Result<Installed> {
        let (tool, args, input): (&str, &[&str], String) = match mode {
            Mode::Iptables => ("iptables-restore", &["-w", "--noflush"], self.iptables_restore()),
            Mode::Nftables => ("nft", &["-f", "-"], self.nft()),
        };
        piped(netns, tool, args, &input)?;
        Ok(Installed { mode, netns: netns.map(str::to_owned), chains: self.chains() })
    }

    /// Every iptables chain the rules make, per table.
    fn chains(&self) -> Vec<(&'static str, String)> {
        let mut v: Vec<(&'static str, String)> =
            ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"]
                .into_iter()
                .map(|c| ("nat", c.to_owned()))
                .collect();
        for s in &self.services {
            v.push(("nat", s.svc_chain()));
            if s.node_port.is_some() {
                v.push(("nat", s.ext_chain()));
            }
            v.extend(s.endpoints.iter().map(|&e| ("nat", s.sep_chain(e))));
        }
        v.push(("filter", "KUBE-FORWARD".to_owned()));
        v
    }
}

/// Runs `tool ARGS` in `netns` with `input` on its stdin.
fn piped(netns: Option<&str>, tool: &str, args: &[&str], input: &str) -> Result<()> {
    use std::io::Write as _;
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, tool]);
            c
        }
        None => Command::new(tool),
    };
    cmd.args(args).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
    cmd.stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| Error::Spawn { program: tool.to_owned(), hint: "", source })?;
    let wrote = child.stdin.take().map(|mut s| s.write_all(input.as_bytes()));
    let out = child.wait_with_output().map_err(|source| Error::Spawn { program: tool.to_owned(), hint: "", source })?;
    if !out.status.success() || wrote.is_some_and(|w| w.is_err()) {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Err(Error::Failed { command: format!("{tool} {}", args.join(" ")), stderr });
    }
    Ok(())
}

/// Rules [`Rules::install`] wrote; removed on drop (the jumps from the built-in chains, then
/// the chains; or the whole `kube-proxy` table).
#[derive(Debug)]
pub struct Installed {
    mode: Mode,
    netns: Option<String>,
    chains: Vec<(&'static str, String)>,
}

impl Installed {
    /// `tool ARGS` in the rules' namespace, its output.
    fn run(&self, tool: &str, args: &[&str]) -> Result<String> {
        match &self.netns {
            Some(ns) => output(Command::new("ip").args(["netns", "exec", ns, tool]).args(args)),
            None => output(Command::new(tool).args(args)),
        }
    }

    /// Takes the rules out; what could not be removed is in the error.
    pub fn remove(&mut self) -> Result<()> {
        let chains = std::mem::take(&mut self.chains);
        if self.mode == Mode::Nftables {
            return self.run("nft", &["delete", "table", "ip", "kube-proxy"]).map(drop);
        }
        let mut failed = vec![];
        for (table, builtin, chain) in [
            ("nat", "PREROUTING", "KUBE-SERVICES"),
            ("nat", "OUTPUT", "KUBE-SERVICES"),
            ("nat", "POSTROUTING", "KUBE-POSTROUTING"),
            ("filter", "FORWARD", "KUBE-FORWARD"),
        ] {
            let comment = match chain {
                "KUBE-SERVICES" => "kubernetes service portals",
                "KUBE-POSTROUTING" => "kubernetes postrouting rules",
                _ => "kubernetes forwarding rules",
            };
            let args = ["-w", "-t", table, "-D", builtin, "-m", "comment", "--comment", comment, "-j", chain];
            if let Err(e) = self.run("iptables", &args) {
                failed.push(e.to_string());
            }
        }
        // Flushed first, all of them, since they jump to each other; then deleted.
        for (table, chain) in &chains {
            let _ = self.run("iptables", &["-w", "-t", table, "-F", chain]);
        }
        for (table, chain) in &chains {
            if let Err(e) = self.run("iptables", &["-w", "-t", table, "-X", chain]) {
                failed.push(e.to_string());
            }
        }
        if failed.is_empty() { Ok(()) } else { Err(Error::Host(failed.join("; "))) }
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if !self.chains.is_empty()
            && let Err(e) = self.remove()
        {
            tracing::warn!("removing kube-proxy rules: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            cluster_cidr: "10.244.0.0/16".into(),
            services: vec![Service {
                name: "default/web:http".into(),
                proto: "tcp",
                cluster_ip: Ipv4Addr::new(10, 96, 0, 10),
                port: 80,
                node_port: Some(30080),
                endpoints: vec![(Ipv4Addr::new(10, 244, 1, 3), 8080), (Ipv4Addr::new(10, 244, 1, 4), 8080)],
            }],
        }
    }

    #[test]
    fn iptables_rules_have_kube_proxy_shape() {
        let r = rules().iptables_restore();
        let svc = rules().services[0].svc_chain();
        assert!(svc.starts_with("KUBE-SVC-") && svc.len() == 25, "{svc}");
        assert!(r.contains(&format!("-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment \"default/web:http cluster IP\" -m tcp --dport 80 -j {svc}")), "{r}");
        assert!(r.contains("-m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-"), "{r}");
        assert!(r.contains("-j DNAT --to-destination 10.244.1.4:8080"), "{r}");
        assert!(r.contains("--dport 30080 -j KUBE-EXT-"), "{r}");
        // The NodePort jump is the last rule of KUBE-SERVICES.
        let last = r.lines().rfind(|l| l.starts_with("-A KUBE-SERVICES")).unwrap();
        assert!(last.ends_with("-j KUBE-NODEPORTS"), "{last}");
        assert_eq!(r.matches("COMMIT").count(), 2);
    }

    #[test]
    fn chain_names_are_stable_and_distinct() {
        let s = &rules().services[0];
        assert_eq!(s.svc_chain(), rules().services[0].svc_chain());
        assert_ne!(s.sep_chain(s.endpoints[0]), s.sep_chain(s.endpoints[1]));
        assert_ne!(hash(&["a", "tcp"]), hash(&["a", "udp"]));
    }

    #[test]
    fn nft_rules_have_kube_proxy_shape() {
        let n = rules().nft();
        assert!(n.starts_with("table ip kube-proxy {"));
        assert!(n.contains("10.96.0.10 . tcp . 80 : goto service-"), "{n}");
        assert!(n.contains("numgen random mod 2 vmap { 0 : goto endpoint-"), "{n}");
        assert!(n.contains("meta l4proto tcp dnat to 10.244.1.3:8080"), "{n}");
        assert!(n.contains("fib daddr type local meta l4proto . th dport vmap @service-nodeports"), "{n}");
    }
}
