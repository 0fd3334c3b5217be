//! The cgroup v2 hierarchy: its root, which the socket hooks of port forwarding attach to, and
//! the cgroups of the switch's own background processes.
//!
//! A userspace switch's process is started by whoever brings the switch up: the CLI in a
//! login session, or `switch-cni` run by a container runtime. It would inherit that caller's
//! cgroup, and go down with it: systemd stops a unit (a restarted containerd, a closed
//! session) by killing every process of the unit's cgroup. So the process moves, between fork
//! and exec, into a cgroup of its own beside every unit's, which nothing else uses and `down`
//! removes:
//!
//! ```text
//!   <cgroup v2 root>/switch/NAME          the process of the machine's switch NAME
//!   <cgroup v2 root>/switch/@HOST/NAME    a host namespace's (see sys::host)
//! ```
//! No controller is enabled in them (limits stay the machine's). The directory is `switch`,
//! not `switch.slice`: systemd takes names ending in `.slice` for its own units. systemd
//! tracks units in the v2 hierarchy also on a hybrid machine (v2 at `/sys/fs/cgroup/unified`);
//! without any v2 hierarchy (cgroup v1 only) the process stays where it was started.
use std::{
    fs,
    io::ErrorKind,
    os::fd::{AsRawFd as _, RawFd},
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{
    error::{Context as _, Error, Result},
    sys::host,
};

/// Where the cgroup v2 hierarchy is mounted (its root holds every process).
pub fn v2_root() -> Result<std::path::PathBuf> {
    find_v2_root().ok_or_else(|| {
        Error::Command("no cgroup v2 hierarchy is mounted (needed for host-local port forwarding)".into())
    })
}

fn find_v2_root() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
    })
}

/// The directory under the v2 root that holds the switch processes' cgroups.
pub const PROCESS_DIR: &str = "switch";

/// The cgroup of switch `name`'s process under `root` (the host's state directory name,
/// `@HOST`, keeps the switches of host namespaces apart).
fn process_cgroup(root: &Path, name: &str) -> PathBuf {
    let state = host::state_dir();
    let host_part = state.strip_prefix(host::STATE_DIR).unwrap_or(Path::new(""));
    root.join(PROCESS_DIR).join(host_part).join(name)
}

/// The cgroup of switch `name`'s process, made and opened for a process to move itself into
/// between fork and exec (`enter`).
#[derive(Debug)]
pub struct ProcessCgroup {
    /// The cgroup's directory.
    pub dir: PathBuf,
    procs: fs::File,
}

impl ProcessCgroup {
    /// Makes (or reuses) switch `name`'s cgroup. `None` when no cgroup v2 hierarchy is mounted:
    /// there is nothing a caller's end could take the process down with.
    pub fn make(name: &str) -> Result<Option<Self>> {
        let Some(root) = find_v2_root() else { return Ok(None) };
        let dir = process_cgroup(&root, name);
        fs::create_dir_all(&dir).context(format!("making cgroup {}", dir.display()))?;
        let procs_path = dir.join("cgroup.procs");
        let procs = fs::OpenOptions::new()
            .write(true)
            .open(&procs_path)
            .context(format!("opening {}", procs_path.display()))?;
        Ok(Some(Self { dir, procs }))
    }

    /// The descriptor `enter` writes to (opened before the fork: the child may not allocate).
    pub fn procs_fd(&self) -> RawFd {
        self.procs.as_raw_fd()
    }

    /// Moves the calling process into the cgroup. Only a write(2) on a descriptor opened
    /// before: async-signal-safe, for `Command::pre_exec`.
    pub fn enter(fd: RawFd) -> std::io::Result<()> {
        // SAFETY: write(2) of one byte from a static buffer to a descriptor the parent opened
        // and keeps open until the child has exec'd.
        let n = unsafe { libc::write(fd, c"0".as_ptr().cast(), 1) };
        if n == 1 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
    }
}

/// Removes switch `name`'s process cgroup once its process is gone, killing whatever is left
/// in it (it is the switch's alone), and the parents it leaves empty. Absent is not an error.
pub async fn remove_process_cgroup(name: &str) -> Result<()> {
    let Some(root) = find_v2_root() else { return Ok(()) };
    let dir = process_cgroup(&root, name);
    for attempt in 0..80 {
        match fs::remove_dir(&dir) {
            Ok(()) => break,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            // Still populated: a process the pid file did not name (or one on its way out).
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 79 => {
                if attempt == 0 {
                    let _ = fs::write(dir.join("cgroup.kill"), "1");
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Err(e) => return Err(e).context(format!("removing cgroup {}", dir.display())),
        }
    }
    // The parents (`switch/@HOST`, `switch`) go when no other switch's cgroup is in them.
    let top = root.join(PROCESS_DIR);
    for parent in dir.ancestors().skip(1).take_while(|p| p.starts_with(&top)) {
        if fs::remove_dir(parent).is_err() {
            break;
        }
    }
    Ok(())
}
