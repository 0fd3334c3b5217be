//! The userspace switch process: started in the background by `switch up --datapath
//! userspace` (pid file, log file, control socket under /run/switch), or in the foreground by
//! `switch run`.
use std::{
    fs,
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use super::{
    control::{self, Request, Response},
    engine::{Config, Engine},
};
use crate::{
    error::{Context as _, Error, Result},
    sys::{cgroup, cgroup::ProcessCgroup, files, host, process::ProcessId},
};

/// Control socket of switch `name`.
pub fn socket_path(name: &str) -> PathBuf {
    host::state_dir().join(format!("{name}.sock"))
}

/// Pid file of switch `name`'s process.
pub fn pid_path(name: &str) -> PathBuf {
    host::state_dir().join(format!("{name}.pid"))
}

/// Log file of a background switch process.
pub fn log_path(name: &str) -> PathBuf {
    host::state_dir().join(format!("{name}.log"))
}

/// Sends `req` to switch `name`'s process and turns an error answer into an error.
pub async fn ask(name: &str, req: Request) -> Result<Response> {
    match control::request(&socket_path(name), &req).await? {
        Response::Error { message } => Err(Error::Command(format!("userspace switch '{name}': {message}"))),
        r => Ok(r),
    }
}

/// Whether switch `name`'s process answers.
pub async fn alive(name: &str) -> bool {
    matches!(control::request(&socket_path(name), &Request::Ping).await, Ok(Response::Ok))
}

/// The process the pid file names, if the file names one by pid and start time (a file
/// with a bare pid, or none, names nobody that may be signalled).
fn read_pid(name: &str) -> Option<ProcessId> {
    ProcessId::parse(&fs::read_to_string(pid_path(name)).ok()?)
}

/// The `switch` binary: this process's, or the one next to it when this is another binary of
/// the project (the CNI plugin brings userspace switches up too).
pub fn switch_binary() -> Result<std::path::PathBuf> {
    let exe = std::env::current_exe().context("finding the switch binary")?;
    if exe.file_name().is_some_and(|n| n == "switch") {
        return Ok(exe);
    }
    let sibling = exe.with_file_name("switch");
    if sibling.is_file() {
        Ok(sibling)
    } else {
        Err(Error::Command(format!("the userspace switch needs the switch binary next to {}", exe.display())))
    }
}

/// Starts switch `name`'s process in the background (its own session and cgroup, stdio to
/// the log file) and waits until it answers on its control socket.
pub async fn spawn(name: &str, config: &Config) -> Result<()> {
    stop(name).await?;
    let exe = switch_binary()?;
    files::private_dir(&host::state_dir())?;
    let log = files::open_private(&log_path(name), true)?;
    let log2 = log.try_clone().context("duplicating the log file")?;
    let mut cmd = Command::new(exe);
    let ageing = config.ageing.as_secs().to_string();
    let max_learned = config.max_learned.to_string();
    let busy_poll = config.busy_poll.as_micros().to_string();
    cmd.args(["run", "--switch", name, "--daemon", "--ageing", &ageing, "--max-learned", &max_learned])
        .args(["--busy-poll", &busy_poll])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    // Its own cgroup, entered before exec: the caller's cgroup (a container runtime's unit,
    // a login session) may be killed whole, and the switch must outlive it.
    let cgroup = ProcessCgroup::make(name)?;
    let procs = cgroup.as_ref().map(ProcessCgroup::procs_fd);
    // SAFETY: setsid and the write in `enter` are async-signal-safe; setsid detaches the
    // process from our terminal and process group so that Ctrl-C on the CLI does not reach it.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            procs.map_or(Ok(()), ProcessCgroup::enter)
        });
    }
    let spawned = cmd.spawn().context("starting the userspace switch process");
    // The cgroup's descriptor stays open until the child has exec'd (spawn returns after).
    drop(cgroup);
    let mut child = spawned?;
    for _ in 0..200 {
        if alive(name).await {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let tail = fs::read_to_string(log_path(name)).unwrap_or_default();
            let last = tail.lines().last().unwrap_or("no output").to_owned();
            return Err(Error::Command(format!("userspace switch process exited ({status}): {last}")));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = child.kill();
    Err(Error::Command(format!(
        "userspace switch process did not answer on {} within 5 s",
        socket_path(name).display()
    )))
}

/// Stops switch `name`'s process if one runs (shutdown request, then SIGTERM, then SIGKILL)
/// and removes its cgroup, pid file, socket and log. Nothing running is not an error.
pub async fn stop(name: &str) -> Result<()> {
    // The pid first: the process removes its pid file on the way out, before it is gone.
    let me = ProcessId::current();
    let process = read_pid(name).filter(|p| p.pid != me.pid);
    let _ = control::request(&socket_path(name), &Request::Shutdown).await;
    if let Some(process) = process {
        for (i, sig) in [(0, 0), (40, libc::SIGTERM), (80, libc::SIGKILL)] {
            for _ in 0..40 {
                if !process.is_alive() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            if !process.is_alive() {
                break;
            }
            // Only the process the pid file names, by pid and start time: a stale file whose
            // pid now belongs to another process signals nobody.
            if sig != 0 && process.signal(sig) {
                tracing::info!(pid = process.pid, step = i, "signalled the userspace switch process");
            }
        }
    }
    // Its cgroup, then the log: `down` leaves nothing behind (a failed start reports its last
    // line before this runs).
    cgroup::remove_process_cgroup(name).await?;
    for p in [pid_path(name), socket_path(name), log_path(name)] {
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).context(format!("removing {}", p.display())),
        }
    }
    Ok(())
}

/// Runs the switch in this process: the engine (its ports come later, over the control
/// socket), the ageing sweep and the control socket, until `stop` resolves or a shutdown
/// request comes. The engine is set up as `config` says.
pub async fn serve(name: &str, config: Config, stop: impl std::future::Future<Output = ()>) -> Result<()> {
    let engine: Arc<Engine> = Engine::new(config);
    engine.spawn_ageing();
    files::private_dir(&host::state_dir())?;
    files::write_private_atomic(&pid_path(name), ProcessId::current().to_line().as_bytes())?;
    let served = control::serve(&socket_path(name), engine, stop).await;
    let _ = fs::remove_file(pid_path(name));
    served
}
