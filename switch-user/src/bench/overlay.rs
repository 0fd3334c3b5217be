//! The cross-host comparison: a client namespace on one simulated host and a server namespace
//! on another, the hosts being network namespaces joined by a veth pair (their underlay).
//!
//! ```text
//!   host benchvNa                                      host benchvNb
//!   client ─ switch (tc) ─ VXLAN (VNI 42) ─ ul0 ═══ ul0 ─ VXLAN ─ switch (tc) ─ server
//!   client ─ Linux bridge ─ vxlan42 (static FDB) ─ ul0 ═══ ul0 ─ vxlan42 ─ bridge ─ server
//! ```
//! The baseline is the kernel's own answer, as flannel's VXLAN backend and many hand-made
//! overlays build it: a Linux bridge with a VXLAN device, learning off, and static FDB
//! entries naming the remote station's VTEP (and the all-zero entry for floods). Both sides
//! give the namespaces the underlay's MTU minus 50 and use UDP port 4789.
use futures::FutureExt as _;
use indicatif::ProgressBar;

use super::{Comparison, Options, Series, interleaved, output, report::MetricReport, run_quiet, tools};
use crate::error::{Error, Result};

/// The switch's contender and the baseline.
pub const CONTENDERS: [&str; 2] = ["switch-vxlan", "bridge-vxlan"];

/// The baseline of the comparison.
pub const BASELINE: &str = "bridge-vxlan";

/// The VNI both contenders use.
const VNI: &str = "42";

/// One contender's two hosts and namespaces.
#[derive(Clone, Debug)]
pub struct Overlay {
    /// Name in reports.
    pub name: &'static str,
    /// The two hosts (network namespaces).
    hosts: [String; 2],
    /// The client namespace (on the first host).
    pub client: String,
    /// The server namespace (on the second host).
    pub server: String,
    /// The server's address.
    pub server_ip: String,
    index: usize,
}

/// Every contender, in the order measured in each round.
pub fn contenders() -> Vec<Overlay> {
    CONTENDERS
        .iter()
        .enumerate()
        .map(|(i, name)| Overlay {
            name,
            hosts: [format!("benchv{i}a"), format!("benchv{i}b")],
            client: format!("benchv{i}c"),
            server: format!("benchv{i}s"),
            server_ip: format!("10.204.{i}.2"),
            index: i,
        })
        .collect()
}

/// The cross-host comparison.
pub struct Overlays;

#[async_trait::async_trait]
impl Comparison for Overlays {
    fn contenders(&self) -> Vec<&'static str> {
        CONTENDERS.to_vec()
    }

    fn steps(&self, opts: &Options) -> usize {
        (opts.rounds * 2 + 1) * CONTENDERS.len()
    }

    async fn run(&self, opts: &Options, bar: &ProgressBar) -> Result<Vec<MetricReport>> {
        measure(opts, bar).await
    }

    async fn remove(&self) {
        for o in contenders() {
            o.remove().await;
        }
    }
}

/// Across hosts: a switch with a VXLAN tunnel port on each of two simulated hosts against a
/// Linux bridge with a VXLAN device and static FDB entries (flannel-like), TCP throughput and
/// 64-byte UDP frames from a namespace on one host to a namespace on the other, interleaved
/// per round.
async fn measure(opts: &Options, bar: &ProgressBar) -> Result<Vec<MetricReport>> {
    let contenders = contenders();
    let measured = async {
        let mut servers = vec![];
        for c in &contenders {
            bar.set_message(format!("building {}", c.name));
            c.build().await?;
            servers.push(tools::start_servers(&c.server, &c.server_ip)?);
            bar.inc(1);
        }
        let list = &contenders;
        let [tcp, udp] = interleaved(opts, bar, list.len(), move |i, metric| {
            let (c, secs) = (&list[i], opts.secs);
            if metric == 0 {
                let what = format!("TCP across hosts via {}", c.name);
                let measure = async move {
                    tools::tcp_stream(&c.client, &c.server_ip, 5201, secs).await.map(|(bps, _)| bps / 1e9)
                };
                (what.clone(), what, measure.boxed())
            } else {
                let message = format!("64-byte UDP across hosts via {}", c.name);
                let measure =
                    async move { tools::udp_small_frames(&c.client, &c.server, secs).await.map(|(pps, _)| pps / 1e3) };
                (message, format!("64-byte UDP via {}", c.name), measure.boxed())
            }
        })
        .await;
        drop(servers);
        Ok::<_, Error>((tcp, udp))
    }
    .await;
    for c in &contenders {
        c.remove().await;
    }
    let (tcp, udp) = measured?;
    let rows = |s: Vec<Series>| contenders.iter().map(|c| c.name.to_owned()).zip(s).collect::<Vec<_>>();
    Ok(vec![
        MetricReport::new(
            "vxlan_tcp",
            "TCP stream between namespaces of two hosts over VXLAN (iperf3, 1 stream)",
            "Gbit/s",
            true,
            "",
            &[BASELINE],
            rows(tcp),
        ),
        MetricReport::new(
            "vxlan_udp64",
            "64-byte UDP frames received across two hosts over VXLAN (trafgen on every CPU)",
            "kframes/s",
            true,
            "",
            &[BASELINE],
            rows(udp),
        ),
    ])
}

/// The `switch` binary (this process's).
pub(super) fn exe() -> Result<String> {
    let exe = std::env::current_exe().map_err(|e| Error::Command(format!("finding the switch binary: {e}")))?;
    Ok(exe.to_string_lossy().into_owned())
}

impl Overlay {
    /// Host `h`'s underlay address.
    fn underlay_ip(&self, h: usize) -> String {
        format!("10.203.{}.{}", self.index, h + 1)
    }

    /// The MAC of the client (`h` 0) or the server: fixed, so the baseline's static FDB can
    /// name it before the namespace exists.
    fn mac(&self, h: usize) -> String {
        format!("02:00:00:cc:{:02x}:{:02x}", self.index, h + 1)
    }

    /// Builds it (after removing leftovers of an interrupted run) and checks the client
    /// reaches the server.
    pub async fn build(&self) -> Result<()> {
        self.remove().await;
        for host in &self.hosts {
            run_quiet("ip", &["netns", "add", host]).await?;
        }
        let [a, b] = &self.hosts;
        run_quiet("ip", &["link", "add", "ul0", "netns", a, "type", "veth", "peer", "name", "ul0", "netns", b]).await?;
        for (h, host) in self.hosts.iter().enumerate() {
            run_quiet("ip", &["-n", host, "addr", "add", &format!("{}/24", self.underlay_ip(h)), "dev", "ul0"]).await?;
            run_quiet("ip", &["-n", host, "link", "set", "ul0", "up"]).await?;
            run_quiet("ip", &["-n", host, "link", "set", "lo", "up"]).await?;
        }
        if self.name == BASELINE {
            self.build_bridge().await?
        } else {
            self.build_switch().await?
        }
        // The first packets teach both sides the stations (ARP, learning).
        let ping = ["ping", "-c", "3", "-i", "0.2", "-W", "1", "-q", self.server_ip.as_str()];
        let mut args = vec!["ns", "exec", self.client.as_str(), "--"];
        args.extend(ping);
        output(&exe()?, &args)
            .await
            .map(drop)
            .map_err(|e| Error::Command(format!("{}: client cannot reach server: {e}", self.name)))
    }

    async fn build_switch(&self) -> Result<()> {
        let exe = exe()?;
        for (h, host) in self.hosts.iter().enumerate() {
            let on = |args: &[&str]| {
                let mut a = vec!["--host-netns", host.as_str()];
                a.extend_from_slice(args);
                a.into_iter().map(str::to_owned).collect::<Vec<String>>()
            };
            let run = |args: Vec<String>| {
                let exe = exe.clone();
                async move { run_quiet(&exe, &args.iter().map(String::as_str).collect::<Vec<_>>()).await }
            };
            run(on(&["up", "--switch", "benchvx", "--vxlan", VNI, "--underlay", "ul0"])).await?;
            run(on(&["peer", "add", &self.underlay_ip(1 - h), "--switch", "benchvx"])).await?;
            let (ns, ip) = self.station(h);
            run(on(&["ns", "add", &ns, "--ip", &format!("{ip}/24"), "--mac", &self.mac(h), "--switch", "benchvx"]))
                .await?;
        }
        Ok(())
    }

    /// The namespace on host `h` and its address.
    fn station(&self, h: usize) -> (String, String) {
        if h == 0 {
            (self.client.clone(), format!("10.204.{}.1", self.index))
        } else {
            (self.server.clone(), self.server_ip.clone())
        }
    }

    async fn build_bridge(&self) -> Result<()> {
        for (h, host) in self.hosts.iter().enumerate() {
            let ip = |args: &[&str]| {
                let mut a = vec!["-n", host.as_str()];
                a.extend_from_slice(args);
                a.into_iter().map(str::to_owned).collect::<Vec<String>>()
            };
            let run = |args: Vec<String>| async move {
                run_quiet("ip", &args.iter().map(String::as_str).collect::<Vec<_>>()).await
            };
            let local = self.underlay_ip(h);
            run(ip(&[
                "link",
                "add",
                "vxlan42",
                "type",
                "vxlan",
                "id",
                VNI,
                "dstport",
                "4789",
                "local",
                &local,
                "dev",
                "ul0",
                "nolearning",
            ]))
            .await?;
            run(ip(&["link", "add", "br0", "type", "bridge"])).await?;
            run(ip(&["link", "set", "vxlan42", "master", "br0", "mtu", "1450", "up"])).await?;
            let (ns, addr) = self.station(h);
            run_quiet("ip", &["netns", "add", &ns]).await?;
            run(ip(&[
                "link",
                "add",
                "veth0",
                "mtu",
                "1450",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &ns,
                "address",
                &self.mac(h),
                "mtu",
                "1450",
            ]))
            .await?;
            run(ip(&["link", "set", "veth0", "master", "br0", "up"])).await?;
            run(ip(&["link", "set", "br0", "up"])).await?;
            run_quiet("ip", &["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", "eth0"]).await?;
            run_quiet("ip", &["-n", &ns, "link", "set", "eth0", "up"]).await?;
            run_quiet("ip", &["-n", &ns, "link", "set", "lo", "up"]).await?;
            // Static FDB: floods to the other host, and the remote station at its VTEP.
            // `replace`, not `add`: the other host's station may already have been heard (its
            // IPv6 neighbour discovery floods over the tunnel once the first host is up), and
            // the bridge then holds a learned entry that `add` refuses to overwrite (EEXIST).
            let remote = self.underlay_ip(1 - h);
            let bridge = |args: &[&str]| {
                let mut a = vec!["-n", host.as_str(), "fdb"];
                a.extend_from_slice(args);
                a.into_iter().map(str::to_owned).collect::<Vec<String>>()
            };
            for args in [
                bridge(&["append", "00:00:00:00:00:00", "dev", "vxlan42", "dst", &remote]),
                bridge(&["replace", &self.mac(1 - h), "dev", "vxlan42", "dst", &remote, "self", "permanent"]),
                bridge(&["replace", &self.mac(1 - h), "dev", "vxlan42", "master", "static"]),
            ] {
                run_quiet("bridge", &args.iter().map(String::as_str).collect::<Vec<_>>()).await?;
            }
        }
        Ok(())
    }

    /// Removes it; nothing there is fine.
    pub async fn remove(&self) {
        if self.name != BASELINE
            && let Ok(exe) = exe()
        {
            for host in &self.hosts {
                if crate::sys::netns::exists(host) {
                    let _ = run_quiet(&exe, &["--host-netns", host, "down", "--switch", "benchvx"]).await;
                }
            }
        }
        for ns in [&self.client, &self.server] {
            let _ = run_quiet("ip", &["netns", "del", ns]).await;
        }
        for host in &self.hosts {
            let _ = run_quiet("ip", &["netns", "del", host]).await;
            // The host's state directory (its lock and an empty state) goes with it.
            let _ = std::fs::remove_dir_all(crate::sys::host::Host::Named(host.clone()).state_dir());
        }
    }
}
