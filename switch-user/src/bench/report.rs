//! Benchmark results: medians, spreads and ratios, the issue's targets, and the renderings
//! (terminal table, JSON, Markdown, SVG chart).
use std::{collections::BTreeMap, fmt::Write as _};

use serde::Serialize;

use super::{
    Options, Series,
    bringup::{BRINGUP_CLASSIC, BRINGUP_OURS, REMOVAL_OURS},
};

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
    /// By baseline (see `MetricReport::baselines`): median over rounds of (this / baseline in
    /// the same round). A baseline without samples in this run has no entry.
    pub vs: BTreeMap<String, f64>,
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
    /// The contenders every row is compared with (`Row::vs`), in the order the tables show
    /// them: each comparison names its own (the bridge and the bare veth pair, plain routing
    /// and iptables for port forwarding), so no name is special here.
    pub baselines: Vec<String>,
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
    /// Summarises `series` (contender name -> samples), with ratios to the contenders named in
    /// `baselines`.
    pub fn new(
        id: &str,
        title: &str,
        unit: &str,
        higher: bool,
        cpu_unit: &str,
        baselines: &[&str],
        series: Vec<(String, Series)>,
    ) -> Self {
        let samples = |name: &str| series.iter().find(|(n, _)| n == name).map(|(_, s)| &s.values);
        let rows = series
            .iter()
            .map(|(name, s)| Row {
                contender: name.clone(),
                samples: s.values.clone(),
                median: median(&s.values),
                min: s.values.iter().copied().fold(f64::INFINITY, f64::min),
                max: s.values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                vs: baselines
                    .iter()
                    .filter_map(|b| Some((b.to_string(), paired_ratio(&s.values, samples(b)?)?)))
                    .collect(),
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
            baselines: baselines.iter().map(|b| b.to_string()).collect(),
            rows,
        }
    }

    /// The ratio columns' headings.
    fn ratio_headings(&self) -> impl Iterator<Item = String> + '_ {
        self.baselines.iter().map(|b| format!("x {b}"))
    }

    fn row(&self, contender: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.contender == contender)
    }
}

impl Row {
    /// The row's ratios in `m`'s column order, "-" where there is none.
    fn ratio_cells(&self, m: &MetricReport) -> Vec<String> {
        m.baselines.iter().map(|b| self.vs.get(b).map_or("-".into(), |v| format!("{v:.2}"))).collect()
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

/// How a target reads its measurement from a run: (metric id, contender) pairs.
#[derive(Clone, Copy, Debug)]
enum Measure {
    /// The contender's ratio to a baseline (the median of per-round ratios).
    Ratio(&'static str, &'static str, &'static str),
    /// The contender's median.
    Median(&'static str, &'static str),
    /// One median over another.
    MedianRatio((&'static str, &'static str), (&'static str, &'static str)),
    /// The sum of every sample: every round counts.
    Sum(&'static str, &'static str),
}

/// A target's goal.
#[derive(Clone, Copy, Debug)]
enum Goal {
    /// A ratio of at least this.
    AtLeast(f64),
    /// A ratio of at most this.
    AtMost(f64),
    /// A value below this, in this unit.
    Under(f64, &'static str),
    /// Nothing at all (a count).
    Zero,
}

impl Goal {
    fn text(self) -> String {
        match self {
            Goal::AtLeast(g) => format!(">= {g:.2}x"),
            Goal::AtMost(g) => format!("<= {g:.2}x"),
            Goal::Under(g, unit) => format!("< {g} {unit}"),
            Goal::Zero => "none".into(),
        }
    }

    fn met(self, m: f64) -> bool {
        match self {
            Goal::AtLeast(g) => m >= g,
            Goal::AtMost(g) => m <= g,
            Goal::Under(g, _) => m < g,
            Goal::Zero => m == 0.0,
        }
    }
}

/// The issue's targets, in the order reports list them.
const TARGETS: [(&str, Goal, Measure); 28] = {
    use Goal::*;
    use Measure::*;
    const POD: &str = super::podman::CONTENDERS[0];
    const VXLAN: &str = super::overlay::CONTENDERS[0];
    use super::services::{BRIDGE, NO_RULES, WITH_RULES};
    [
        ("tc TCP throughput vs bare veth", AtLeast(0.97), Ratio("tcp", "tc", "veth")),
        ("tc TCP throughput vs Linux bridge", AtLeast(1.10), Ratio("tcp", "tc", "bridge")),
        ("tc 64-byte UDP frame rate vs Linux bridge", AtLeast(1.20), Ratio("udp64", "tc", "bridge")),
        // Twice: with sockets that sleep (what most applications see; a wake-up dominates) and
        // with busy-polling sockets (the path's own latency).
        ("tc p50 latency vs Linux bridge (busy polling)", AtMost(0.90), Ratio("lat_poll_p50", "tc", "bridge")),
        ("tc p50 latency vs Linux bridge (sleeping sockets)", AtMost(0.90), Ratio("lat_p50", "tc", "bridge")),
        // The userspace engine (issue 15): small frames and latency against the bridge.
        ("userspace TCP throughput vs Linux bridge", AtLeast(0.90), Ratio("tcp", "userspace", "bridge")),
        ("userspace 64-byte UDP frame rate vs Linux bridge", AtLeast(0.60), Ratio("udp64", "userspace", "bridge")),
        (
            "userspace p50 latency vs Linux bridge (busy polling)",
            AtMost(2.00),
            Ratio("lat_poll_p50", "userspace", "bridge"),
        ),
        // Against the peer a user would pick for a switch in userspace, where per-frame cost
        // shows.
        (
            "userspace 64-byte UDP frame rate vs Open vSwitch userspace",
            AtLeast(1.30),
            Ratio("udp64", "userspace", super::topology::OVS),
        ),
        ("100 namespaces on a switch", Under(3.0, "s"), Median("bringup_100", BRINGUP_OURS)),
        (
            "bring-up of 100 namespaces vs ip commands + bridge",
            AtMost(1.00),
            Ratio("bringup_100", BRINGUP_OURS, BRINGUP_CLASSIC),
        ),
        // Removal against our own bring-up: taking a port out costs no more than making it.
        (
            "removal of 100 namespaces (down) vs their bring-up",
            AtMost(1.00),
            MedianRatio(("removal_100", REMOVAL_OURS), ("bringup_100", BRINGUP_OURS)),
        ),
        (
            "eBPF port forward new connections/s vs iptables DNAT",
            AtLeast(1.30),
            Ratio("fwd_conn", "ebpf-forward", "iptables"),
        ),
        (
            "eBPF port forward TCP throughput vs iptables DNAT",
            AtLeast(1.10),
            Ratio("fwd_tcp", "ebpf-forward", "iptables"),
        ),
        // Against the limit: what the forward costs over reaching the server at all.
        (
            "eBPF port forward TCP throughput vs plain routing",
            AtLeast(0.95),
            Ratio("fwd_tcp", "ebpf-forward", "routed"),
        ),
        (
            "eBPF port forward new connections/s vs plain routing",
            AtLeast(0.95),
            Ratio("fwd_conn", "ebpf-forward", "routed"),
        ),
        ("switch-cni ADD vs the bridge plugin", AtMost(1.00), Ratio("cni_add", "switch-cni", "bridge-cni")),
        ("switch-cni ADD (median)", Under(20.0, "ms"), Median("cni_add", "switch-cni")),
        (
            "podman -p new connections/s: switch-cni vs bridge+portmap",
            AtLeast(1.15),
            Ratio("pod_port_conn", POD, super::podman::BASELINE),
        ),
        ("podman starts at once on switch-cni, failed (all rounds)", Zero, Sum("pod_parallel_failed", POD)),
        (
            "TCP across hosts: switch over VXLAN vs bridge + VXLAN",
            AtLeast(1.10),
            Ratio("vxlan_tcp", VXLAN, super::overlay::BASELINE),
        ),
        (
            "64-byte UDP across hosts: switch over VXLAN vs bridge + VXLAN",
            AtLeast(1.20),
            Ratio("vxlan_udp64", VXLAN, super::overlay::BASELINE),
        ),
        // Services (issue 24): the rules of 100 Services on the node and a flow the host
        // translated into the segment cost pod-to-pod traffic on the switch next to nothing.
        ("tc pod-to-pod TCP, 100 Services' rules vs none", AtLeast(0.97), Ratio("svc_pod_tcp", WITH_RULES, NO_RULES)),
        (
            "tc pod-to-pod 64-byte UDP, 100 Services' rules vs none",
            AtLeast(0.97),
            Ratio("svc_pod_udp64", WITH_RULES, NO_RULES),
        ),
        // A pod to a ClusterIP on its segment: the switch no worse than the bridge, which
        // needs br_netfilter for it at all.
        ("pod to ClusterIP TCP: tc vs bridge + br_netfilter", AtLeast(1.00), Ratio("svc_tcp", WITH_RULES, BRIDGE)),
        (
            "pod to ClusterIP new conn/s: tc vs bridge + br_netfilter",
            AtLeast(1.00),
            Ratio("svc_conn", WITH_RULES, BRIDGE),
        ),
        // IPv6 (issue 25): the same ratios as IPv4 expected.
        ("tc IPv6 TCP throughput vs Linux bridge", AtLeast(1.10), Ratio("ipv6_tcp", "tc6", "bridge6")),
        ("tc IPv6 64-byte UDP frame rate vs Linux bridge", AtLeast(1.20), Ratio("ipv6_udp64", "tc6", "bridge6")),
    ]
};

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
        TARGETS
            .iter()
            .map(|(what, goal, measure)| {
                let measured = self.measure(*measure);
                Target { what: (*what).into(), goal: goal.text(), measured, met: measured.map(|m| goal.met(m)) }
            })
            .collect()
    }

    /// Contender `who`'s row of metric `metric`, if both were measured in this run.
    fn row_of(&self, metric: &str, who: &str) -> Option<&Row> {
        self.metric(metric).and_then(|m| m.row(who))
    }

    fn measure(&self, measure: Measure) -> Option<f64> {
        match measure {
            Measure::Ratio(metric, who, baseline) => self.row_of(metric, who).and_then(|r| r.vs.get(baseline).copied()),
            Measure::Median(metric, who) => self.row_of(metric, who).map(|r| r.median),
            Measure::MedianRatio((metric, who), (per_metric, per_who)) => {
                let (a, b) =
                    (self.measure(Measure::Median(metric, who)), self.measure(Measure::Median(per_metric, per_who)));
                a.zip(b).map(|(a, b)| a / b)
            }
            Measure::Sum(metric, who) => {
                self.row_of(metric, who).filter(|r| !r.samples.is_empty()).map(|r| r.samples.iter().sum::<f64>())
            }
        }
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
            // A ratio column is as wide as its heading, at least 9.
            let headings: Vec<String> = m.ratio_headings().collect();
            let line = |out: &mut String, name: &str, median: &str, range: &str, ratios: &[String], cpu: &str| {
                let mut line = format!("  {name:<22} {median:>10} {range:>21}");
                for (h, v) in headings.iter().zip(ratios) {
                    let _ = write!(line, " {v:>w$}", w = h.len().max(9));
                }
                let _ = write!(line, " {cpu:>12}");
                let _ = writeln!(out, "{}", line.trim_end());
            };
            let cpu = if m.cpu_unit.is_empty() { "" } else { "cpu" };
            line(&mut out, "contender", "median", "min - max", &headings, cpu);
            for r in &m.rows {
                if let Some(e) = &r.error {
                    let _ = writeln!(out, "  {:<22} not measured: {e}", r.contender);
                    continue;
                }
                let range = format!("{} - {}", num(r.min), num(r.max));
                let cpu = r.cpu.map_or(String::new(), num);
                line(&mut out, &r.contender, &num(r.median), &range, &r.ratio_cells(m), &cpu);
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
        let md_row = |out: &mut String, cells: Vec<String>| {
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        };
        for m in &self.metrics {
            let _ = writeln!(out, "## {}\n", m.title);
            let has_cpu = !m.cpu_unit.is_empty();
            let mut heading = vec!["contender".to_owned(), format!("median ({})", m.unit), "min - max".into()];
            heading.extend(m.ratio_headings());
            heading.extend(has_cpu.then(|| m.cpu_unit.clone()));
            let columns = heading.len();
            md_row(&mut out, heading);
            let _ = writeln!(out, "|{}", "---|".repeat(columns));
            for r in &m.rows {
                let mut cells = vec![r.contender.clone()];
                if let Some(e) = &r.error {
                    cells.push(format!("not measured: {e}"));
                    cells.resize(columns, String::new());
                } else {
                    cells.push(num(r.median));
                    cells.push(format!("{} - {}", num(r.min), num(r.max)));
                    cells.extend(r.ratio_cells(m));
                    cells.extend(has_cpu.then(|| r.cpu.map_or("-".into(), num)));
                }
                md_row(&mut out, cells);
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
                let color = if m.baselines.contains(&r.contender) { "#999" } else { "#2b6cb0" };
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
            &["bridge", "veth"],
            vec![
                ("veth".into(), series(&[20.0, 10.0, 20.0])),
                ("bridge".into(), series(&[10.0, 5.0, 10.0])),
                ("tc".into(), series(&[15.0, 9.0, 18.0])),
            ],
        );
        let tc = m.row("tc").unwrap();
        // Per-round ratios to the bridge: 1.5, 1.8, 1.8 -> median 1.8; to veth 0.75, 0.9, 0.9.
        assert!((tc.vs["bridge"] - 1.8).abs() < 1e-9);
        assert!((tc.vs["veth"] - 0.9).abs() < 1e-9);
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
            &["bridge", "veth"],
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

    #[test]
    fn ratios_to_each_named_baseline() {
        let fwd = |id: &str, [routed, iptables, ebpf]: [f64; 3]| {
            let rows = [("routed", routed), ("iptables", iptables), ("ebpf-forward", ebpf)]
                .map(|(name, v)| (name.to_owned(), series(&[v, v])))
                .to_vec();
            MetricReport::new(id, id, "Gbit/s", true, "", &["routed", "iptables"], rows)
        };
        let (tcp, conn) = (fwd("fwd_tcp", [20.0, 16.0, 19.6]), fwd("fwd_conn", [40.0, 27.0, 36.0]));
        let ebpf = conn.row("ebpf-forward").unwrap();
        assert_eq!(ebpf.vs.len(), 2);
        assert!((ebpf.vs["routed"] - 0.9).abs() < 1e-9 && (ebpf.vs["iptables"] - 36.0 / 27.0).abs() < 1e-9);
        let json = serde_json::to_value(ebpf).unwrap();
        assert_eq!(json["vs"]["routed"].as_f64(), Some(0.9), "{json}");

        let machine = Machine { kernel: "6.18".into(), cpus: 2, cpu_model: "x".into() };
        let r = Report::new(machine, &Options::quick(), vec![tcp, conn]);
        let target = |what: &str| r.targets.iter().find(|t| t.what == what).unwrap_or_else(|| panic!("{what}"));
        let tcp_routed = target("eBPF port forward TCP throughput vs plain routing");
        assert_eq!((tcp_routed.goal.as_str(), tcp_routed.met), (">= 0.95x", Some(true)));
        assert!((tcp_routed.measured.unwrap() - 0.98).abs() < 1e-9);
        assert_eq!(target("eBPF port forward new connections/s vs plain routing").met, Some(false), "0.90");
        assert_eq!(target("eBPF port forward TCP throughput vs iptables DNAT").met, Some(true));
        assert_eq!(target("tc TCP throughput vs bare veth").met, None, "not measured in this run");

        // Every table has one ratio column per baseline of its own, headed by its name.
        let text = r.to_text();
        assert!(
            text.contains("  contender                  median             min - max  x routed x iptables\n"),
            "{text}"
        );
        let md = r.to_markdown("switch bench");
        assert!(
            md.contains("| contender | median (Gbit/s) | min - max | x routed | x iptables |\n|---|---|---|---|---|\n")
        );
        assert!(md.contains("| ebpf-forward | 36.0 | 36.0 - 36.0 | 0.90 | 1.33 |"), "{md}");
        // Baselines grey: two per metric.
        assert_eq!(r.to_svg().matches("fill=\"#999\"").count(), 4);
    }

    #[test]
    fn userspace_against_open_vswitch() {
        let udp = |userspace: &[f64]| {
            let rows = [("veth", [900.0, 900.0]), ("bridge", [500.0, 520.0]), ("ovs", [200.0, 250.0])]
                .map(|(name, v)| (name.to_owned(), series(&v)))
                .into_iter()
                .chain([("userspace".to_owned(), series(userspace))])
                .collect();
            MetricReport::new("udp64", "udp64", "kframes/s", true, "", &["bridge", "veth", "ovs"], rows)
        };
        let machine = || Machine { kernel: "6.18".into(), cpus: 2, cpu_model: "x".into() };
        let what = "userspace 64-byte UDP frame rate vs Open vSwitch userspace";
        let target = |r: &Report| r.targets.iter().find(|t| t.what == what).cloned().expect("the target");
        // Per-round ratios 1.5 and 1.2: median 1.35.
        let r = Report::new(machine(), &Options::quick(), vec![udp(&[300.0, 300.0])]);
        let t = target(&r);
        assert!((t.measured.unwrap() - 1.35).abs() < 1e-9, "{t:?}");
        assert_eq!((t.goal.as_str(), t.met), (">= 1.30x", Some(true)));
        assert!(r.to_markdown("switch bench").contains("| userspace | 300 | 300 - 300 | 0.59 | 0.33 | 1.35 |"));
        assert!(r.to_text().contains("x ovs"));
        let r = Report::new(machine(), &Options::quick(), vec![udp(&[250.0, 300.0])]);
        assert_eq!(target(&r).met, Some(false), "1.25 and 1.2");
        // Open vSwitch not measured (not installed): no ratio, no verdict.
        let failed = Series { error: Some("not installed".into()), ..Series::default() };
        let rows =
            vec![("bridge".into(), series(&[500.0])), ("ovs".into(), failed), ("userspace".into(), series(&[300.0]))];
        let m = MetricReport::new("udp64", "udp64", "kframes/s", true, "", &["bridge", "veth", "ovs"], rows);
        let t = target(&Report::new(machine(), &Options::quick(), vec![m]));
        assert_eq!((t.measured, t.met), (None, None));
    }

    #[test]
    fn podman_targets() {
        let pods = |id: &str, ours: &[f64], theirs: &[f64]| {
            let rows = vec![("podman-switch-cni".into(), series(ours)), ("podman-bridge".into(), series(theirs))];
            MetricReport::new(id, id, "", true, "", &["podman-bridge"], rows)
        };
        let machine = Machine { kernel: "6.18".into(), cpus: 2, cpu_model: "x".into() };
        let metrics = vec![
            pods("pod_port_conn", &[24.0, 23.0], &[20.0, 20.0]),
            pods("pod_parallel_failed", &[0.0, 1.0], &[0.0, 0.0]),
        ];
        let r = Report::new(machine, &Options::quick(), metrics);
        let target =
            |what: &str| r.targets.iter().find(|t| t.what.starts_with(what)).unwrap_or_else(|| panic!("{what}"));
        let conn = target("podman -p new connections/s");
        assert!((conn.measured.unwrap() - 1.175).abs() < 1e-9, "median of 1.20 and 1.15: {conn:?}");
        assert_eq!(conn.met, Some(true));
        let failed = target("podman starts at once on switch-cni");
        assert_eq!((failed.measured, failed.met), (Some(1.0), Some(false)), "one failure in one round misses it");
    }

    #[test]
    fn a_baseline_not_measured_gives_no_ratio() {
        let failed = Series { error: Some("iperf3 failed".into()), ..Series::default() };
        let m = MetricReport::new(
            "tcp",
            "TCP",
            "Gbit/s",
            true,
            "",
            &["bridge", "veth"],
            vec![("veth".into(), failed), ("bridge".into(), series(&[10.0])), ("tc".into(), series(&[12.0]))],
        );
        let tc = m.row("tc").unwrap();
        assert_eq!(tc.vs.keys().collect::<Vec<_>>(), ["bridge"]);
        assert_eq!(tc.ratio_cells(&m), ["1.20", "-"]);
    }
}
