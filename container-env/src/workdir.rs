//! Environment directories: `PREFIX-PID-N` under the temporary directory (the bench's has a
//! fixed name instead), found again after their process was killed, and removed with
//! whatever is still mounted below them.
use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use crate::command::quiet;

/// Whether process `pid` lives.
pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The next directory of this process with `prefix`: `TMP/PREFIX-PID-N`, with `N` counted by
/// `counter`; returns it and `N`. Whatever an earlier process with the same pid left there is
/// removed.
pub fn next(prefix: &str, counter: &AtomicU32) -> (PathBuf, u32) {
    let n = counter.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("{prefix}{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    (dir, n)
}

/// Directories `TMP/PREFIX-PID-...` of processes that are gone (killed before their
/// tear-down ran), sorted.
pub fn stale(prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return vec![] };
    let mut v: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.strip_prefix(prefix).and_then(|r| r.split('-').next()?.parse::<u32>().ok());
            e.path().is_dir() && pid.is_some_and(|p| !alive(p))
        })
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// Mount points at or below `dir` (container root file systems, snapshots, storage), deepest
/// first, so they can be unmounted in that order.
pub fn mounts_below(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    let mut m: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|p| p == &prefix || p.starts_with(&format!("{prefix}/")))
        .collect();
    m.sort_by_key(|p| std::cmp::Reverse(p.len()));
    m
}

/// Unmounts (lazily) what is mounted at or below `dir`; returns what was.
pub fn unmount_below(dir: &Path) -> Vec<String> {
    let m = mounts_below(dir);
    for p in &m {
        quiet("umount", &["-l", p]);
    }
    m
}

/// Removes `dir` after unmounting what is still mounted below it; returns complaints (the
/// mounts there were, or why the directory stays).
pub fn remove(dir: &Path) -> Vec<String> {
    let mut left = vec![];
    let mounts = unmount_below(dir);
    if !mounts.is_empty() {
        left.push(format!("mounts: {mounts:?}"));
    }
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        left.push(format!("{}: {e}", dir.display()));
    }
    left
}
