//! The bring-up and removal comparisons: `n` namespaces brought up on a switch (one `switch ns
//! add` process each, as a user would) and removed again (`switch down`), against the same
//! with `ip` commands and a Linux bridge, interleaved per round.
use std::time::{Duration, Instant};

use indicatif::ProgressBar;

use super::{Comparison, Options, Series, report::MetricReport, run_quiet};
use crate::error::{Error, Result};

/// The bring-up and removal comparisons, for each namespace count of `Options::bringup`.
pub struct Bringup;

#[async_trait::async_trait]
impl Comparison for Bringup {
    fn contenders(&self) -> Vec<&'static str> {
        vec![]
    }

    fn alias(&self) -> Option<&'static str> {
        Some(BRINGUP)
    }

    fn steps(&self, opts: &Options) -> usize {
        opts.rounds * opts.bringup.len() * 2
    }

    async fn run(&self, opts: &Options, bar: &ProgressBar) -> Result<Vec<MetricReport>> {
        bringup(opts, bar).await
    }

    async fn remove(&self) {
        let _ = crate::controller::switch::down(BRINGUP_SWITCH).await;
        for i in 0..BRINGUP_MAX {
            let _ = run_quiet("ip", &["netns", "del", &format!("benchi{i}")]).await;
        }
        let _ = run_quiet("ip", &["link", "del", "benchbr"]).await;
    }
}

/// The switch the bring-up comparison builds.
const BRINGUP_SWITCH: &str = "benchup";
/// The name `--only` knows the bring-up and removal comparisons by.
const BRINGUP: &str = "bringup";
/// The baseline of the bring-up comparison.
pub(crate) const BRINGUP_CLASSIC: &str = "ip commands + bridge";
/// Our contenders in the bring-up and removal comparisons.
pub(crate) const BRINGUP_OURS: &str = "switch ns add (tc)";
pub(crate) const REMOVAL_OURS: &str = "switch down (tc)";
/// The most namespaces a bring-up comparison makes.
const BRINGUP_MAX: usize = 100;

/// Time to bring up `n` namespaces on a switch (one `switch ns add` process each, as a user
/// would) and to remove them again (`switch down`), against the same with `ip` commands and a
/// Linux bridge, interleaved per round.
async fn bringup(opts: &Options, bar: &ProgressBar) -> Result<Vec<MetricReport>> {
    let mut out = vec![];
    for &n in &opts.bringup {
        let (mut ours, mut classic) = ([Series::default(), Series::default()], [Series::default(), Series::default()]);
        for round in 1..=opts.rounds {
            bar.set_message(format!("round {round}/{}: {n} namespaces with switch", opts.rounds));
            let (up, down) = bringup_switch(n).await?;
            ours[0].values.push(up.as_secs_f64());
            ours[1].values.push(down.as_secs_f64());
            bar.inc(1);
            bar.set_message(format!("round {round}/{}: {n} namespaces with ip + bridge", opts.rounds));
            let (up, down) = bringup_ip(n).await?;
            classic[0].values.push(up.as_secs_f64());
            classic[1].values.push(down.as_secs_f64());
            bar.inc(1);
        }
        let [ours_up, ours_down] = ours;
        let [classic_up, classic_down] = classic;
        out.push(MetricReport::new(
            if n >= 100 { "bringup_100" } else { "bringup_10" },
            &format!("Bring-up of {n} namespaces on a switch"),
            "s",
            false,
            "",
            &[BRINGUP_CLASSIC],
            vec![(BRINGUP_OURS.into(), ours_up), (BRINGUP_CLASSIC.into(), classic_up)],
        ));
        out.push(MetricReport::new(
            if n >= 100 { "removal_100" } else { "removal_10" },
            &format!("Removal of {n} namespaces from a switch (until their interfaces are gone)"),
            "s",
            false,
            "",
            &[BRINGUP_CLASSIC],
            vec![(REMOVAL_OURS.into(), ours_down), (BRINGUP_CLASSIC.into(), classic_down)],
        ));
    }
    Ok(out)
}

/// Brings up `n` namespaces on a fresh switch, then takes the switch down: how long each took.
async fn bringup_switch(n: usize) -> Result<(Duration, Duration)> {
    let exe = std::env::current_exe().map_err(|e| Error::Command(format!("finding the switch binary: {e}")))?;
    let exe = exe.to_string_lossy().into_owned();
    let _ = crate::controller::switch::down(BRINGUP_SWITCH).await;
    run_quiet(&exe, &["up", "--switch", BRINGUP_SWITCH]).await?;
    let start = Instant::now();
    for i in 0..n {
        let (ns, ip) = (format!("benchu{i}"), format!("10.201.{}.{}/16", i / 250, i % 250 + 1));
        run_quiet(&exe, &["ns", "add", &ns, "--ip", &ip, "--switch", BRINGUP_SWITCH]).await?;
    }
    let up = start.elapsed();
    let start = Instant::now();
    run_quiet(&exe, &["down", "--switch", BRINGUP_SWITCH]).await?;
    Ok((up, start.elapsed()))
}

/// The same with `ip` and a Linux bridge; removal is `ip netns del` of each namespace, which
/// returns before the kernel has destroyed it, so the clock stops when their veths are gone.
async fn bringup_ip(n: usize) -> Result<(Duration, Duration)> {
    let remove = || async {
        for i in 0..n {
            let _ = run_quiet("ip", &["netns", "del", &format!("benchi{i}")]).await;
        }
        let _ = run_quiet("ip", &["link", "del", "benchbr"]).await;
        let nl = crate::sys::netlink::Netlink::new()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while nl.links().await?.keys().any(|l| l.starts_with("benchv")) {
            if Instant::now() > deadline {
                return Err(Error::Command("the classic recipe's veths did not go within 30 s".into()));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(())
    };
    remove().await?;
    let start = Instant::now();
    run_quiet("ip", &["link", "add", "benchbr", "type", "bridge"]).await?;
    run_quiet("ip", &["link", "set", "benchbr", "up"]).await?;
    for i in 0..n {
        let (ns, host, ip) =
            (format!("benchi{i}"), format!("benchv{i}"), format!("10.202.{}.{}/16", i / 250, i % 250 + 1));
        run_quiet("ip", &["netns", "add", &ns]).await?;
        run_quiet("ip", &["link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &ns]).await?;
        run_quiet("ip", &["link", "set", &host, "master", "benchbr", "up"]).await?;
        run_quiet("ip", &["-n", &ns, "addr", "add", &ip, "dev", "eth0"]).await?;
        run_quiet("ip", &["-n", &ns, "link", "set", "eth0", "up"]).await?;
        run_quiet("ip", &["-n", &ns, "link", "set", "lo", "up"]).await?;
    }
    let up = start.elapsed();
    let start = Instant::now();
    remove().await?;
    Ok((up, start.elapsed()))
}
