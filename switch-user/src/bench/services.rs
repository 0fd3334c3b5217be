//! Kubernetes Services with pods on one segment (issue 24): what the rules kube-proxy writes
//! cost pod-to-pod traffic on the tc switch, and a pod reaching a ClusterIP whose endpoint is
//! another pod of the segment, on the switch against a Linux bridge with `br_netfilter`.
//!
//! ```text
//!   node sbench0: tc switch, gateway 10.180.0.254, no rules             tc-no-rules
//!   node sbench1: tc switch, gateway 10.181.0.254, 100 Services' rules  tc-services
//!   node sbench2: bridge br0 with 10.182.0.254, nf_call_iptables 1,
//!                 the same 100 Services' rules                         bridge-services
//!   each node: client pod sbenchNc (.1) and server pod sbenchNs (.2) on its segment
//! ```
//! Each node is a network namespace of its own playing the host (the switch runs in it with
//! `--host-netns`), so the rules (kube-proxy's iptables mode, `container_env::kube_proxy`),
//! `ip_forward` and the bridge's settings live and die with it: the machine's own netfilter
//! tables and sysctls are never touched. Every Service has two endpoints (pods that do not
//! exist) but the two the clients use, last in `KUBE-SERVICES` (a new connection walks all
//! 100): their one endpoint is the server pod, as iperf3's control and data connections must
//! reach the same server.
//!
//! Before measuring, a connection to a ClusterIP on `tc-services` has the host translate a
//! flow into the segment, so its switch pays the per-frame lookup of such flows
//! (`HOST_FLOWS_ON`) that `tc-no-rules` never does; and the bridge is shown unable to reach a
//! ClusterIP without `br_netfilter` (the endpoint's answers are bridged straight to the
//! client, untranslated), which the report says in a row of its own.
use std::{net::SocketAddr, time::Duration};

use container_env::kube_proxy::{Installed, Mode, Rules, Service};
use futures::FutureExt as _;
use indicatif::ProgressBar;

use super::{Comparison, Options, Series, forward, interleaved, overlay::exe, report::MetricReport, run_quiet, tools};
use crate::{
    error::{Error, Result},
    sys::netns,
};

/// The contenders, in the order measured in each round.
pub const CONTENDERS: [&str; 3] = [NO_RULES, WITH_RULES, BRIDGE];
/// The tc switch on a node without rules: the baseline of what the rules cost.
pub const NO_RULES: &str = "tc-no-rules";
/// The tc switch on a node with the rules, a translated flow seen.
pub const WITH_RULES: &str = "tc-services";
/// A Linux bridge with `br_netfilter` on for it, on a node with the rules.
pub const BRIDGE: &str = "bridge-services";
/// The same bridge without `br_netfilter`: a row saying why it is not measured.
pub const BRIDGE_PLAIN: &str = "bridge-no-br-netfilter";

/// Services on every node with rules: kube-proxy's share of a small cluster.
const SERVICES: u8 = 100;
/// The Service port the clients connect to (the endpoints listen on others, as usual).
const SERVICE_PORT: u16 = 80;
/// The ClusterIP of the Service in front of the server pod's iperf3 (port 5201).
const IPERF_SERVICE: &str = "10.190.0.99";
/// The ClusterIP of the Service in front of the server pod's connection-rate server.
const CONN_SERVICE: &str = "10.190.0.100";
/// The switch's name on its node.
const SWITCH: &str = "sb";

/// One node: its namespace, the two pods and how they are connected.
#[derive(Clone, Debug)]
pub struct Node {
    /// Contender name in reports.
    pub name: &'static str,
    /// The node's network namespace (the "host").
    host: String,
    /// The client pod.
    pub client: String,
    /// The server pod.
    pub server: String,
    index: u8,
}

/// Every node, in `CONTENDERS` order.
pub fn nodes() -> Vec<Node> {
    (0u8..)
        .zip(CONTENDERS)
        .map(|(i, name)| Node {
            name,
            host: format!("sbench{i}"),
            client: format!("sbench{i}c"),
            server: format!("sbench{i}s"),
            index: i,
        })
        .collect()
}

/// The Services comparison.
pub struct Services;

#[async_trait::async_trait]
impl Comparison for Services {
    fn contenders(&self) -> Vec<&'static str> {
        CONTENDERS.to_vec()
    }

    fn alias(&self) -> Option<&'static str> {
        Some("services")
    }

    fn steps(&self, opts: &Options) -> usize {
        // Built; pod to pod on all three, pod to ClusterIP on the two with rules.
        CONTENDERS.len() + opts.rounds * (CONTENDERS.len() * 2 + 2 * 2)
    }

    async fn run(&self, opts: &Options, bar: &ProgressBar) -> Result<Vec<MetricReport>> {
        measure(opts, bar).await
    }

    async fn remove(&self) {
        for n in nodes() {
            n.remove().await;
        }
    }
}

impl Node {
    /// Address `last` of the node's segment, 10.18N.0.0/24.
    fn ip(&self, last: u8) -> String {
        format!("10.{}.0.{last}", 180 + self.index)
    }

    fn server_ip(&self) -> String {
        self.ip(2)
    }

    fn bridge(&self) -> bool {
        self.name == BRIDGE
    }

    /// The node's Services, or none (`tc-no-rules`).
    fn rules(&self) -> Option<Rules> {
        if self.name == NO_RULES {
            return None;
        }
        let net = 180 + self.index;
        let mut services: Vec<Service> = (1..SERVICES - 1)
            .map(|i| Service {
                name: format!("default/svc{i}:http"),
                proto: "tcp",
                cluster_ip: [10, 190, 0, i].into(),
                port: SERVICE_PORT,
                node_port: None,
                endpoints: vec![([10, net, 1, i].into(), 8080), ([10, net, 2, i].into(), 8080)],
            })
            .collect();
        let server = [10, net, 0, 2].into();
        for (name, ip, port) in [("iperf", IPERF_SERVICE, 5201), ("conn", CONN_SERVICE, forward::CONN_PORT)] {
            services.push(Service {
                name: format!("default/{name}:tcp"),
                proto: "tcp",
                cluster_ip: ip.parse().expect("IPv4 address"),
                port: SERVICE_PORT,
                node_port: None,
                endpoints: vec![(server, port)],
            });
        }
        Some(Rules { cluster_cidr: format!("10.{net}.0.0/16"), services })
    }

    /// Builds the node and its pods (after removing leftovers) and installs its rules.
    async fn build(&self) -> Result<Option<Installed>> {
        self.remove().await;
        netns::create(&self.host).await?;
        run_quiet("ip", &["-n", &self.host, "link", "set", "lo", "up"]).await?;
        // The node routes its pods' packets to ClusterIPs back into the segment. Its own
        // namespace's setting: nothing of the machine's to give back.
        self.sysctl("net.ipv4.ip_forward=1").await?;
        if self.bridge() {
            self.build_bridge().await?;
        } else {
            self.build_switch().await?;
        }
        let Some(rules) = self.rules() else { return Ok(None) };
        let host = self.host.clone();
        let installed = crate::sys::blocking(move || {
            rules.install(Mode::Iptables, Some(&host)).map_err(|e| Error::Command(format!("kube-proxy's rules: {e}")))
        })
        .await?;
        Ok(Some(installed))
    }

    async fn sysctl(&self, setting: &str) -> Result<()> {
        run_quiet("ip", &["netns", "exec", &self.host, "sysctl", "-qw", setting]).await
    }

    /// A tc switch with the gateway and the two pods, made by `switch --host-netns NODE`.
    async fn build_switch(&self) -> Result<()> {
        let exe = exe()?;
        let gateway = format!("{}/24", self.ip(254));
        run_quiet(&exe, &["--host-netns", &self.host, "up", "--switch", SWITCH, "--gateway", &gateway]).await?;
        for (pod, last) in [(&self.client, 1), (&self.server, 2)] {
            let ip = format!("{}/24", self.ip(last));
            run_quiet(&exe, &["--host-netns", &self.host, "ns", "add", pod, "--ip", &ip, "--switch", SWITCH]).await?;
        }
        Ok(())
    }

    /// A Linux bridge with the gateway address and the two pods, `br_netfilter` off for now:
    /// the node's own `bridge-nf-call-iptables` (on by default in a new namespace) off, so
    /// that the bridge's flag alone decides.
    async fn build_bridge(&self) -> Result<()> {
        let ip = |args: &[&str]| {
            let mut a = vec!["-n", self.host.as_str()];
            a.extend_from_slice(args);
            a.into_iter().map(str::to_owned).collect::<Vec<String>>()
        };
        let run = |args: Vec<String>| async move {
            run_quiet("ip", &args.iter().map(String::as_str).collect::<Vec<_>>()).await
        };
        self.sysctl("net.bridge.bridge-nf-call-iptables=0").await?;
        run(ip(&["link", "add", "br0", "type", "bridge", "nf_call_iptables", "0"])).await?;
        run(ip(&["addr", "add", &format!("{}/24", self.ip(254)), "dev", "br0"])).await?;
        run(ip(&["link", "set", "br0", "up"])).await?;
        for (pod, port, last) in [(&self.client, "vc", 1), (&self.server, "vs", 2)] {
            netns::create(pod).await?;
            run(ip(&["link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", pod])).await?;
            run(ip(&["link", "set", port, "master", "br0", "up"])).await?;
            let cidr = format!("{}/24", self.ip(last));
            for args in [
                vec!["-n", pod, "addr", "add", &cidr, "dev", "eth0"],
                vec!["-n", pod, "link", "set", "eth0", "up"],
                vec!["-n", pod, "link", "set", "lo", "up"],
                vec!["-n", pod, "route", "add", "default", "via", &self.ip(254)],
            ] {
                run_quiet("ip", &args).await?;
            }
        }
        Ok(())
    }

    /// Turns `br_netfilter` on for the node's bridge only.
    async fn bridge_netfilter_on(&self) -> Result<()> {
        run_quiet("ip", &["-n", &self.host, "link", "set", "br0", "type", "bridge", "nf_call_iptables", "1"]).await
    }

    /// Removes it; nothing there is fine. The rules, `ip_forward` and the bridge's settings go
    /// with the node's namespace.
    pub async fn remove(&self) {
        if !self.bridge()
            && netns::exists(&self.host)
            && let Ok(exe) = exe()
        {
            let _ = run_quiet(&exe, &["--host-netns", &self.host, "down", "--switch", SWITCH]).await;
        }
        for ns in [&self.client, &self.server, &self.host] {
            let _ = netns::delete(ns);
        }
        // The node's state directory (its lock and an empty state) goes with it.
        let _ = std::fs::remove_dir_all(crate::sys::host::Host::Named(self.host.clone()).state_dir());
    }
}

/// Whether a TCP connection from pod `ns` to `addr` completes within a second.
async fn connects(ns: &str, addr: SocketAddr) -> Result<()> {
    netns::run_in(ns, move |_| async move {
        match tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(Error::Command(format!("connecting to {addr}: {e}"))),
            Err(_) => Err(Error::Command(format!("connecting to {addr}: no answer within 1 s"))),
        }
    })
    .await
}

/// `connects`, tried a few times: a server started a moment ago may not listen yet.
async fn connects_soon(ns: &str, addr: SocketAddr) -> Result<()> {
    let mut last = Ok(());
    for _ in 0..10 {
        last = connects(ns, addr).await;
        if last.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    last
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    format!("{ip}:{port}").parse().expect("IPv4 address and port")
}

/// Checks a built node with its servers running: the client reaches the server pod, and a
/// ClusterIP where there are rules. On the bridge, first without `br_netfilter` (which must
/// fail; what was seen is returned for the report), then with it.
async fn check(n: &Node) -> Result<Option<String>> {
    let fail = |what: &str, e: Error| Error::Command(format!("{}: {what}: {e}", n.name));
    connects_soon(&n.client, addr(&n.server_ip(), forward::CONN_PORT))
        .await
        .map_err(|e| fail("the client pod cannot reach the server pod", e))?;
    if n.name == NO_RULES {
        return Ok(None);
    }
    let service = addr(CONN_SERVICE, SERVICE_PORT);
    let mut plain = None;
    if n.bridge() {
        plain = Some(match connects(&n.client, service).await {
            Err(e) => format!(
                "no ClusterIP without br_netfilter: the endpoint's answers are bridged to the client untranslated ({e})"
            ),
            Ok(()) => return Err(Error::Command(format!("{}: a ClusterIP answered without br_netfilter", n.name))),
        });
        n.bridge_netfilter_on().await?;
    }
    // On tc-services, the first flow the host translates into the segment: from here on its
    // switch looks up every switched frame among such flows.
    connects_soon(&n.client, service).await.map_err(|e| fail("the client pod cannot reach a ClusterIP", e))?;
    Ok(plain)
}

/// Builds every node, starts the servers, checks the paths and measures.
async fn measure_nodes(
    opts: &Options,
    bar: &ProgressBar,
    nodes: &[Node],
    rules: &mut Vec<Installed>,
) -> Result<(Vec<Series>, Vec<Series>, Vec<Series>, Vec<Series>, Series)> {
    let mut servers = vec![];
    let mut plain = Series::default();
    for n in nodes {
        bar.set_message(format!("building {}", n.name));
        rules.extend(n.build().await?);
        servers.push((
            tools::start_servers(&n.server, &n.server_ip())?,
            forward::accept_server(&n.server, addr(&n.server_ip(), forward::CONN_PORT)),
        ));
        if let Some(why) = check(n).await? {
            plain.error = Some(why);
        }
        bar.inc(1);
    }
    // Pod to ClusterIP first, so that the pod-to-pod rounds find the table of translated
    // flows as a busy node has it (thousands of entries), not with one.
    let with_rules: Vec<&Node> = nodes.iter().filter(|n| n.name != NO_RULES).collect();
    let list = &with_rules;
    let [svc_tcp, svc_conn] = interleaved(opts, bar, list.len(), move |i, metric| {
        let (n, secs) = (list[i], opts.secs);
        if metric == 0 {
            let what = format!("TCP to a ClusterIP via {}", n.name);
            let measure = async move {
                tools::tcp_stream(&n.client, IPERF_SERVICE, SERVICE_PORT, secs).await.map(|(bps, _)| bps / 1e9)
            };
            (what.clone(), what, measure.boxed())
        } else {
            let what = format!("connections to a ClusterIP via {}", n.name);
            let measure = async move {
                forward::connection_rate(&n.client, addr(CONN_SERVICE, SERVICE_PORT), secs).await.map(|r| r / 1e3)
            };
            (what.clone(), what, measure.boxed())
        }
    })
    .await;
    let [pod_tcp, pod_udp] = interleaved(opts, bar, nodes.len(), move |i, metric| {
        let (n, secs) = (&nodes[i], opts.secs);
        if metric == 0 {
            let what = format!("TCP pod to pod via {}", n.name);
            let measure =
                async move { tools::tcp_stream(&n.client, &n.server_ip(), 5201, secs).await.map(|(bps, _)| bps / 1e9) };
            (what.clone(), what, measure.boxed())
        } else {
            let what = format!("64-byte UDP pod to pod via {}", n.name);
            let measure =
                async move { tools::udp_small_frames(&n.client, &n.server, secs).await.map(|(pps, _)| pps / 1e3) };
            (what.clone(), what, measure.boxed())
        }
    })
    .await;
    drop(servers);
    Ok((pod_tcp, pod_udp, svc_tcp, svc_conn, plain))
}

/// A metric of the comparison (higher is better in all of them).
fn metric(id: &str, title: &str, unit: &str, baselines: &[&str], rows: Vec<(String, Series)>) -> MetricReport {
    MetricReport::new(id, title, unit, true, "", baselines, rows)
}

/// The comparison: builds, measures, removes (also after a failure), reports.
async fn measure(opts: &Options, bar: &ProgressBar) -> Result<Vec<MetricReport>> {
    let nodes = nodes();
    let mut rules = vec![];
    let measured = measure_nodes(opts, bar, &nodes, &mut rules).await;
    bar.set_message("tearing down");
    // Taken out explicitly (their namespaces would take them along anyway): a failure to is
    // worth a line.
    let removed = crate::sys::blocking(move || {
        let failed: Vec<String> = rules.iter_mut().filter_map(|r| r.remove().err()).map(|e| e.to_string()).collect();
        if failed.is_empty() { Ok(()) } else { Err(Error::Command(failed.join("; "))) }
    })
    .await;
    if let Err(e) = removed {
        bar.println(format!("removing kube-proxy's rules: {e}"));
    }
    for n in &nodes {
        n.remove().await;
    }
    let (pod_tcp, pod_udp, svc_tcp, svc_conn, plain) = measured?;
    let names =
        |only_rules: bool| nodes.iter().filter(move |n| !only_rules || n.name != NO_RULES).map(|n| n.name.to_owned());
    let pod = |s: Vec<Series>| names(false).zip(s).collect::<Vec<_>>();
    let svc = |s: Vec<Series>| {
        let mut rows: Vec<(String, Series)> = names(true).zip(s).collect();
        rows.push((BRIDGE_PLAIN.to_owned(), plain.clone()));
        rows
    };
    Ok(vec![
        metric(
            "svc_pod_tcp",
            "Pod-to-pod TCP stream, node with 100 Services' rules (iperf3, 1 stream)",
            "Gbit/s",
            &[NO_RULES, BRIDGE],
            pod(pod_tcp),
        ),
        metric(
            "svc_pod_udp64",
            "Pod-to-pod 64-byte UDP frames, node with 100 Services' rules (trafgen on every CPU)",
            "kframes/s",
            &[NO_RULES, BRIDGE],
            pod(pod_udp),
        ),
        metric(
            "svc_tcp",
            "TCP stream from a pod to a ClusterIP, its endpoint a pod of the segment (iperf3, 1 stream)",
            "Gbit/s",
            &[BRIDGE],
            svc(svc_tcp),
        ),
        metric(
            "svc_conn",
            "New TCP connections from a pod to a ClusterIP (32 in flight, a client thread per CPU)",
            "kconn/s",
            &[BRIDGE],
            svc(svc_conn),
        ),
    ])
}
