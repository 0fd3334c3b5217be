//! `switch`: the command-line edge of the controller. Parses the command line, runs the one
//! handler of the command (`cli::dispatch`) and prints what it reports (`Reply::print`).
//! Errors become one `error: ...` line and an exit status (2: bad input, nothing changed;
//! 1: anything else).
mod cli;

use std::process::ExitCode;

use clap::Parser as _;
use cli::args::{Cli, Command, NsCommand};
use switch::sys::netns;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return switch::edge::usage_error(e),
    };
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

    // Before any other thread exists: every thread made later starts in the host namespace.
    if let Some(h) = &cli.host_netns
        && let Err(e) = switch::sys::host::enter(h)
    {
        return fail(&e.into());
    }
    // `ns exec` replaces this process and needs no runtime: run it before starting one.
    if let Command::Ns(NsCommand::Exec { ns, command }) = &cli.command {
        return exec(ns, command);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::anyhow!("starting the runtime: {e}")),
    };
    match rt.block_on(cli::dispatch(cli.command, cli.json)) {
        Ok(reply) => match reply.print(cli.json) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&anyhow::anyhow!("writing the reply: {e}")),
        },
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
