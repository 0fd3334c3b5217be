//! A bounded soak: steady traffic between three namespaces while other namespaces keep
//! joining and leaving the same switch, on every datapath. It ends with every counter
//! consistent and nothing leaked. `SWITCH_SOAK_SECS=600 cargo xtask test -- soak` runs the
//! 10-minute version (the default is 10 s per datapath).
use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use switch_tests::*;

datapath_matrix!(soak_traffic_keeps_flowing_while_ports_come_and_go);

fn soak_traffic_keeps_flowing_while_ports_come_and_go(dp: &str) {
    let secs: u64 = std::env::var("SWITCH_SOAK_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let net = match dp {
        "tc" => "10.81.0",
        "xdp" => "10.82.0",
        "userspace" => "10.83.0",
        _ => "10.84.0",
    };
    let mut sb = Sandbox::new();
    let sw = sb.switch("sw", dp, &[]);
    let a = sb.port(&sw, "a", &format!("{net}.1/24"), &[]);
    let b = sb.port(&sw, "b", &format!("{net}.2/24"), &[]);
    let _c = sb.port(&sw, "c", &format!("{net}.3/24"), &[]);
    // Two steady flows for the whole run: 20 echo requests a second each.
    let pinger = |from: &str, to: String| {
        Reaped::new(
            Command::new(switch_bin())
                .args(["ns", "exec", from, "--", "ping", "-q", "-i", "0.05", "-w", &secs.to_string(), &to])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let flows = [pinger(&a, format!("{net}.2")), pinger(&b, format!("{net}.3"))];
    // Meanwhile namespaces join, talk and leave.
    let start = Instant::now();
    let mut churned = 0;
    while start.elapsed() < Duration::from_secs(secs.saturating_sub(1)) {
        let d = sb.port(&sw, "d", &format!("{net}.4/24"), &[]);
        assert!(ping(&d, &format!("{net}.1"), 1), "a joining namespace reaches a");
        ok(&["ns", "del", &d]);
        churned += 1;
    }
    assert!(churned >= 3, "only {churned} join/leave cycles");
    for flow in flows {
        let out = flow.take().wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let loss: f64 = text
            .split(',')
            .find_map(|p| p.trim().strip_suffix("% packet loss"))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no ping summary: {text}"));
        assert!(loss <= 2.0, "{loss}% loss on a steady flow while ports changed: {text}");
    }
    // Counters: nothing refused to send, nothing malformed, and the flows' frames are there.
    for row in json(&["stats", "--switch", &sw])["ports"].as_array().unwrap() {
        assert_eq!(counter(row, "tx_errors").unwrap_or(0), 0, "{row}");
        assert_eq!(counter(row, "malformed").unwrap_or(0), 0, "{row}");
        assert!(row["rx_packets"].as_u64().unwrap() >= secs * 10, "{row}");
    }
    ok(&["down", "--name", &sw]);
    assert_eq!(Snapshot::take(&sb.prefix), Snapshot::take("\u{0}never"), "soak left something behind");
}
