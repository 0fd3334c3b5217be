//! The cgroup v2 hierarchy, whose root the socket hooks of port forwarding attach to.
use std::fs;

use crate::error::{Context as _, Error, Result};

/// Where the cgroup v2 hierarchy is mounted (its root holds every process).
pub fn v2_root() -> Result<std::path::PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| std::path::PathBuf::from(f[1]))
        })
        .ok_or_else(|| {
            Error::Command("no cgroup v2 hierarchy is mounted (needed for host-local port forwarding)".into())
        })
}
