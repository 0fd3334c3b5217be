//! Running host programs (blocking) and waiting for conditions.
use std::{
    process::{Command, Output},
    time::{Duration, Instant},
};

use crate::{Error, Result};

/// Where to get the programs an environment runs: the hint added to "running X" when X is
/// missing (`cargo xtask setup` installs them all).
fn hint(program: &str) -> &'static str {
    match program {
        "podman" | "containerd" | "ctr" | "runc" | "iptables" | "nft" | "unshare" => {
            " (install it, or run 'cargo xtask setup')"
        }
        _ => "",
    }
}

/// The program of `cmd`, as a string.
fn program(cmd: &Command) -> String {
    cmd.get_program().to_string_lossy().into_owned()
}

/// Runs `cmd` to its end, whatever its exit status.
pub fn run(cmd: &mut Command) -> Result<Output> {
    cmd.output().map_err(|source| {
        let program = program(cmd);
        Error::Spawn { hint: hint(&program), program, source }
    })
}

/// Runs `cmd`; its stdout, or an error naming it as `what` (the program and the arguments that
/// say what it did) with its stderr.
pub fn output_as(cmd: &mut Command, what: impl FnOnce() -> String) -> Result<String> {
    let out = run(cmd)?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Err(Error::Failed { command: what(), stderr });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd`; its stdout, or an error with the whole command line and its stderr.
pub fn output(cmd: &mut Command) -> Result<String> {
    let line = || {
        let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        format!("{} {}", program(cmd), args.join(" "))
    };
    let what = line();
    output_as(cmd, || what)
}

/// Runs `program ARGS`; whether it ran and succeeded (for clean-up steps where "not there" is
/// fine).
pub fn quiet(program: &str, args: &[&str]) -> bool {
    Command::new(program).args(args).output().is_ok_and(|o| o.status.success())
}

/// Polls `f` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `program` is on the PATH.
pub fn installed(program: &str) -> bool {
    run(Command::new("sh").args(["-c", &format!("command -v {program}")])).is_ok_and(|o| o.status.success())
}
