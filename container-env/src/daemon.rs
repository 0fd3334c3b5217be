//! A runtime daemon as a child process of its environment (never a service): started with
//! its log in the environment, waited for until it answers, stopped with SIGTERM then
//! SIGKILL; and the processes of an environment found by their command lines, so what a
//! killed run left (the daemon, its shims, their containers) can be ended.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::{Error, Result, command::wait_until};

/// A running daemon.
pub struct Daemon {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts `cmd` as daemon `name`, its output into `log`.
    pub fn spawn(name: &'static str, cmd: &mut Command, log: &Path) -> Result<Self> {
        let file = fs::File::create(log).map_err(Error::io(format!("creating {}", log.display())))?;
        let err = file.try_clone().map_err(Error::io(format!("opening {}", log.display())))?;
        let child = cmd.stdin(Stdio::null()).stdout(file).stderr(err).spawn().map_err(|source| Error::Spawn {
            program: name.to_owned(),
            hint: " (install it, or run 'cargo xtask setup')",
            source,
        })?;
        Ok(Self { name, child, log: log.to_owned() })
    }

    /// Waits up to `secs` until `ready` holds while the daemon runs; fails with the end of its
    /// log when it exited or never got ready.
    pub fn wait_ready(&self, secs: u64, mut ready: impl FnMut() -> bool) -> Result<()> {
        if wait_until(Duration::from_secs(secs), || self.exited().is_none() && ready()) {
            return Ok(());
        }
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
        Err(Error::DaemonDown {
            daemon: self.name,
            how: match self.exited() {
                Some(state) => format!("exited ({state})"),
                None => "did not answer".into(),
            },
            secs,
            log: self.log.clone(),
            tail: tail.join("\n"),
        })
    }

    /// How the daemon ended, if it did (`try_wait` would need `&mut` and reap it: /proc tells
    /// the same).
    pub fn exited(&self) -> Option<String> {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let state = stat.rsplit_once(") ").map(|(_, r)| r.chars().next().unwrap_or('X')).unwrap_or('X');
        matches!(state, 'Z' | 'X').then(|| format!("state {state}"))
    }

    /// Stops the daemon: SIGTERM, then SIGKILL after `secs`. Returns a complaint if it had to
    /// be killed.
    pub fn stop(mut self, secs: u64) -> Option<String> {
        // SAFETY: signals a child this value started and has not reaped yet.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        if wait_until(Duration::from_secs(secs), || self.child.try_wait().ok().flatten().is_some()) {
            return None;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        Some(format!("{} did not stop on SIGTERM within {secs} s", self.name))
    }
}

/// The command line of process `pid`, argument by argument.
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(raw.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect())
}

/// Processes whose command line names a path below `dir`: an environment's daemon
/// (`--config DIR/...`) and the processes it started with its paths (shims).
pub fn processes_of(dir: &Path) -> Vec<u32> {
    let needle = format!("{}/", dir.display());
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| cmdline(*pid).is_some_and(|args| args.iter().any(|a| a.contains(&needle))))
        .collect()
}

/// Kills `pids` and their children (the containers under a shim).
pub fn kill_with_children(pids: &[u32]) {
    for pid in pids {
        for task in fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().filter_map(Result::ok) {
            let children = fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children.split_whitespace().filter_map(|c| c.parse::<i32>().ok()) {
                // SAFETY: plain kill(2) of a process the environment's shim started.
                unsafe { libc::kill(child, libc::SIGKILL) };
            }
        }
        // SAFETY: plain kill(2) of the environment's daemon or shim.
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
    }
}
