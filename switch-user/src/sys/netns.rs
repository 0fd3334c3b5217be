//! Network namespaces, made the way `ip netns` makes them (a bind mount of the namespace under
//! `/run/netns/NAME`), so `ip netns list` and `ip netns exec` see ours and we see theirs.
//!
//! `setns` changes the namespace of the calling *thread* only. Work inside a namespace therefore
//! runs on a dedicated OS thread that enters it and then dies; it never runs on a tokio worker,
//! which would carry the namespace into unrelated tasks (rust-netlink/rtnetlink#68).
use std::{
    fs::{self, File},
    future::Future,
    io,
    os::fd::{AsFd as _, AsRawFd as _},
    path::{Path, PathBuf},
    process::Command,
};

use nix::{
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, setns, unshare},
};

use crate::error::{Context as _, Error, Result};

/// Where namespaces are bind-mounted (as iproute2 does).
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// `/run/netns/NAME`.
pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

/// Whether `/run/netns/NAME` exists.
pub fn exists(name: &str) -> bool {
    path(name).exists()
}

/// Makes `/run/netns` a shared mount point, so namespace mounts made here propagate to other
/// mount namespaces (and the reverse), exactly like `ip netns add`.
fn prepare_run_dir() -> Result<()> {
    fs::create_dir_all(NETNS_RUN_DIR).context(format!("creating {NETNS_RUN_DIR}"))?;
    let shared =
        || mount(None::<&str>, NETNS_RUN_DIR, None::<&str>, MsFlags::MS_SHARED | MsFlags::MS_REC, None::<&str>);
    match shared() {
        Ok(()) => Ok(()),
        Err(nix::Error::EINVAL) => {
            // Not a mount point yet: bind it onto itself, then make it shared.
            mount(Some(NETNS_RUN_DIR), NETNS_RUN_DIR, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
                .context(format!("bind-mounting {NETNS_RUN_DIR}"))?;
            shared().context(format!("making {NETNS_RUN_DIR} a shared mount"))
        }
        Err(e) => Err(e).context(format!("making {NETNS_RUN_DIR} a shared mount")),
    }
}

/// Creates namespace `name`. Fails with `NamespaceExists` if it exists; rolls back the mount
/// point file if the namespace cannot be made.
pub async fn create(name: &str) -> Result<()> {
    prepare_run_dir()?;
    let target = path(name);
    match File::options().write(true).create_new(true).open(&target) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(Error::NamespaceExists { name: name.to_owned(), detail: String::new() });
        }
        Err(e) => return Err(e).context(format!("creating {}", target.display())),
    }
    let t = target.clone();
    let made = on_thread(format!("netns-add-{name}"), move || {
        unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
        mount(Some("/proc/thread-self/ns/net"), &t, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .context(format!("bind-mounting the new namespace on {}", t.display()))
    })
    .await;
    if made.is_err() {
        let _ = fs::remove_file(&target);
    }
    made
}

/// Deletes namespace `name`; a namespace that does not exist is not an error. Processes still
/// inside it keep it alive until they exit, as with `ip netns del`.
pub fn delete(name: &str) -> Result<()> {
    let target = path(name);
    match umount2(&target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(e) => return Err(e).context(format!("unmounting {}", target.display())),
    }
    match fs::remove_file(&target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).context(format!("removing {}", target.display())),
    }
}

/// Opens the namespace file (its fd names the namespace in netlink requests and `setns`).
pub fn open(name: &str) -> Result<File> {
    open_path(&path(name))
}

/// Opens a namespace file anywhere: `/run/netns/NAME`, a container runtime's
/// `/run/netns/cni-…`, or `/proc/PID/ns/net`. It must be a network namespace.
pub fn open_path(p: &Path) -> Result<File> {
    let file = File::open(p).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => {
            Error::invalid("namespace", p.display().to_string(), "does not exist (see: ip netns list)")
        }
        _ => Error::Io { context: format!("opening {}", p.display()), source: e },
    })?;
    // NS_GET_NSTYPE would say which kind; setns with CLONE_NEWNET refuses any other kind, and
    // a plain file is refused here before anything is made for it.
    if !is_nsfs(&file) {
        return Err(Error::invalid("namespace", p.display().to_string(), "is not a namespace file"));
    }
    Ok(file)
}

/// Whether `file` lives on nsfs (a namespace file, or a bind mount of one).
fn is_nsfs(file: &File) -> bool {
    nix::sys::statfs::fstatfs(file).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

/// Runs blocking `f` on a fresh OS thread and awaits its result without blocking the caller's
/// runtime. The thread dies afterwards, so whatever namespace it entered dies with it.
async fn on_thread<T: Send + 'static>(name: String, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.chars().take(15).collect())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .context("spawning a namespace thread")?;
    rx.await.map_err(|_| Error::Command("namespace thread panicked".into()))?
}

/// Runs `f` inside namespace `name`, on a dedicated thread with its own single-threaded tokio
/// runtime and its own rtnetlink connection (netlink sockets belong to the namespace of the
/// thread that opens them).
pub async fn run_in<T, F, Fut>(name: &str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(rtnetlink::Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
{
    run_in_path(&path(name), f).await
}

/// `run_in` for a namespace file anywhere (see `open_path`).
pub async fn run_in_path<T, F, Fut>(p: &Path, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(rtnetlink::Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
{
    let ns = open_path(p)?;
    let ns_name = p.display().to_string();
    let label: String = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    on_thread(format!("netns-{label}"), move || {
        setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).context(format!("entering namespace {ns_name}"))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting a runtime in the namespace")?;
        rt.block_on(async move {
            let (conn, handle, _) = rtnetlink::new_connection().context("opening a netlink socket")?;
            tokio::spawn(conn);
            f(handle).await
        })
    })
    .await
}

/// The cookie of the network namespace of the calling thread (SO_NETNS_COOKIE of a socket
/// opened here), which eBPF programs see as `bpf_get_netns_cookie`.
pub fn cookie_here() -> Result<u64> {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").context("opening a socket")?;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: SO_NETNS_COOKIE writes one u64 into `cookie`, whose size is passed along.
    let r = unsafe {
        libc::getsockopt(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_NETNS_COOKIE, (&raw mut cookie).cast(), &mut len)
    };
    if r != 0 {
        return Err(io::Error::last_os_error()).context("reading a network namespace cookie");
    }
    Ok(cookie)
}

/// A command that runs inside namespace `name`: the child enters the namespace between fork
/// and exec. With `own_sysfs`, the child also gets a private mount namespace with a fresh
/// `/sys`, so tools reading `/sys/class/net` see the namespace's interfaces (as
/// `ip netns exec` does).
pub fn command(name: &str, program: &str, own_sysfs: bool) -> Result<Command> {
    use std::os::unix::process::CommandExt as _;
    let ns = open(name)?;
    let mut cmd = Command::new(program);
    // SAFETY: only async-signal-safe system calls run between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            if own_sysfs {
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // Keep our mount changes from propagating back to the host.
                let root = c"/";
                if libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_SLAVE | libc::MS_REC,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                let sys = c"/sys";
                let sysfs = c"sysfs";
                libc::umount2(sys.as_ptr(), libc::MNT_DETACH);
                if libc::mount(sysfs.as_ptr(), sys.as_ptr(), sysfs.as_ptr(), 0, std::ptr::null()) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Ok(cmd)
}
