//! The measuring tools (iperf3, sockperf) run inside the benchmark's namespaces, and parsers
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

/// Starts the servers of one topology in `ns`: two iperf3 servers (ports 5201 and 5202, so
/// two UDP senders can run at once) and a sockperf server (port 11111) on `ip`.
pub fn start_servers(ns: &str, ip: &str) -> Result<Vec<Child>> {
    let mut out = vec![];
    for port in ["5201", "5202"] {
        let args = vec!["-s".into(), "-p".into(), port.into(), "-B".into(), ip.into()];
        out.push(
            in_ns(ns, "iperf3", &args)?
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting iperf3 (install it, or run 'cargo xtask bench')")?,
        );
    }
    let args = vec!["server".into(), "-i".into(), ip.into(), "-p".into(), "11111".into()];
    out.push(
        in_ns(ns, "sockperf", &args)?
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting sockperf (install it, or run 'cargo xtask bench')")?,
    );
    Ok(out)
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

/// Two UDP senders of 64-byte frames (22 bytes of payload) at full speed for `secs`: frames
/// received per second, and frames received.
pub async fn udp_small_frames(ns: &str, server: &str, secs: u64) -> Result<(f64, f64)> {
    let run = |port: &'static str| {
        let args: Vec<String> = ["-c", server, "-p", port, "-u", "-b", "0", "-l", "22", "-t", &secs.to_string(), "-J"]
            .map(String::from)
            .to_vec();
        let ns = ns.to_owned();
        async move { retry(|| output(&ns, "iperf3", args.clone())).await }
    };
    let (a, b) = tokio::join!(run("5201"), run("5202"));
    let (pa, sa) = parse_iperf_udp(&a?)?;
    let (pb, sb) = parse_iperf_udp(&b?)?;
    let received = pa + pb;
    Ok((received / sa.max(sb).max(0.001), received))
}

/// `(frames received, seconds)` from iperf3 -J output of a UDP run.
pub fn parse_iperf_udp(json: &str) -> Result<(f64, f64)> {
    let v: Value = serde_json::from_str(json).map_err(|e| Error::Command(format!("iperf3 printed no JSON: {e}")))?;
    let s = &v["end"]["sum"];
    match (s["packets"].as_f64(), s["lost_packets"].as_f64(), s["seconds"].as_f64()) {
        (Some(p), Some(l), Some(secs)) => Ok(((p - l).max(0.0), secs)),
        _ => Err(Error::Command(format!("iperf3 JSON without end.sum: {}", v["error"]))),
    }
}

/// UDP ping-pong of 64-byte messages for `secs`: (p50, p99) latency in microseconds, as
/// sockperf reports it (half the round trip).
pub async fn latency(ns: &str, server: &str, secs: u64) -> Result<(f64, f64)> {
    let args: Vec<String> =
        ["ping-pong", "-i", server, "-p", "11111", "-t", &secs.to_string(), "-m", "64"].map(String::from).to_vec();
    let text = retry(|| output(ns, "sockperf", args.clone())).await?;
    parse_sockperf(&text)
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
        let udp = r#"{"end":{"sum":{"packets":1000,"lost_packets":100,"seconds":2.0}}}"#;
        assert_eq!(parse_iperf_udp(udp).unwrap(), (900.0, 2.0));
        assert!(parse_iperf_tcp(r#"{"error":"unable to connect"}"#).is_err());
        assert!(parse_iperf_udp("not json").is_err());
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
