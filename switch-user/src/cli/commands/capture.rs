//! `switch capture`.
use std::{
    fs::File,
    io::{BufWriter, ErrorKind, Write},
    path::PathBuf,
    sync::mpsc,
    thread,
};

use anyhow::{Context as _, Result};
use serde::Serialize;
use switch::controller::capture::{self, Captured, Options, PcapngFile, Summary};

use crate::cli::{args::CaptureArgs, output, output::Reply, signal};

/// Where the frames go.
enum Sink {
    /// A pcapng file (or standard output).
    Pcapng(PcapngFile<BufWriter<Box<dyn Write + Send>>>),
    /// One line (or JSON object) per frame on standard output.
    Lines { json: bool },
}

impl Sink {
    fn write(&mut self, c: &Captured) -> std::io::Result<()> {
        match self {
            Self::Pcapng(file) => file.write(c),
            Self::Lines { json } => {
                let line =
                    if *json { serde_json::to_string(c).expect("frames serialise") } else { output::capture_line(c) };
                writeln!(std::io::stdout().lock(), "{line}")
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Pcapng(file) => file.flush(),
            Self::Lines { .. } => std::io::stdout().flush(),
        }
    }

    fn finish(self) -> std::io::Result<()> {
        match self {
            Self::Pcapng(file) => file.finish().map(drop),
            Self::Lines { .. } => std::io::stdout().flush(),
        }
    }
}

/// Makes capture file `path` new, readable by its owner only: it holds other namespaces'
/// traffic. Never writes into a file that exists (someone else's, planted in a shared
/// directory, would keep its owner and mode and hand them the frames; a hard link would
/// overwrite what it links to), nor through a symbolic link. With `force`, an existing file is
/// replaced only if it is a regular file of the caller's, not linked elsewhere.
fn create_private(path: &std::path::Path, force: bool) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let at = path.display();
    let new = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path);
    match new {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == ErrorKind::AlreadyExists && !force => {
            anyhow::bail!("{at} exists; give a new file name, or --force to replace a file of your own")
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => replace_own(path),
        Err(e) => Err(e).with_context(|| format!("creating {at}")),
    }
}

/// Opens the existing file `path` for `--force`: never through a link (O_NOFOLLOW), without
/// blocking on a FIFO (O_NONBLOCK); then checks what was opened, not the name (which may
/// change meanwhile): a regular file, owned by the caller, with no other name. It is emptied
/// and made 0600.
fn replace_own(path: &std::path::Path) -> Result<File> {
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
    let at = path.display();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("opening {at} to replace it (a symbolic link is never followed)"))?;
    let meta = f.metadata().with_context(|| format!("inspecting {at}"))?;
    // SAFETY: getuid has no preconditions and cannot fail.
    let me = unsafe { libc::getuid() };
    if !meta.file_type().is_file() {
        anyhow::bail!("{at} is not a regular file; not replacing it");
    }
    if meta.uid() != me {
        anyhow::bail!("{at} belongs to user {}, not to you; not replacing it (give a new file name)", meta.uid());
    }
    if meta.nlink() != 1 {
        anyhow::bail!("{at} has other names (hard links); not replacing it (give a new file name)");
    }
    f.set_len(0).with_context(|| format!("emptying {at}"))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600)).with_context(|| format!("restricting {at}"))?;
    // O_NONBLOCK stays: it changes nothing for a regular file.
    Ok(f)
}

/// The report of a capture written to a file.
#[derive(Serialize)]
struct Written {
    file: PathBuf,
    #[serde(flatten)]
    summary: Summary,
}

/// Captures until Ctrl-C, SIGTERM or `-c` frames. Frames are written by a thread of their own:
/// file and terminal writes never block the runtime that reads the ring.
pub async fn do_capture(a: CaptureArgs, json: bool) -> Result<Reply> {
    let snaplen = if a.snaplen == 0 { switch_common::capture::MAX_SNAPLEN } else { a.snaplen };
    let to_file = a.write.as_ref().filter(|p| p.as_os_str() != "-").cloned();
    let sink = match &a.write {
        None => Sink::Lines { json },
        Some(path) => {
            let out: Box<dyn Write + Send> = match &to_file {
                Some(_) => Box::new(create_private(path, a.force)?),
                None => Box::new(std::io::stdout()),
            };
            Sink::Pcapng(PcapngFile::new(BufWriter::new(out), &a.switch, snaplen).context("starting the capture file")?)
        }
    };
    // Bounded: a writer slower than a flood (a terminal, a slow disk) loses frames, counted,
    // instead of holding an ever longer queue.
    let (tx, rx) = mpsc::sync_channel::<Captured>(capture::QUEUE);
    let writer = thread::spawn(move || -> std::io::Result<()> {
        let mut sink = sink;
        while let Ok(c) = rx.recv() {
            sink.write(&c)?;
            // What else is queued, then one flush: a reader at the other end of a pipe
            // (`-w - | tcpdump -r -`) sees every frame at once, without a write per frame
            // under load.
            while let Ok(c) = rx.try_recv() {
                sink.write(&c)?;
            }
            sink.flush()?;
        }
        sink.finish()
    });
    // Never waits: a full queue loses the frame (WouldBlock); a disconnected one means the
    // writer stopped on an error, which `join` reports below.
    let show = move |c: &Captured| {
        tx.try_send(c.clone()).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => std::io::Error::from(ErrorKind::WouldBlock),
            mpsc::TrySendError::Disconnected(_) => std::io::Error::from(ErrorKind::BrokenPipe),
        })
    };
    let what = match (&a.namespace, &a.port) {
        (Some(ns), _) => format!("namespace {ns}'s port"),
        (_, Some(port)) => format!("port {port}"),
        _ => "every port".to_owned(),
    };
    let name = a.switch.clone();
    let started = move || eprintln!("capturing on switch '{name}', {what}; Ctrl-C to stop");
    let opts = Options {
        switch: a.switch,
        namespace: a.namespace,
        port: a.port,
        verdicts: a.verdict,
        count: a.count,
        snaplen,
    };
    let captured = capture::run(opts, show, started, signal::shutdown()).await;
    // The writer ends once `show` (and with it the sender) is gone: it was moved into `run`.
    let written = tokio::task::spawn_blocking(move || writer.join()).await?;
    let written = written.unwrap_or_else(|_| Err(std::io::Error::other("the capture writer panicked")));
    match written {
        // A reader that went away (`| head`) ends the capture like Ctrl-C.
        Err(e) if e.kind() == ErrorKind::BrokenPipe => return Ok(Reply::done()),
        Err(e) => return Err(e).context("writing the captured frames"),
        Ok(()) => {}
    }
    let summary = captured?;
    let text = format!("{} frames captured, {} lost", summary.captured, summary.lost);
    match to_file {
        Some(file) => {
            Ok(Reply::new(&Written { file: file.clone(), summary }, format!("{text}; written to {}", file.display())))
        }
        // Standard output carries the frames: the count goes to stderr, as tcpdump's does.
        None => {
            eprintln!("{text}");
            Ok(Reply::done())
        }
    }
}
