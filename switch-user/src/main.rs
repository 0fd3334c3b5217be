//! `switch`: the command-line edge of the controller. Errors become one `error: ...` line and
//! an exit status (2: bad input, nothing changed; 1: anything else).
mod cli;

use std::process::ExitCode;

use clap::Parser as _;
use cli::{Cli, Command, FdbCommand, ForwardCommand, NsCommand, output};
use switch::{
    controller::{fdb, forward, link, logs, port, stats, switch as sw, tables},
    sys::netns,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into()))
        .with_writer(std::io::stderr)
        .without_time()
        .init();

    // `ns exec` replaces nothing and needs no runtime: run it before starting one.
    if let Command::Ns(NsCommand::Exec { ns, command }) = &cli.command {
        return exec(ns, command);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::anyhow!("starting the runtime: {e}")),
    };
    match rt.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("error: {}", one_line(e));
    let code = e.downcast_ref::<switch::Error>().map_or(1, switch::Error::exit_code);
    ExitCode::from(code as u8)
}

/// The error and its causes on one line, skipping a cause that the message before it
/// already ends with (the library's errors print their source themselves).
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let msg = cause.to_string();
        if !out.ends_with(&msg) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&msg);
        }
    }
    out
}

/// Replaces this process with `command` running inside namespace `ns` (as `ip netns exec`
/// does): signals sent to `switch ns exec` reach the command itself, and its exit status is
/// the command's.
fn exec(ns: &str, command: &[String]) -> ExitCode {
    use std::os::unix::process::CommandExt as _;
    let run = || -> anyhow::Result<std::convert::Infallible> {
        switch::names::validate_name("namespace name", ns)?;
        let mut cmd = netns::command(ns, &command[0], true)?;
        cmd.args(&command[1..]);
        // exec only returns on failure.
        Err(anyhow::anyhow!("running {}: {}", command[0], cmd.exec()))
    };
    match run() {
        Ok(never) => match never {},
        Err(e) => fail(&e),
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Up(a) => {
            let r = sw::up(sw::UpOptions {
                name: a.name,
                ageing_secs: a.ageing,
                redirect: a.redirect,
                datapath: a.datapath,
                gateway: a.gateway,
                uplinks: a.uplinks,
                no_masquerade: a.no_masquerade,
            })
            .await?;
            if a.json.json {
                output::json(&r);
            } else if r.created {
                let detail = match &r.pins {
                    Some(p) => format!(", redirect {}, pinned at {p}", r.redirect),
                    None => String::new(),
                };
                let gw = r.gateway.map(|g| format!(", gateway {g}")).unwrap_or_default();
                println!("switch '{}' is up ({} datapath, ageing {}s{gw}{detail})", r.name, r.datapath, r.ageing_secs);
            } else {
                println!("switch '{}' is already up", r.name);
            }
        }
        Command::Down(a) => {
            let r = sw::down(&a.name).await?;
            if a.json.json {
                output::json(&r);
            } else if r.existed {
                println!("switch '{}' removed", r.name);
                if !r.removed_namespaces.is_empty() {
                    println!("removed namespaces: {}", r.removed_namespaces.join(", "));
                }
            } else {
                println!("switch '{}' is not up; nothing to do", r.name);
            }
        }
        Command::Ns(NsCommand::Add(a)) => {
            let r = port::add(port::AddOptions { ns: a.ns, ip: a.ip, switch: a.switch, mac: a.mac }).await?;
            if a.json.json {
                output::json(&r);
            } else {
                let i = &r.info;
                let verb = if r.created { "added to" } else { "is already on" };
                println!(
                    "namespace '{}' {verb} switch '{}': {} {} mac {} (host port {})",
                    i.namespace,
                    i.attached_to,
                    i.interface,
                    i.ip,
                    i.mac.clone().unwrap_or_default(),
                    i.host_interface.clone().unwrap_or_default()
                );
            }
        }
        Command::Ns(NsCommand::Del { ns }) => {
            port::del(&ns).await?;
            println!("namespace '{ns}' removed");
        }
        Command::Ns(NsCommand::List(j)) => {
            let rows = port::list().await?;
            if j.json {
                output::json(&rows);
            } else {
                output::namespaces(&rows);
            }
        }
        Command::Ns(NsCommand::Exec { .. }) => unreachable!("handled before the runtime starts"),
        Command::Link(a) => {
            link::link(&a.ns1, &a.ns2, a.ip1, a.ip2).await?;
            println!("linked '{}' ({}) <-> '{}' ({})", a.ns1, a.ip1, a.ns2, a.ip2);
        }
        Command::Forward(ForwardCommand::Add { proto, host_port, to, switch, json }) => {
            let host: forward::PortRange = host_port.parse()?;
            let (ns, to) = forward::parse_target(&to)?;
            let f = forward::add(forward::AddOptions { switch, proto, host, ns, to }).await?;
            if json.json {
                output::json(&f);
            } else {
                println!(
                    "forwarding {}/{} on the uplinks of switch '{}' to namespace '{}' port {}",
                    f.proto, host, f.switch, f.ns, to
                );
            }
        }
        Command::Forward(ForwardCommand::Del { proto, host_port, switch }) => {
            let host: forward::PortRange = host_port.parse()?;
            forward::del(&switch, proto, host).await?;
            println!("forward {proto}/{host} removed from switch '{switch}'");
        }
        Command::Forward(ForwardCommand::List { switch, json }) => {
            let rows = forward::list(switch.as_deref()).await?;
            if json.json {
                output::json(&rows);
            } else {
                output::forwards(&rows);
            }
        }
        Command::Fdb(a) => match a.command {
            Some(FdbCommand::Add { mac, ns }) => {
                fdb::add_static(mac, &ns).await?;
                println!("static entry {mac} -> namespace '{ns}' added");
            }
            Some(FdbCommand::Del { mac, switch }) => {
                fdb::del(mac, &switch).await?;
                println!("entry {mac} deleted from switch '{switch}'");
            }
            None => {
                let rows = fdb::show(&a.show.switch).await?;
                if a.show.json.json {
                    output::json(&rows);
                } else {
                    output::fdb(&rows);
                }
            }
        },
        Command::Stats(a) => {
            let rows = stats::show(&a.switch).await?;
            if a.json.json {
                output::json(&rows);
            } else {
                output::stats(&rows);
            }
        }
        Command::Tables(a) => {
            let rows = tables::show(&a.switch).await?;
            if a.json.json {
                output::json(&rows);
            } else {
                output::tables(&rows);
            }
        }
        Command::Logs(a) => {
            let started = || eprintln!("streaming the datapath log of switch '{}'; Ctrl-C to stop", a.switch);
            logs::follow(&a.switch, started, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        }
        Command::List(j) => {
            let rows = sw::list().await?;
            if j.json {
                output::json(&rows);
            } else {
                output::switches(&rows);
            }
        }
        Command::Run(a) => {
            let stop = async {
                use tokio::signal::unix::{SignalKind, signal};
                match signal(SignalKind::terminate()) {
                    Ok(mut term) => {
                        tokio::select! {
                            _ = tokio::signal::ctrl_c() => {}
                            _ = term.recv() => {}
                        }
                    }
                    Err(_) => {
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
            };
            if a.daemon {
                sw::run_daemon(&a.name, a.ageing.unwrap_or(switch_common::DEFAULT_AGEING_SECS), stop).await?;
            } else {
                sw::run_foreground(&a.name, a.ageing, stop).await?;
            }
        }
        Command::Bench(a) => {
            let mut opts = if a.quick { switch::bench::Options::quick() } else { switch::bench::Options::full() };
            opts.rounds = a.rounds.unwrap_or(opts.rounds).max(1);
            opts.secs = a.secs.unwrap_or(opts.secs).max(1);
            opts.only = a.only;
            let bar = if a.json.json { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(0) };
            bar.set_style(
                indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            // Ctrl-C or SIGTERM stops the run: dropping it kills the tools it started, then
            // the topologies are removed, so an interrupted benchmark leaves nothing behind.
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            let report = tokio::select! {
                r = switch::bench::run(&opts, &bar) => r?,
                _ = tokio::signal::ctrl_c() => return bench_interrupted(&bar).await,
                _ = term.recv() => return bench_interrupted(&bar).await,
            };
            let command = std::env::args().collect::<Vec<_>>().join(" ");
            if let Some(path) = &a.svg {
                std::fs::write(path, report.to_svg())
                    .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
            }
            if let Some(path) = &a.markdown {
                std::fs::write(path, report.to_markdown(&command))
                    .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
            }
            if a.json.json {
                output::json(&report);
            } else {
                print!("{}", report.to_text());
            }
        }
        Command::Demo => cli::demo::run().await?,
    }
    Ok(())
}

async fn bench_interrupted(bar: &indicatif::ProgressBar) -> anyhow::Result<()> {
    bar.set_message("interrupted: removing the benchmark's namespaces");
    switch::bench::cleanup().await;
    bar.finish_and_clear();
    anyhow::bail!("benchmark interrupted; its namespaces and switches were removed")
}
