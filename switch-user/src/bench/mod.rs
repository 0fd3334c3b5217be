//! `switch bench`: every contender (bare veth pair, Linux bridge, each datapath of this
//! project) measured in one run, interleaved (A B C A B C ...) so that a noisy neighbour on
//! the shared machine hits them all alike, and reported as medians, min-max and the ratios to
//! each comparison's baselines (the bridge and the bare veth pair; for port forwarding plain
//! routing and iptables DNAT) computed round by round.
//!
//! Each comparison is a [`Comparison`] in a file of its own ([`packets`], [`forward`],
//! [`bringup`], [`cni`], [`podman`], [`overlay`], [`services`], [`cri`], [`ipv6`]); [`COMPARISONS`] lists
//! them in the order a run
//! measures and reports them.
pub mod bringup;
pub mod cni;
pub mod cri;
pub mod forward;
pub mod ipv6;
pub mod overlay;
pub mod ovs;
pub mod packets;
pub mod podman;
pub mod report;
pub mod services;
pub mod tools;
pub mod topology;

use container_env::nat_tables;
use futures::future::BoxFuture;
use indicatif::ProgressBar;
use report::{Machine, MetricReport, Report};

use crate::error::{Error, Result};

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Rounds of every contender.
    pub rounds: usize,
    /// Seconds per tool run.
    pub secs: u64,
    /// Namespace counts for the bring-up comparison.
    pub bringup: Vec<usize>,
    /// Contenders by name, of any comparison (all if empty). A comparison none of whose
    /// contenders is named is left out, and so is the bring-up comparison unless `bringup` is
    /// named (it has no contenders).
    pub only: Vec<String>,
    /// Containers started one after another per network and round (podman comparison).
    pub pod_starts: usize,
    /// Containers started at once per network and round.
    pub pod_parallel: usize,
}

impl Options {
    /// Smoke run: one round of one second each, bring-up of 10, 5 podman starts one after
    /// another and 10 at once (well under 3 minutes).
    pub fn quick() -> Self {
        Self { rounds: 1, secs: 1, bringup: vec![10], only: vec![], pod_starts: 5, pod_parallel: 10 }
    }

    /// Full run: 3 rounds of 5 s, bring-up of 10 and 100, 50 podman starts one after another
    /// and 50 at once (well under 20 minutes).
    pub fn full() -> Self {
        Self { rounds: 3, secs: 5, bringup: vec![10, 100], only: vec![], pod_starts: 50, pod_parallel: 50 }
    }

    fn named(&self, name: &str) -> bool {
        self.only.iter().any(|o| o == name)
    }

    /// Checks that `only` names known contenders (or comparisons).
    fn check(&self) -> Result<()> {
        // Every contender, then the names of whole comparisons (the podman comparison's
        // first, as the list has always been written).
        let known = || {
            COMPARISONS.iter().flat_map(|c| c.contenders()).chain(COMPARISONS.iter().rev().filter_map(|c| c.alias()))
        };
        if let Some(name) = self.only.iter().find(|o| !known().any(|k| k == *o)) {
            let known: Vec<&str> = known().collect();
            return Err(Error::invalid("contender", name.clone(), format!("known: {}", known.join(", "))));
        }
        Ok(())
    }

    /// Whether comparison `c` runs: all do when `only` is empty, else those it names a
    /// contender of, or the comparison itself.
    fn runs(&self, c: &dyn Comparison) -> bool {
        self.only.is_empty() || c.contenders().iter().chain(&c.alias()).any(|n| self.named(n))
    }
}

/// One comparison: its contenders built side by side, measured interleaved round by round
/// (a noisy neighbour hits them all alike), reported as metrics with ratios to its baselines.
#[async_trait::async_trait]
pub trait Comparison: Sync {
    /// Its contenders' names, as reports and `--only` know them.
    fn contenders(&self) -> Vec<&'static str>;

    /// The name `--only` knows the whole comparison by, if it has one.
    fn alias(&self) -> Option<&'static str> {
        None
    }

    /// How many progress steps a run of it takes.
    fn steps(&self, opts: &Options) -> usize;

    /// Builds its contenders, measures them and removes them again; its metrics.
    async fn run(&self, opts: &Options, bar: &ProgressBar) -> Result<Vec<MetricReport>>;

    /// Removes whatever an interrupted run of it left; nothing there is fine.
    async fn remove(&self);
}

/// Every comparison, in the order a run measures and reports them.
pub const COMPARISONS: [&dyn Comparison; 9] = [
    &packets::Packets,
    &forward::Forwarding,
    &bringup::Bringup,
    &cni::Cni,
    &podman::Containers,
    &overlay::Overlays,
    &services::Services,
    &cri::Cri,
    &ipv6::Ipv6,
];

/// The machine's one benchmark run: held for a whole run (its interfaces, namespaces and
/// switches have fixed names, so two runs at once would tear down each other's contenders).
pub struct Exclusive {
    _lock: std::fs::File,
}

/// Takes the benchmark lock, or says that another run holds it.
pub fn exclusive() -> Result<Exclusive> {
    use std::os::fd::AsRawFd as _;
    let dir = std::path::Path::new(crate::sys::host::STATE_DIR);
    crate::sys::files::private_dir(dir)?;
    let file = crate::sys::files::open_private(&dir.join("bench.lock"), false)?;
    // SAFETY: flock on a descriptor we own; released when the file closes.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(Error::Command(
            "another 'switch bench' runs on this machine (its contenders have fixed names); wait for it to finish"
                .into(),
        ));
    }
    Ok(Exclusive { _lock: file })
}

/// Removes whatever an interrupted run left: every comparison's contenders. Nothing there is
/// fine.
pub async fn cleanup() {
    for c in COMPARISONS {
        c.remove().await;
    }
}

/// Samples of one contender for one metric, with the CPU it cost.
#[derive(Default, Clone)]
pub struct Series {
    pub values: Vec<f64>,
    pub cpu: Vec<f64>,
    /// Set when the tool failed on this contender: the metric is reported as not measured
    /// for it (with this reason) and the rest of the run goes on.
    pub error: Option<String>,
}

impl Series {
    /// Records one run of a tool: its sample, or why it failed. One failure leaves the metric
    /// not measured for this contender (earlier samples dropped, later runs skipped) and the
    /// rest of the run goes on, as in `measure_all`.
    fn record(&mut self, result: Result<f64>, what: &str, bar: &ProgressBar) {
        match result {
            Ok(v) => self.values.push(v),
            Err(e) => {
                bar.println(format!("{what}: not measured: {e}"));
                *self = Series { error: Some(e.to_string()), ..Series::default() };
            }
        }
    }
}

/// Measures `N` metrics of `contenders` contenders round by round, interleaved (each
/// round measures every contender's metrics in turn): `run(contender, metric)` gives the
/// progress message, the name a failure is reported under, and the measurement. A failure
/// leaves that metric not measured for that contender, and the rest of the run goes on.
/// Returns the samples by metric, then by contender.
async fn interleaved<'a, const N: usize>(
    opts: &Options,
    bar: &ProgressBar,
    contenders: usize,
    run: impl Fn(usize, usize) -> (String, String, BoxFuture<'a, Result<f64>>),
) -> [Vec<Series>; N] {
    let mut s: [Vec<Series>; N] = std::array::from_fn(|_| vec![Series::default(); contenders]);
    for round in 1..=opts.rounds {
        for c in 0..contenders {
            for (m, metric) in s.iter_mut().enumerate() {
                if metric[c].error.is_none() {
                    let (message, what, measure) = run(c, m);
                    bar.set_message(format!("round {round}/{}: {message}", opts.rounds));
                    metric[c].record(measure.await, &what, bar);
                }
                bar.inc(1);
            }
        }
    }
    s
}

/// Runs the benchmark. `bar` shows progress (hidden for `--json`).
pub async fn run(opts: &Options, bar: &ProgressBar) -> Result<Report> {
    // The classic recipe's forward baseline and the podman contenders add nat rules, and
    // iptables leaves the table it made for them, tracking every connection of the host from
    // then on (container-env/src/nat_tables.rs): given back at the end, whatever the run's outcome.
    let nat_before = tokio::task::spawn_blocking(nat_tables::existing).await.unwrap_or_default();
    let report = run_all(opts, bar).await;
    let given_back = tokio::task::spawn_blocking(move || nat_tables::remove_unused(&nat_before)).await;
    if let Err(e) = given_back.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())) {
        bar.println(format!("the nat table the run made stays: {e}"));
    }
    report
}

async fn run_all(opts: &Options, bar: &ProgressBar) -> Result<Report> {
    opts.check()?;
    let comparisons: Vec<&dyn Comparison> = COMPARISONS.into_iter().filter(|c| opts.runs(*c)).collect();
    bar.set_length(comparisons.iter().map(|c| c.steps(opts) as u64).sum());
    let mut metrics: Vec<MetricReport> = vec![];
    for c in comparisons {
        metrics.extend(c.run(opts, bar).await?);
    }
    bar.finish_and_clear();
    Ok(Report::new(Machine::read(), opts, metrics))
}

/// Runs `program ARGS`, failing with its stderr.
pub(super) async fn run_quiet(program: &str, args: &[&str]) -> Result<()> {
    output(program, args).await.map(drop)
}

/// Runs `program ARGS` and returns its stdout, failing with its stderr.
pub(super) async fn output(program: &str, args: &[&str]) -> Result<String> {
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    command_output(cmd).await
}

/// Runs `cmd` (with whatever environment it was given) and returns its stdout, failing with
/// its stderr.
pub(super) async fn command_output(cmd: std::process::Command) -> Result<String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    let out = tokio::process::Command::from(cmd)
        .output()
        .await
        .map_err(|e| Error::Command(format!("running {program}: {e}")))?;
    if !out.status.success() {
        return Err(Error::Command(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(names: &[&str]) -> Options {
        Options { only: names.iter().map(|n| n.to_string()).collect(), ..Options::full() }
    }

    /// The comparisons `opts` runs, by their first contender (or name).
    fn runs(opts: &Options) -> Vec<&'static str> {
        COMPARISONS
            .iter()
            .filter(|c| opts.runs(**c))
            .map(|c| c.contenders().first().copied().or(c.alias()).unwrap())
            .collect()
    }

    #[test]
    fn only_runs_the_comparisons_it_names_with_their_baselines() {
        let all = Options::full();
        assert_eq!(
            runs(&all),
            [
                "veth",
                "routed",
                "bringup",
                "switch-cni",
                "podman-switch-cni",
                "switch-vxlan",
                "tc-no-rules",
                "cri-switch-cni",
                "veth6"
            ]
        );
        assert_eq!(packets::Packets.steps(&all), 3 * topology::ALL.len() * 4 + topology::ALL.len());

        let forwarding = only(&["ebpf-forward"]);
        assert_eq!(runs(&forwarding), ["routed"]);
        assert_eq!(packets::Packets.steps(&forwarding), 0, "no per-packet contender");

        let tc = only(&["tc"]);
        assert_eq!(runs(&tc), ["veth"]);
        assert_eq!(packets::Packets.steps(&tc), 3 * 3 * 4 + 3, "veth, bridge, tc");

        let both = only(&["routed", "tc-open"]);
        assert_eq!(runs(&both), ["veth", "routed"]);

        for name in ["podman", "podman-switch-cni", "podman-bridge"] {
            assert_eq!(runs(&only(&[name])), ["podman-switch-cni"], "{name}");
        }
        assert_eq!(runs(&only(&["bringup"])), ["bringup"]);
        for name in ["services", "tc-services", "bridge-services"] {
            assert_eq!(runs(&only(&[name])), ["tc-no-rules"], "{name}");
        }
        for name in ["ipv6", "tc6", "bridge6"] {
            assert_eq!(runs(&only(&[name])), ["veth6"], "{name}");
        }
        for name in ["cri", "cri-switch-cni", "cri-bridge"] {
            assert_eq!(runs(&only(&[name])), ["cri-switch-cni"], "{name}");
        }

        let unknown = only(&["tc", "nat"]).check().unwrap_err().to_string();
        assert!(unknown.contains("nat") && unknown.contains("ebpf-forward"), "{unknown}");
        assert!(
            unknown.ends_with("cri-switch-cni, cri-bridge, veth6, bridge6, tc6, ipv6, cri, services, podman, bringup"),
            "{unknown}"
        );
    }

    #[test]
    fn a_failed_run_leaves_the_metric_not_measured() {
        let (bar, mut s) = (ProgressBar::hidden(), Series::default());
        s.record(Ok(1.0), "TCP", &bar);
        s.record(Err(Error::Command("iperf3 failed".into())), "TCP", &bar);
        assert!(s.values.is_empty(), "no median from the rounds before the failure");
        assert_eq!(s.error.as_deref(), Some("iperf3 failed"));
    }
}
