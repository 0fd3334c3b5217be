//! Benchmark results: medians, spreads and ratios, the issue's targets, and the renderings
//! (terminal table, JSON, Markdown, SVG chart).
use std::fmt::Write as _;

use serde::Serialize;

use super::{Options, Series};

/// Where the numbers come from.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// `uname -r`.
    pub kernel: String,
    /// CPUs online.
    pub cpus: usize,
    /// CPU model.
    pub cpu_model: String,
}

impl Machine {
    /// Reads this machine's description.
    pub fn read() -> Self {
        let kernel = nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split(':').nth(1)))
            .unwrap_or("unknown")
            .trim()
            .to_owned();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self { kernel, cpus, cpu_model }
    }
}

/// One contender's result for one metric.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Contender.
    pub contender: String,
    /// Every sample, in round order.
    pub samples: Vec<f64>,
    /// Median of the samples.
    pub median: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// Median over rounds of (this / bridge in the same round).
    pub vs_bridge: Option<f64>,
    /// Median over rounds of (this / veth in the same round).
    pub vs_veth: Option<f64>,
    /// Median CPU cost per unit of work (see the metric's `cpu_unit`).
    pub cpu: Option<f64>,
    /// Why there are no samples (the tool failed on this contender).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One metric across contenders.
#[derive(Clone, Debug, Serialize)]
pub struct MetricReport {
    /// Stable identifier.
    pub id: String,
    /// What was measured and how.
    pub title: String,
    /// Unit of the values.
    pub unit: String,
    /// Whether larger is better.
    pub higher_is_better: bool,
    /// Unit of `Row::cpu`, empty if not measured.
    pub cpu_unit: String,
    /// One row per contender.
    pub rows: Vec<Row>,
}

/// Median of `v` (NaN-free input), 0 for an empty slice.
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 { s[m] } else { (s[m - 1] + s[m]) / 2.0 }
}

/// Median over rounds of a[i] / b[i].
fn paired_ratio(a: &[f64], b: &[f64]) -> Option<f64> {
    let r: Vec<f64> = a.iter().zip(b).filter(|(_, b)| **b > 0.0).map(|(a, b)| a / b).collect();
    (!r.is_empty()).then(|| median(&r))
}

impl MetricReport {
    /// Summarises `series` (contender name -> samples).
    pub fn new(id: &str, title: &str, unit: &str, higher: bool, cpu_unit: &str, series: Vec<(String, Series)>) -> Self {
        let find = |name: &str| series.iter().find(|(n, _)| n == name).map(|(_, s)| s.values.clone());
        // Port-forwarding metrics compare against iptables DNAT on a bridge instead.
        let (bridge, veth) = (find("bridge").or_else(|| find("iptables")), find("veth"));
        let rows = series
            .iter()
            .map(|(name, s)| Row {
                contender: name.clone(),
                samples: s.values.clone(),
                median: median(&s.values),
                min: s.values.iter().copied().fold(f64::INFINITY, f64::min),
                max: s.values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                vs_bridge: bridge.as_ref().and_then(|b| paired_ratio(&s.values, b)),
                vs_veth: veth.as_ref().and_then(|v| paired_ratio(&s.values, v)),
                cpu: (!s.cpu.is_empty()).then(|| median(&s.cpu)),
                error: s.error.clone(),
            })
            .collect();
        Self {
            id: id.into(),
            title: title.into(),
            unit: unit.into(),
            higher_is_better: higher,
            cpu_unit: cpu_unit.into(),
            rows,
        }
    }

    fn row(&self, contender: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.contender == contender)
    }
}

/// One target of the benchmark issue, checked against this run.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    /// What is compared.
    pub what: String,
    /// The goal, in words.
    pub goal: String,
    /// The measured ratio or value.
    pub measured: Option<f64>,
    /// Whether the goal was met (`None`: not measured in this run).
    pub met: Option<bool>,
}

impl Target {
    /// "met", `missed` (its spelling differs between the terminal and Markdown) or "not
    /// measured".
    fn verdict<'a>(&self, missed: &'a str) -> &'a str {
        match self.met {
            Some(true) => "met",
            Some(false) => missed,
            None => "not measured",
        }
    }
}

/// A whole run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The machine.
    pub machine: Machine,
    /// Rounds per contender.
    pub rounds: usize,
    /// Seconds per tool run.
    pub seconds_per_run: u64,
    /// Results.
    pub metrics: Vec<MetricReport>,
    /// The issue's targets.
    pub targets: Vec<Target>,
}

impl Report {
    /// Builds the report and checks the targets.
    pub fn new(machine: Machine, opts: &Options, metrics: Vec<MetricReport>) -> Self {
        let mut r = Self { machine, rounds: opts.rounds, seconds_per_run: opts.secs, metrics, targets: vec![] };
        r.targets = r.check_targets();
        r
    }

    fn metric(&self, id: &str) -> Option<&MetricReport> {
        self.metrics.iter().find(|m| m.id == id)
    }

    fn check_targets(&self) -> Vec<Target> {
        let ratio = |metric: &str, who: &str, vs_veth: bool| {
            self.metric(metric).and_then(|m| m.row(who)).and_then(|r| if vs_veth { r.vs_veth } else { r.vs_bridge })
        };
        let at_least = |what: &str, goal: f64, m: Option<f64>| Target {
            what: what.into(),
            goal: format!(">= {goal:.2}x"),
            measured: m,
            met: m.map(|m| m >= goal),
        };
        let at_most = |what: &str, goal: f64, m: Option<f64>| Target {
            what: what.into(),
            goal: format!("<= {goal:.2}x"),
            measured: m,
            met: m.map(|m| m <= goal),
        };
        let hundred = self.metric("bringup_100").and_then(|m| m.rows.first()).map(|r| r.median);
        vec![
            at_least("tc TCP throughput vs bare veth", 0.97, ratio("tcp", "tc", true)),
            at_least("tc TCP throughput vs Linux bridge", 1.10, ratio("tcp", "tc", false)),
            at_least("tc 64-byte UDP frame rate vs Linux bridge", 1.20, ratio("udp64", "tc", false)),
            // Twice: with sockets that sleep (what most applications see; a wake-up dominates)
            // and with busy-polling sockets (the path's own latency).
            at_most("tc p50 latency vs Linux bridge (busy polling)", 0.90, ratio("lat_poll_p50", "tc", false)),
            at_most("tc p50 latency vs Linux bridge (sleeping sockets)", 0.90, ratio("lat_p50", "tc", false)),
            at_least("userspace TCP throughput vs Linux bridge", 0.50, ratio("tcp", "userspace", false)),
            Target {
                what: "100 namespaces on a switch".into(),
                goal: "< 3 s".into(),
                measured: hundred,
                met: hundred.map(|s| s < 3.0),
            },
            at_least(
                "eBPF port forward new connections/s vs iptables DNAT",
                1.30,
                ratio("fwd_conn", "ebpf-forward", false),
            ),
            at_least(
                "eBPF port forward TCP throughput vs iptables DNAT",
                1.10,
                ratio("fwd_tcp", "ebpf-forward", false),
            ),
        ]
    }

    /// Plain-text tables for the terminal.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "switch bench: kernel {}, {} CPUs ({}), {} round(s) of {} s, contenders interleaved\n",
            self.machine.kernel, self.machine.cpus, self.machine.cpu_model, self.rounds, self.seconds_per_run
        );
        for m in &self.metrics {
            let _ = writeln!(
                out,
                "{} [{}{}]",
                m.title,
                m.unit,
                if m.higher_is_better { ", higher is better" } else { ", lower is better" }
            );
            let _ = writeln!(
                out,
                "  {:<22} {:>10} {:>21} {:>9} {:>9} {:>12}",
                "contender",
                "median",
                "min - max",
                "x bridge",
                "x veth",
                if m.cpu_unit.is_empty() { "" } else { "cpu" }
            );
            for r in &m.rows {
                if let Some(e) = &r.error {
                    let _ = writeln!(out, "  {:<22} not measured: {e}", r.contender);
                    continue;
                }
                let _ = writeln!(
                    out,
                    "  {:<22} {:>10} {:>21} {:>9} {:>9} {:>12}",
                    r.contender,
                    num(r.median),
                    format!("{} - {}", num(r.min), num(r.max)),
                    r.vs_bridge.map_or("-".into(), |v| format!("{v:.2}")),
                    r.vs_veth.map_or("-".into(), |v| format!("{v:.2}")),
                    r.cpu.map_or(String::new(), num),
                );
            }
            if !m.cpu_unit.is_empty() {
                let _ = writeln!(out, "  (cpu: {} for the whole machine, sender and receiver included)", m.cpu_unit);
            }
            out.push('\n');
        }
        let _ = writeln!(out, "Targets");
        for t in &self.targets {
            let verdict = t.verdict("MISSED");
            let _ = writeln!(
                out,
                "  {:<58} {:>12} {:>10}  {}",
                t.what,
                t.goal,
                t.measured.map_or("-".into(), |m| format!("{m:.3}")),
                verdict
            );
        }
        out
    }

    /// Markdown (for docs/benchmarks.md).
    pub fn to_markdown(&self, command: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# Benchmarks\n");
        let _ = writeln!(
            out,
            "Machine: kernel {}, {} CPUs ({}). Command: `{command}`. {} round(s) of {} s per tool run; contenders interleaved round by round; ratios are medians of per-round ratios.\n",
            self.machine.kernel, self.machine.cpus, self.machine.cpu_model, self.rounds, self.seconds_per_run
        );
        for m in &self.metrics {
            let _ = writeln!(out, "## {}\n", m.title);
            let cpu = if m.cpu_unit.is_empty() { String::new() } else { format!(" {} |", m.cpu_unit) };
            let _ = writeln!(out, "| contender | median ({}) | min - max | x bridge | x veth |{cpu}", m.unit);
            let _ = writeln!(out, "|---|---|---|---|---|{}", if cpu.is_empty() { "" } else { "---|" });
            for r in &m.rows {
                if let Some(e) = &r.error {
                    let _ = writeln!(
                        out,
                        "| {} | not measured: {} | | | |{}",
                        r.contender,
                        e,
                        if cpu.is_empty() { "" } else { " |" }
                    );
                    continue;
                }
                let cpu =
                    if m.cpu_unit.is_empty() { String::new() } else { format!(" {} |", r.cpu.map_or("-".into(), num)) };
                let _ = writeln!(
                    out,
                    "| {} | {} | {} - {} | {} | {} |{cpu}",
                    r.contender,
                    num(r.median),
                    num(r.min),
                    num(r.max),
                    r.vs_bridge.map_or("-".into(), |v| format!("{v:.2}")),
                    r.vs_veth.map_or("-".into(), |v| format!("{v:.2}")),
                );
            }
            out.push('\n');
        }
        let _ = writeln!(out, "## Targets\n\n| target | goal | measured | verdict |\n|---|---|---|---|");
        for t in &self.targets {
            let verdict = t.verdict("**missed**");
            let _ = writeln!(
                out,
                "| {} | {} | {} | {verdict} |",
                t.what,
                t.goal,
                t.measured.map_or("-".into(), |m| format!("{m:.3}"))
            );
        }
        out
    }

    /// An SVG chart: one panel per metric, a bar per contender (median) with a min-max line.
    pub fn to_svg(&self) -> String {
        const W: f64 = 760.0;
        const BAR_H: f64 = 18.0;
        const LEFT: f64 = 190.0;
        let plot_w = W - LEFT - 90.0;
        let mut y = 10.0;
        let mut body = String::new();
        for m in &self.metrics {
            let max = m.rows.iter().filter(|r| !r.samples.is_empty()).map(|r| r.max).fold(0.0_f64, f64::max).max(1e-9);
            let _ = writeln!(
                body,
                r#"<text x="10" y="{:.0}" font-size="14" font-weight="bold">{} [{}]</text>"#,
                y + 14.0,
                esc(&m.title),
                esc(&m.unit)
            );
            y += 24.0;
            for r in &m.rows {
                let (w, lo, hi) = (r.median / max * plot_w, r.min / max * plot_w, r.max / max * plot_w);
                // Baselines grey, this project's contenders blue.
                let baseline = ["bridge", "veth", "iptables"].contains(&r.contender.as_str());
                let color = if baseline || r.contender.starts_with("ip ") { "#999" } else { "#2b6cb0" };
                let _ = writeln!(
                    body,
                    r#"<text x="{:.0}" y="{:.0}" font-size="12" text-anchor="end">{}</text>"#,
                    LEFT - 8.0,
                    y + 13.0,
                    esc(&r.contender)
                );
                if r.samples.is_empty() {
                    let _ =
                        writeln!(body, r#"<text x="{LEFT:.0}" y="{:.0}" font-size="11">not measured</text>"#, y + 13.0);
                    y += BAR_H + 6.0;
                    continue;
                }
                let _ = writeln!(
                    body,
                    r#"<rect x="{LEFT:.0}" y="{y:.0}" width="{w:.1}" height="{BAR_H:.0}" fill="{color}"/>"#
                );
                let mid = y + BAR_H / 2.0;
                let _ = writeln!(
                    body,
                    r#"<line x1="{:.1}" y1="{mid:.1}" x2="{:.1}" y2="{mid:.1}" stroke="black"/>"#,
                    LEFT + lo,
                    LEFT + hi
                );
                let _ = writeln!(
                    body,
                    r#"<text x="{:.1}" y="{:.0}" font-size="11">{}</text>"#,
                    LEFT + w.max(hi) + 6.0,
                    y + 13.0,
                    num(r.median)
                );
                y += BAR_H + 6.0;
            }
            y += 12.0;
        }
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W:.0}\" height=\"{y:.0}\" font-family=\"sans-serif\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{body}</svg>\n"
        )
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Three significant digits.
fn num(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(v: &[f64]) -> Series {
        Series { values: v.to_vec(), ..Series::default() }
    }

    #[test]
    fn medians_and_paired_ratios() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
        let m = MetricReport::new(
            "tcp",
            "t",
            "Gbit/s",
            true,
            "",
            vec![
                ("veth".into(), series(&[20.0, 10.0, 20.0])),
                ("bridge".into(), series(&[10.0, 5.0, 10.0])),
                ("tc".into(), series(&[15.0, 9.0, 18.0])),
            ],
        );
        let tc = m.row("tc").unwrap();
        // Per-round ratios to the bridge: 1.5, 1.8, 1.8 -> median 1.8; to veth 0.75, 0.9, 0.9.
        assert!((tc.vs_bridge.unwrap() - 1.8).abs() < 1e-9);
        assert!((tc.vs_veth.unwrap() - 0.9).abs() < 1e-9);
        assert_eq!((tc.min, tc.max, tc.median), (9.0, 18.0, 15.0));
    }

    #[test]
    fn targets_and_renderings() {
        let opts = Options::quick();
        let tcp = MetricReport::new(
            "tcp",
            "TCP",
            "Gbit/s",
            true,
            "CPU s per GB",
            vec![("veth".into(), series(&[20.0])), ("bridge".into(), series(&[16.0])), ("tc".into(), series(&[19.6]))],
        );
        let r = Report::new(Machine { kernel: "6.18".into(), cpus: 2, cpu_model: "x".into() }, &opts, vec![tcp]);
        let t = &r.targets[0];
        assert_eq!(t.met, Some(true), "{t:?}");
        assert_eq!(r.targets[2].met, None, "udp was not measured");
        assert!(r.to_text().contains("TCP"));
        assert!(r.to_markdown("switch bench").contains("| tc | 19.6 |"));
        let svg = r.to_svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    }
}
