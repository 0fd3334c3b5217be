//! `switch bench`.
use anyhow::{Context as _, Result};

use crate::cli::{args::BenchArgs, output::Reply, signal};

/// Runs the benchmark; Ctrl-C or SIGTERM stops it and removes what it made.
pub async fn do_bench(a: BenchArgs, json: bool) -> Result<Reply> {
    // Held to the end, also while an interrupted run removes what it made.
    let _only_run = switch::bench::exclusive()?;
    let mut opts = if a.quick { switch::bench::Options::quick() } else { switch::bench::Options::full() };
    opts.rounds = a.rounds.unwrap_or(opts.rounds).max(1);
    opts.secs = a.secs.unwrap_or(opts.secs).max(1);
    opts.only = a.only;
    let bar = if json { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(0) };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    // Dropping the run kills the tools it started; then the topologies are removed, so an
    // interrupted benchmark leaves nothing behind.
    let report = tokio::select! {
        r = switch::bench::run(&opts, &bar) => r?,
        _ = signal::shutdown() => {
            bar.set_message("interrupted: removing the benchmark's namespaces");
            switch::bench::cleanup().await;
            bar.finish_and_clear();
            anyhow::bail!("benchmark interrupted; its namespaces and switches were removed")
        }
    };
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    if let Some(path) = &a.svg {
        std::fs::write(path, report.to_svg()).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &a.markdown {
        std::fs::write(path, report.to_markdown(&command)).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(Reply::new(&report, report.to_text()))
}
