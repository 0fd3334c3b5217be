//! Port-forwarding contenders: a client outside (a namespace behind an uplink veth) reaching a
//! server through the host's uplink address, once through this project's eBPF forward and
//! once through the classic recipe (kernel bridge with an address + iptables DNAT); and the
//! limit of both, the same client reaching the same server by plain routing, without NAT.
use std::{net::SocketAddr, process::Stdio, time::Duration};

use futures::FutureExt as _;
use indicatif::ProgressBar;
use tokio::{
    net::{TcpSocket, TcpStream},
    sync::watch,
};

use super::{Comparison, Options, Series, interleaved, report::MetricReport, tools};
use crate::{
    controller::{forward, ns, switch},
    error::{Error, Result},
    kind::DatapathKind,
    state::Proto,
    sys::netns,
};

/// Host port forwarded to the server's iperf3 (5201).
pub const IPERF_PORT: u16 = 15201;
/// Host port forwarded to the connection-rate server (which listens on the same port).
pub const CONN_PORT: u16 = 16000;
/// The forwards every NAT contender makes: (host port, server port).
const FORWARDS: [(u16, u16); 2] = [(IPERF_PORT, 5201), (CONN_PORT, CONN_PORT)];
/// Connections the rate client keeps in flight.
const CONN_CONCURRENCY: usize = 32;

/// How the client reaches the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// `switch forward add` on a tc switch.
    Ebpf,
    /// Linux bridge + `iptables -t nat ... -j DNAT`.
    Iptables,
    /// The Linux bridge of `Iptables` without the DNAT rules: the client connects to the
    /// server's own address and the host routes. What any forward costs on top of reaching the
    /// server at all is measured against this. The host's netfilter is left as it is: with a
    /// nat table in the host namespace (the `Iptables` contender's) it tracks these
    /// connections too, as it would on any host that forwards ports with iptables.
    Routed,
}

/// The baselines of the forwarding comparison, every ratio is against them: plain routing
/// (the limit) and iptables DNAT (the classic recipe). Measured whenever it runs.
pub const BASELINES: [&str; 2] = ["routed", "iptables"];

/// The contenders of the forwarding comparison, in the order they are measured in each round.
pub fn contenders() -> [Forwarded; 3] {
    [
        Forwarded::new("routed", Via::Routed, 3),
        Forwarded::new("iptables", Via::Iptables, 1),
        Forwarded::new("ebpf-forward", Via::Ebpf, 2),
    ]
}

/// One forwarding topology.
pub struct Forwarded {
    /// Contender name in reports.
    pub name: &'static str,
    via: Via,
    /// Outside (client) namespace.
    pub client: String,
    /// Server namespace.
    pub server: String,
    /// Server address on its segment.
    pub server_ip: String,
    /// The host's address on the uplink (the client's default gateway).
    uplink_ip: String,
    uplink: String,
    switch: String,
    net: u8,
}

async fn ip(args: &[&str]) -> Result<()> {
    super::run_quiet("ip", args).await
}

async fn iptables(op: &str, uplink: &str, from: u16, to: &str) -> Result<()> {
    let from = from.to_string();
    let args = [
        "-t",
        "nat",
        op,
        "PREROUTING",
        "-i",
        uplink,
        "-p",
        "tcp",
        "--dport",
        &from,
        "-j",
        "DNAT",
        "--to-destination",
        to,
    ];
    let out = tokio::process::Command::new("iptables")
        .args(args)
        .stdout(Stdio::null())
        .output()
        .await
        .map_err(|e| Error::Command(format!("running iptables (install it, or run 'cargo xtask bench'): {e}")))?;
    if !out.status.success() && op == "-A" {
        return Err(Error::Command(format!("iptables failed: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(())
}

impl Forwarded {
    /// The topology `via`, numbered `net` (addresses 172.30.NET.0/24 and 10.210.NET.0/24).
    pub fn new(name: &'static str, via: Via, net: u8) -> Self {
        Self {
            name,
            via,
            client: format!("benchf{net}o"),
            server: format!("benchf{net}s"),
            server_ip: format!("10.210.{net}.10"),
            uplink_ip: format!("172.30.{net}.1"),
            uplink: format!("benchf{net}u"),
            switch: format!("benchf{net}"),
            net,
        }
    }

    /// Where the client connects to reach the server's iperf3: the forwarded port on the
    /// host's uplink address, or (routed) the server itself.
    pub fn iperf_target(&self) -> SocketAddr {
        self.target(IPERF_PORT, 5201)
    }

    /// Where the client connects to reach the connection-rate server (see `iperf_target`).
    pub fn conn_target(&self) -> SocketAddr {
        self.target(CONN_PORT, CONN_PORT)
    }

    fn target(&self, host_port: u16, server_port: u16) -> SocketAddr {
        let (ip, port) = match self.via {
            Via::Routed => (&self.server_ip, server_port),
            Via::Ebpf | Via::Iptables => (&self.uplink_ip, host_port),
        };
        format!("{ip}:{port}").parse().expect("IPv4 address and port")
    }

    /// Builds it (after removing leftovers).
    pub async fn build(&self) -> Result<()> {
        self.remove().await;
        self.build_client().await?;
        match self.via {
            Via::Ebpf => self.build_ebpf().await,
            Via::Iptables | Via::Routed => self.build_classic().await,
        }
    }

    /// The server's gateway on its segment.
    fn gateway(&self) -> String {
        format!("10.210.{}.254", self.net)
    }

    /// The outside namespace and the uplink to it, the client's only way out (also to the
    /// server's segment when routed).
    async fn build_client(&self) -> Result<()> {
        let net = self.net;
        let (up_cidr, out_cidr) = (format!("172.30.{net}.1/24"), format!("172.30.{net}.2/24"));
        netns::create(&self.client).await?;
        ip(&["link", "add", &self.uplink, "type", "veth", "peer", "name", "eth0", "netns", &self.client]).await?;
        ip(&["addr", "add", &up_cidr, "dev", &self.uplink]).await?;
        ip(&["link", "set", &self.uplink, "up"]).await?;
        for args in [
            vec!["-n", &self.client, "addr", "add", &out_cidr, "dev", "eth0"],
            vec!["-n", &self.client, "link", "set", "eth0", "up"],
            vec!["-n", &self.client, "link", "set", "lo", "up"],
        ] {
            ip(&args).await?;
        }
        ip(&["-n", &self.client, "route", "add", "default", "via", &self.uplink_ip]).await
    }

    /// A tc switch with the uplink, the server's namespace on it and `switch forward add`.
    async fn build_ebpf(&self) -> Result<()> {
        switch::up(switch::UpOptions {
            name: self.switch.clone(),
            datapath: Some(DatapathKind::Tc),
            gateway: Some(format!("{}/24", self.gateway()).parse()?),
            uplinks: vec![self.uplink.clone()],
            ..Default::default()
        })
        .await?;
        ns::add(ns::AddOptions {
            ns: self.server.clone(),
            ip: format!("{}/24", self.server_ip).parse()?,
            ip6: None,
            switch: self.switch.clone(),
            mac: None,
            port_security: true,
        })
        .await?;
        for (host, to) in FORWARDS {
            let single = |p| forward::PortRange { first: p, last: p };
            forward::add(forward::AddOptions {
                switch: self.switch.clone(),
                proto: Proto::Tcp,
                host: single(host),
                ns: self.server.clone(),
                to: single(to),
            })
            .await?;
        }
        Ok(())
    }

    /// A Linux bridge with an address, the server's namespace on it, forwarding on, and
    /// (`Iptables`) the DNAT rules.
    async fn build_classic(&self) -> Result<()> {
        let (net, gw) = (self.net, self.gateway());
        let br = format!("benchf{net}b");
        let host_if = format!("benchf{net}v");
        ip(&["link", "add", &br, "type", "bridge"]).await?;
        ip(&["addr", "add", &format!("{gw}/24"), "dev", &br]).await?;
        ip(&["link", "set", &br, "up"]).await?;
        netns::create(&self.server).await?;
        ip(&["link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &self.server]).await?;
        ip(&["link", "set", &host_if, "master", &br, "up"]).await?;
        for args in [
            vec!["-n", &self.server, "addr", "add", &format!("{}/24", self.server_ip), "dev", "eth0"],
            vec!["-n", &self.server, "link", "set", "eth0", "up"],
            vec!["-n", &self.server, "link", "set", "lo", "up"],
            vec!["-n", &self.server, "route", "add", "default", "via", &gw],
        ] {
            ip(&args).await?;
        }
        // Forwarding on the two interfaces involved only, not host-wide (a packet is
        // forwarded when the interface it arrives on forwards). The setting goes with the
        // interfaces when `remove` deletes them: nothing to give back.
        for dev in [&self.uplink, &br] {
            std::fs::write(format!("/proc/sys/net/ipv4/conf/{dev}/forwarding"), b"1")
                .map_err(|e| Error::Command(format!("turning on forwarding on {dev}: {e}")))?;
        }
        if self.via == Via::Iptables {
            for (host, to) in FORWARDS {
                iptables("-A", &self.uplink, host, &format!("{}:{to}", self.server_ip)).await?;
            }
        }
        Ok(())
    }

    /// Removes it; nothing there is fine.
    pub async fn remove(&self) {
        let net = self.net;
        for (host, to) in FORWARDS {
            let _ = iptables("-D", &self.uplink, host, &format!("{}:{to}", self.server_ip)).await;
        }
        let _ = switch::down(&self.switch).await;
        for dev in [self.uplink.clone(), format!("benchf{net}b"), format!("benchf{net}v")] {
            let _ = ip(&["link", "del", &dev]).await;
        }
        for ns in [&self.client, &self.server] {
            let _ = netns::delete(ns);
        }
    }
}

/// The port-forwarding comparison.
pub struct Forwarding;

#[async_trait::async_trait]
impl Comparison for Forwarding {
    fn contenders(&self) -> Vec<&'static str> {
        contenders().iter().map(|c| c.name).collect()
    }

    fn steps(&self, opts: &Options) -> usize {
        let n = contenders().len();
        opts.rounds * n * 2 + n
    }

    async fn run(&self, opts: &Options, bar: &ProgressBar) -> Result<Vec<MetricReport>> {
        measure(opts, bar).await
    }

    async fn remove(&self) {
        for c in contenders() {
            c.remove().await;
        }
    }
}

/// Port forwarding: TCP throughput and new connections per second from outside through the
/// uplink, eBPF forward against bridge + iptables DNAT and against plain routing,
/// interleaved per round.
async fn measure(opts: &Options, bar: &ProgressBar) -> Result<Vec<MetricReport>> {
    let contenders = contenders();
    let measured = async {
        let mut servers = vec![];
        for c in &contenders {
            bar.set_message(format!("building {}", c.name));
            c.build().await?;
            servers.push((
                tools::start_servers(&c.server, &c.server_ip)?,
                accept_server(&c.server, format!("{}:{CONN_PORT}", c.server_ip).parse().expect("address")),
            ));
            bar.inc(1);
        }
        let list = &contenders;
        let [tcp, conn] = interleaved(opts, bar, list.len(), move |i, metric| {
            let (c, secs) = (&list[i], opts.secs);
            if metric == 0 {
                let what = format!("TCP through {}", c.name);
                let measure = async move {
                    let iperf = c.iperf_target();
                    let bps = tools::tcp_stream(&c.client, &iperf.ip().to_string(), iperf.port(), secs).await;
                    bps.map(|(bps, _)| bps / 1e9)
                };
                (what.clone(), what, measure.boxed())
            } else {
                let what = format!("connections through {}", c.name);
                let measure = async move { connection_rate(&c.client, c.conn_target(), secs).await.map(|r| r / 1e3) };
                (what.clone(), what, measure.boxed())
            }
        })
        .await;
        drop(servers);
        Ok::<_, Error>((tcp, conn))
    }
    .await;
    for c in &contenders {
        c.remove().await;
    }
    let (tcp, conn) = measured?;
    let rows = |s: Vec<Series>| contenders.iter().map(|c| c.name.to_owned()).zip(s).collect::<Vec<_>>();
    Ok(vec![
        MetricReport::new(
            "fwd_tcp",
            "TCP stream through a port forward (iperf3, 1 stream; routed: no forward, to the server's address)",
            "Gbit/s",
            true,
            "",
            &BASELINES,
            rows(tcp),
        ),
        MetricReport::new(
            "fwd_conn",
            "New TCP connections through a port forward (32 in flight, a client thread per CPU)",
            "kconn/s",
            true,
            "",
            &BASELINES,
            rows(conn),
        ),
    ])
}

/// Serves TCP connections in namespace `ns` on `addr`, closing each at once, until the
/// returned sender is dropped. One accepting thread per CPU (SO_REUSEPORT listeners), so the
/// server keeps up with the client on any machine.
pub fn accept_server(ns: &str, addr: SocketAddr) -> watch::Sender<()> {
    let (stop_tx, stop_rx) = watch::channel(());
    for _ in 0..threads() {
        let (ns, mut stop_rx) = (ns.to_owned(), stop_rx.clone());
        tokio::spawn(async move {
            let _ = netns::run_in(&ns, move |_| async move {
                let fail = |e: std::io::Error| Error::Command(format!("listening on {addr}: {e}"));
                let socket = TcpSocket::new_v4().map_err(fail)?;
                socket.set_reuseport(true).map_err(fail)?;
                socket.bind(addr).map_err(fail)?;
                let listener = socket.listen(1024).map_err(fail)?;
                let serve = async {
                    loop {
                        if let Ok((s, _)) = listener.accept().await {
                            drop(s);
                        }
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = stop_rx.changed() => {}
                }
                Ok(())
            })
            .await;
        });
    }
    stop_tx
}

/// Client or server threads: one per CPU. A single client thread would leave CPUs idle and
/// measure itself rather than the path (each connect also runs the path's softirq work).
fn threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// New TCP connections per second from namespace `ns` to `addr` for `secs`: one client
/// thread per CPU, `CONN_CONCURRENCY` connections in flight in all (each connects, waits for
/// the server to close, closes).
pub async fn connection_rate(ns: &str, addr: SocketAddr, secs: u64) -> Result<f64> {
    let n = threads();
    let clients = (0..n).map(|_| {
        netns::run_in(ns, move |_| async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
            let workers: Vec<_> = (0..CONN_CONCURRENCY.div_ceil(n))
                .map(|_| {
                    tokio::spawn(async move {
                        let mut done = 0u64;
                        while tokio::time::Instant::now() < deadline {
                            if let Ok(Ok(mut s)) =
                                tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await
                            {
                                let mut buf = [0u8; 1];
                                let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
                                done += 1;
                            }
                        }
                        done
                    })
                })
                .collect();
            let mut total = 0u64;
            for w in workers {
                total += w.await.unwrap_or(0);
            }
            Ok(total)
        })
    });
    let mut total = 0u64;
    for r in futures::future::join_all(clients).await {
        total += r?;
    }
    Ok(total as f64 / secs as f64)
}
