//! The measuring tools (iperf3, trafgen, sockperf) run inside the benchmark's namespaces, and parsers
//! for what they print.
use std::{process::Stdio, time::Duration};

use serde_json::Value;
use tokio::process::{Child, Command};

use crate::{
    error::{Context as _, Error, Result},
    sys::netns,
};

/// A command inside namespace `ns`.
fn in_ns(ns: &str, program: &str, args: &[String]) -> Result<Command> {
    let mut cmd = netns::command(ns, program, false)?;
    cmd.args(args).stdin(Stdio::null());
    let mut cmd = Command::from(cmd);
    cmd.kill_on_drop(true);
    Ok(cmd)
}

/// Starts the servers of one topology in `ns`: an iperf3 server (port 5201) and a sockperf
/// server (port 11111) on `ip`.
pub fn start_servers(ns: &str, ip: &str) -> Result<Vec<Child>> {
    let spawn = |program: &str, args: Vec<String>| -> Result<Child> {
        in_ns(ns, program, &args)?
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context(format!("starting {program} (install it, or run 'cargo xtask bench')"))
    };
    Ok(vec![
        spawn("iperf3", ["-s", "-p", "5201", "-B", ip].map(String::from).to_vec())?,
        spawn("sockperf", ["server", "-i", ip, "-p", "11111"].map(String::from).to_vec())?,
    ])
}

async fn output(ns: &str, program: &str, args: Vec<String>) -> Result<String> {
    let out = in_ns(ns, program, &args)?.output().await.context(format!("running {program}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let msg = String::from_utf8_lossy(&out.stdout);
        return Err(Error::Command(format!(
            "{program} {} failed: {} {}",
            args.join(" "),
            err.trim(),
            msg.lines().last().unwrap_or("")
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Retries `f` a few times: a server started a moment ago may not listen yet.
async fn retry<T, F, Fut>(mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut last = None;
    for _ in 0..5 {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err(last.expect("tried at least once"))
}

/// One TCP stream for `secs` seconds to `server:port`: received bits per second and bytes.
pub async fn tcp_stream(ns: &str, server: &str, port: u16, secs: u64) -> Result<(f64, f64)> {
    let args: Vec<String> =
        ["-c", server, "-p", &port.to_string(), "-t", &secs.to_string(), "-J"].map(String::from).to_vec();
    let json = retry(|| output(ns, "iperf3", args.clone())).await?;
    parse_iperf_tcp(&json)
}

/// `(bits per second, bytes)` received, from iperf3 -J output of a TCP run.
pub fn parse_iperf_tcp(json: &str) -> Result<(f64, f64)> {
    let v: Value = serde_json::from_str(json).map_err(|e| Error::Command(format!("iperf3 printed no JSON: {e}")))?;
    let r = &v["end"]["sum_received"];
    match (r["bits_per_second"].as_f64(), r["bytes"].as_f64()) {
        (Some(bps), Some(bytes)) => Ok((bps, bytes)),
        _ => Err(Error::Command(format!("iperf3 JSON without end.sum_received: {}", v["error"]))),
    }
}

/// 64-byte UDP frames (22 bytes of payload, as iperf3 -l 22 would send) from `client` to
/// `server` for `secs`, sent by trafgen on every CPU: frames received per second at the
/// server's interface in the steady state, and frames received in all.
///
/// trafgen fills a PACKET_MMAP ring and needs no socket per frame, so the sender is cheap and
/// the path between the namespaces, not the sender, sets the rate (iperf3 senders spent most of
/// the CPU in their own UDP stack). Frames go to the discard port with no listener: the
/// receiving stack still takes each one up to the UDP lookup.
pub async fn udp_small_frames(client: &str, server: &str, secs: u64) -> Result<(f64, f64)> {
    small_frames(client, server, secs, |tx, rx| {
        format!("ipv4(saddr={}, daddr={}, ttl=64), udp(sp=4000, dp=9), fill(0x00, 22)", tx.ip, rx.ip)
    })
    .await
}

/// `udp_small_frames` over IPv6, from `src` to `dst` (the client's and the server's IPv6
/// addresses): 14 + 40 + 8 + 2 bytes, 64 as well.
pub async fn udp_small_frames6(
    client: &str,
    server: &str,
    (src, dst): (String, String),
    secs: u64,
) -> Result<(f64, f64)> {
    small_frames(client, server, secs, |_, _| {
        format!("ipv6(saddr={src}, daddr={dst}, hl=64), udp(sp=4000, dp=9), fill(0x00, 2)")
    })
    .await
}

/// 64-byte frames with the headers `l3` writes (trafgen's syntax, after the Ethernet header)
/// from `client` to `server`, as `udp_small_frames` says.
async fn small_frames(client: &str, server: &str, secs: u64, l3: impl Fn(&Nic, &Nic) -> String) -> Result<(f64, f64)> {
    let (tx, rx) = (nic(client).await?, nic(server).await?);
    let conf = TempFile(std::env::temp_dir().join(format!("switch-bench-{}-{client}.trafgen", std::process::id())));
    let frame = format!("{{ eth(da={}, sa={}), {} }}\n", rx.mac, tx.mac, l3(&tx, &rx));
    tokio::fs::write(&conf.0, frame).await.context("writing the trafgen frame")?;
    trafgen_run(client, server, &tx.name, &conf.0.to_string_lossy(), rx.received, secs).await
}

/// A file removed when dropped, also when an interrupted benchmark drops the run mid-way.
struct TempFile(std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn trafgen_run(client: &str, server: &str, dev: &str, conf: &str, first: u64, secs: u64) -> Result<(f64, f64)> {
    // --no-sock-mem: trafgen would otherwise raise the host's socket buffer sysctls for the run.
    let args: Vec<String> = ["--dev", dev, "--conf", conf, "--no-sock-mem"].map(String::from).to_vec();
    // trafgen forks one sender per CPU: its own process group lets one signal reach them all.
    let sender = in_ns(client, "trafgen", &args)?
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .context("starting trafgen (install netsniff-ng, or run 'cargo xtask bench')")?;
    let group = Group(sender.id().map(|p| p as i32));
    // Skip the ring's first fill and the senders' start-up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (r0, t0) = (nic(server).await?.received, std::time::Instant::now());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (r1, t1) = (nic(server).await?.received, std::time::Instant::now());
    let mut sender = sender;
    let running = sender.try_wait().ok().flatten().is_none();
    // SIGINT lets every sender unmap its ring and the parent print its summary.
    group.signal(nix::sys::signal::Signal::SIGINT);
    let out = sender.wait_with_output().await.context("waiting for trafgen")?;
    // The parent waits for its senders, so the group is gone: its id may be reused now.
    group.disarm();
    if !running {
        // trafgen gives up when a send fails, e.g. when the device stops its queue (an
        // XDP-mode veth does once its ring is full): say what it said, on one line.
        let said: Vec<String> = String::from_utf8_lossy(&out.stderr)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("Running!"))
            .map(String::from)
            .collect();
        return Err(Error::Command(format!("trafgen stopped early: {}", said.join("; "))));
    }
    let last = nic(server).await?.received;
    let pps = r1.saturating_sub(r0) as f64 / (t1 - t0).as_secs_f64().max(0.001);
    Ok((pps, last.saturating_sub(first) as f64))
}

/// A process group that is killed when dropped (an error or an interrupted benchmark must
/// not leave senders spinning on every CPU).
struct Group(Option<i32>);

impl Group {
    fn disarm(mut self) {
        self.0 = None;
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        if let Some(pgid) = self.0 {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), sig);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
    }
}

/// The interface of a benchmark namespace (the one that is not `lo`).
struct Nic {
    name: String,
    mac: String,
    ip: String,
    received: u64,
}

async fn nic(ns: &str) -> Result<Nic> {
    let args: Vec<String> = ["-j", "-s", "addr", "show"].map(String::from).to_vec();
    parse_nic(&output(ns, "ip", args).await?).map_err(|e| Error::Command(format!("namespace {ns}: {e}")))
}

/// The first interface with an IPv4 address but `lo` in `ip -j -s addr show` output.
fn parse_nic(json: &str) -> std::result::Result<Nic, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("ip printed no JSON: {e}"))?;
    let links = v.as_array().ok_or("ip printed no list of interfaces")?;
    links
        .iter()
        .filter(|l| l["ifname"] != "lo")
        .find_map(|l| {
            let ip = l["addr_info"].as_array()?.iter().find(|a| a["family"] == "inet")?["local"].as_str()?;
            Some(Nic {
                name: l["ifname"].as_str()?.to_owned(),
                mac: l["address"].as_str()?.to_owned(),
                ip: ip.to_owned(),
                received: l["stats64"]["rx"]["packets"].as_u64()?,
            })
        })
        .ok_or_else(|| "no interface with an IPv4 address and counters".to_owned())
}

/// UDP ping-pong of 64-byte messages for `secs` against the sockperf server on port 11111:
/// (p50, p99) latency in microseconds, as sockperf reports it (half the round trip). With
/// `busy`, the client's socket is non-blocking and polled without sleeping.
pub async fn latency(ns: &str, server: &str, secs: u64, busy: bool) -> Result<(f64, f64)> {
    let port = if busy { BUSY_PORT } else { "11111" };
    let mut args: Vec<String> =
        ["ping-pong", "-i", server, "-p", port, "-t", &secs.to_string(), "-m", "64"].map(String::from).to_vec();
    if busy {
        args.extend(BUSY_ARGS.map(String::from));
    }
    let text = retry(|| output(ns, "sockperf", args.clone())).await?;
    parse_sockperf(&text)
}

/// Port of the busy-polling sockperf server.
const BUSY_PORT: &str = "11112";
/// Non-blocking sockets, epoll with a zero timeout: neither side ever sleeps.
const BUSY_ARGS: [&str; 3] = ["--nonblocked", "--timeout", "0"];

/// `latency` with both client and server busy polling: what remains is the path between the
/// namespaces, without the scheduler's wake-ups (about 20 us here, the same for every
/// contender, which otherwise dominate). The server spins a CPU, so it runs only for this
/// measurement.
pub async fn latency_polling(client: &str, server_ns: &str, server: &str, secs: u64) -> Result<(f64, f64)> {
    let mut args: Vec<String> = ["server", "-i", server, "-p", BUSY_PORT].map(String::from).to_vec();
    args.extend(BUSY_ARGS.map(String::from));
    let _server = in_ns(server_ns, "sockperf", &args)?
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting sockperf (install it, or run 'cargo xtask bench')")?;
    latency(client, server, secs, true).await
}

/// `(p50, p99)` in microseconds from sockperf's summary.
pub fn parse_sockperf(text: &str) -> Result<(f64, f64)> {
    let pct = |p: &str| {
        text.lines().find_map(|l| {
            let rest = l.split("percentile ").nth(1)?;
            let (name, value) = rest.split_once('=')?;
            (name.trim() == p).then(|| value.trim().parse::<f64>().ok()).flatten()
        })
    };
    match (pct("50.000"), pct("99.000")) {
        (Some(p50), Some(p99)) => Ok((p50, p99)),
        _ => Err(Error::Command("sockperf printed no percentiles".into())),
    }
}

/// Busy and total CPU time of the machine so far, in clock ticks (from /proc/stat).
pub fn cpu_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> =
        stat.lines().next().unwrap_or_default().split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    let total: u64 = fields.iter().sum();
    // idle and iowait are the 4th and 5th fields.
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Clock ticks per second (USER_HZ).
pub fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_iperf_and_sockperf() {
        let tcp = r#"{"end":{"sum_received":{"bits_per_second":1.5e10,"bytes":9.0e9}}}"#;
        assert_eq!(parse_iperf_tcp(tcp).unwrap(), (1.5e10, 9.0e9));
        assert!(parse_iperf_tcp(r#"{"error":"unable to connect"}"#).is_err());
        let ip = r#"[{"ifname":"lo","address":"00:00:00:00:00:00","addr_info":[{"family":"inet","local":"127.0.0.1"}],
            "stats64":{"rx":{"packets":5}}},
            {"ifname":"eth0","address":"02:00:00:00:00:01","addr_info":[{"family":"inet6","local":"fe80::1"},
            {"family":"inet","local":"10.200.2.1"}],"stats64":{"rx":{"packets":1234}}}]"#;
        let nic = parse_nic(ip).unwrap();
        assert_eq!(
            (nic.name.as_str(), nic.mac.as_str(), nic.ip.as_str(), nic.received),
            ("eth0", "02:00:00:00:00:01", "10.200.2.1", 1234)
        );
        assert!(parse_nic(r#"[{"ifname":"lo","addr_info":[]}]"#).is_err());
        assert!(parse_nic("not json").is_err());
        let sp = "sockperf: ---> percentile 99.000 =   37.120\nsockperf: ---> percentile 50.000 =   27.846\n";
        assert_eq!(parse_sockperf(sp).unwrap(), (27.846, 37.12));
        assert!(parse_sockperf("nothing").is_err());
    }

    #[test]
    fn cpu_ticks_move_forward() {
        let (b0, t0) = cpu_ticks();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        let (b1, t1) = cpu_ticks();
        assert!(t1 >= t0 && b1 >= b0 && t0 > 0);
    }
}
