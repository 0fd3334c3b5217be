//! Naming a process so that a reused pid is never mistaken for it: the pid plus the time the
//! process started (field 22 of `/proc/PID/stat`, in clock ticks since boot). Signals go
//! through a pidfd, which pins the process once it is checked.
use std::{fs, os::fd::FromRawFd as _, os::fd::OwnedFd};

use serde::{Deserialize, Serialize};

/// A process: pid and start time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessId {
    /// Process id.
    pub pid: i32,
    /// Start time in clock ticks since boot.
    pub start: u64,
}

/// State and start time of `pid`, from `/proc/PID/stat`.
fn stat(pid: i32) -> Option<(String, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is parenthesised and may hold anything: fields count after its ')'.
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // rest[0] is field 3 (state); field 22 (starttime) is rest[19].
    Some((rest.first()?.to_string(), rest.get(19)?.parse().ok()?))
}

impl ProcessId {
    /// This process.
    pub fn current() -> Self {
        let pid = std::process::id() as i32;
        Self { pid, start: stat(pid).map_or(0, |(_, s)| s) }
    }

    /// `PID START`, as written to pid files.
    pub fn to_line(self) -> String {
        format!("{} {}", self.pid, self.start)
    }

    /// Parses `PID START`. A bare pid (no start time to check it by) is `None`.
    pub fn parse(line: &str) -> Option<Self> {
        let mut it = line.split_whitespace();
        let pid = it.next()?.parse().ok()?;
        let start = it.next()?.parse().ok()?;
        Some(Self { pid, start })
    }

    /// Whether this very process still runs (a zombie counts as gone; another process with
    /// the same pid is not this one).
    pub fn is_alive(self) -> bool {
        stat(self.pid).is_some_and(|(state, start)| state != "Z" && start == self.start)
    }

    /// Sends `sig` to this process if it still is this process; returns whether it was sent.
    pub fn signal(self, sig: i32) -> bool {
        // SAFETY: pidfd_open(2) with a plain pid and no flags; the result is checked.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, self.pid, 0) };
        if fd < 0 {
            return false;
        }
        // SAFETY: the kernel returned a new descriptor that we now own.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // The pidfd now refers to whatever process has the pid; checking the start time after
        // opening it means a signal through it can only reach the process we mean.
        if !self.is_alive() {
            return false;
        }
        use std::os::fd::AsRawFd as _;
        // SAFETY: pidfd_send_signal(2) on a descriptor we own, no siginfo, no flags.
        let r = unsafe {
            libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), sig, std::ptr::null::<libc::siginfo_t>(), 0)
        };
        r == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_pid_is_not_the_process() {
        let me = ProcessId::current();
        assert!(me.start > 0 && me.is_alive());
        assert_eq!(ProcessId::parse(&me.to_line()), Some(me));
        assert_eq!(ProcessId::parse("1234"), None, "a bare pid cannot be checked");
        let impostor = ProcessId { start: me.start + 1, ..me };
        assert!(!impostor.is_alive());
        assert!(!impostor.signal(0), "a signal reached a process by its pid alone");
        assert!(me.signal(0));
    }
}
