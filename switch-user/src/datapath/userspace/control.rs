//! The control protocol of the userspace switch: JSON lines over a unix stream socket.
//!
//! ```text
//!   CLI (request)                          switch run (serve)
//!   {"op":"stats","slot":0}\n  ──────►  Engine::stats(0)
//!   ◄──────  {"status":"stats","stats":{"rx_packets":..}}\n
//! ```
//!
//! One request line gets one response line; a connection may carry several in turn. The
//! socket is root's only (mode 0600): whoever can talk to it can add ports to the switch.
use std::{
    future::Future,
    io,
    os::unix::fs::{FileTypeExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use switch_common::PortStats;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::Notify,
};

use super::engine::{Engine, Guard};
use crate::error::{Context as _, Error, Result};

/// Longest request or response line accepted. An FDB of 16 384 stations is about 1.5 MB of
/// JSON; anything beyond this is not a peer speaking the protocol.
const MAX_LINE: u64 = 8 << 20;
/// How long a client waits for its answer: every request is quick, so a silent server is stuck.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (e.g. out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A request to the userspace switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Make the interface a port in `slot` ([`Engine::add_port`]).
    AddPort {
        /// Port slot (below `MAX_PORTS`).
        slot: u32,
        /// Interface index of the host-side veth.
        ifindex: u32,
        /// Its name, for messages and to check the index.
        ifname: String,
        /// Port security (what the port is bound to). Absent: the port keeps what it has
        /// (a new one is bound to nothing).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        guard: Option<Guard>,
    },
    /// Remove the port in `slot` ([`Engine::del_port`]).
    DelPort {
        /// Port slot.
        slot: u32,
    },
    /// The live FDB entries.
    Fdb,
    /// Add a static entry ([`Engine::fdb_add_static`]).
    FdbAdd {
        /// Station MAC.
        mac: [u8; 6],
        /// Interface index of the port it is behind.
        ifindex: u32,
    },
    /// Delete an entry ([`Engine::fdb_del`]).
    FdbDel {
        /// Station MAC.
        mac: [u8; 6],
    },
    /// Counters of a port.
    Stats {
        /// Port slot.
        slot: u32,
    },
    /// Set the ageing time of dynamic entries.
    SetAgeing {
        /// Seconds.
        secs: u64,
    },
    /// Is the switch there?
    Ping,
    /// Stop serving (answered with `Ok` first).
    Shutdown,
}

/// One FDB entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbRecord {
    /// Station MAC.
    pub mac: [u8; 6],
    /// Interface index of its port.
    pub ifindex: u32,
    /// Added by the operator: never aged, never moved.
    pub is_static: bool,
    /// Nanoseconds since the station was last seen (since it was added, for static entries).
    pub age_ns: u64,
}

/// Counters of a port: the datapath's own [`PortStats`], serialised as they are.
pub type StatsRecord = PortStats;

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Response {
    /// Done.
    Ok,
    /// Answer to [`Request::Fdb`].
    Fdb {
        /// Live entries, in no particular order.
        entries: Vec<FdbRecord>,
    },
    /// Answer to [`Request::Stats`].
    Stats {
        /// The port's counters.
        stats: StatsRecord,
    },
    /// Answer to [`Request::FdbDel`].
    Deleted {
        /// Whether the entry was there.
        existed: bool,
    },
    /// The request failed or could not be read.
    Error {
        /// Why, in one line.
        message: String,
    },
}

/// Client: connects, sends one request, reads one response. Errors are `Error::Io` naming the
/// socket path.
pub async fn request(socket: &Path, req: &Request) -> Result<Response> {
    let at = socket.display();
    tokio::time::timeout(REQUEST_TIMEOUT, exchange(socket, req)).await.unwrap_or_else(|_| {
        Err(Error::Io {
            context: format!("waiting for the userspace switch at {at} to answer"),
            source: io::ErrorKind::TimedOut.into(),
        })
    })
}

async fn exchange(socket: &Path, req: &Request) -> Result<Response> {
    let at = socket.display();
    let mut stream =
        UnixStream::connect(socket).await.context(format!("connecting to the userspace switch at {at}"))?;
    let mut line = serde_json::to_vec(req).map_err(io::Error::from).context("encoding a request")?;
    line.push(b'\n');
    stream.write_all(&line).await.context(format!("sending a request to the userspace switch at {at}"))?;
    let mut answer = String::new();
    let mut reader = BufReader::new(stream).take(MAX_LINE);
    reader.read_line(&mut answer).await.context(format!("reading the answer of the userspace switch at {at}"))?;
    if answer.is_empty() {
        return Err(io::Error::from(io::ErrorKind::UnexpectedEof))
            .context(format!("the userspace switch at {at} closed the connection without answering"));
    }
    serde_json::from_str(&answer)
        .map_err(io::Error::from)
        .context(format!("reading the answer of the userspace switch at {at}"))
}

/// Server: removes a stale socket file, binds, serves requests against `engine` until
/// `shutdown` resolves or a `Shutdown` request arrives (answered `Ok` first), then removes the
/// socket file. Each connection is handled in its own task.
pub async fn serve(socket: &Path, engine: Arc<Engine>, shutdown: impl Future<Output = ()>) -> Result<()> {
    let listener = bind(socket).await?;
    // Also removes the file if this future is dropped half-way.
    let _socket_file = RemoveOnDrop(socket.to_path_buf());
    let stop = Arc::new(Notify::new());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            // notify_one keeps a permit when nobody waits, so a Shutdown request answered
            // between two turns of this loop is not lost.
            () = stop.notified() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(handle(stream, Arc::clone(&engine), Arc::clone(&stop)));
                }
                Err(e) => {
                    tracing::warn!("userspace switch: accepting on {}: {e}", socket.display());
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    Ok(())
}

/// Binds the socket, replacing a stale file from a process that is gone, but never a live
/// server's socket or a file that is not a socket.
async fn bind(socket: &Path) -> Result<UnixListener> {
    let at = socket.display();
    if let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir).await.context(format!("creating {}", dir.display()))?;
    }
    match tokio::fs::symlink_metadata(socket).await {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(Error::Command(format!("{at} exists and is not a socket; not replacing it")));
        }
        Ok(_) => {
            if UnixStream::connect(socket).await.is_ok() {
                return Err(Error::Command(format!("a userspace switch is already serving {at}")));
            }
            tokio::fs::remove_file(socket).await.context(format!("removing the stale socket {at}"))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).context(format!("inspecting {at}")),
    }
    let listener = UnixListener::bind(socket).context(format!("listening on {at}"))?;
    tokio::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .await
        .context(format!("restricting {at} to root"))?;
    Ok(listener)
}

/// Removes the socket file when the server stops.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!("userspace switch: removing {}: {e}", self.0.display());
        }
    }
}

/// Answers the requests of one connection, in order, until the peer closes it.
async fn handle(stream: UnixStream, engine: Arc<Engine>, stop: Arc<Notify>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = String::new();
    loop {
        line.clear();
        match (&mut reader).take(MAX_LINE).read_line(&mut line).await {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                tracing::debug!("userspace switch: reading a request: {e}");
                return;
            }
        }
        let (response, shut_down) = match serde_json::from_str::<Request>(&line) {
            Ok(req) => {
                let shut_down = matches!(req, Request::Shutdown);
                // Off the runtime's workers: the engine takes a mutex, opens and binds sockets.
                let engine = Arc::clone(&engine);
                let response = tokio::task::spawn_blocking(move || execute(&engine, &req))
                    .await
                    .unwrap_or_else(|e| Response::Error { message: format!("the request failed: {e}") });
                (response, shut_down)
            }
            Err(e) => (Response::Error { message: format!("invalid request: {e}") }, false),
        };
        if let Err(e) = send(&mut write, &response).await {
            tracing::debug!("userspace switch: answering a request: {e}");
            return;
        }
        if shut_down {
            stop.notify_one();
            return;
        }
        if !line.ends_with('\n') {
            // Cut off at MAX_LINE (the error was answered) or at end of stream: nothing more
            // can be read in step.
            return;
        }
    }
}

async fn send(write: &mut (impl tokio::io::AsyncWrite + Unpin), response: &Response) -> io::Result<()> {
    let mut out = serde_json::to_vec(response)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    write.flush().await
}

/// Runs one request against the engine.
fn execute(engine: &Arc<Engine>, req: &Request) -> Response {
    match req {
        Request::AddPort { slot, ifindex, ifname, guard } => done(engine.add_port(*slot, *ifindex, ifname, *guard)),
        Request::DelPort { slot } => done(engine.del_port(*slot)),
        Request::Fdb => Response::Fdb { entries: engine.fdb().into_iter().map(record).collect() },
        Request::FdbAdd { mac, ifindex } => done(engine.fdb_add_static(*mac, *ifindex)),
        Request::FdbDel { mac } => Response::Deleted { existed: engine.fdb_del(*mac) },
        Request::Stats { slot } => Response::Stats { stats: engine.stats(*slot) },
        Request::SetAgeing { secs } => {
            engine.set_ageing(Duration::from_secs(*secs));
            Response::Ok
        }
        Request::Ping | Request::Shutdown => Response::Ok,
    }
}

fn done(result: Result<()>) -> Response {
    match result {
        Ok(()) => Response::Ok,
        Err(e) => Response::Error { message: e.to_string() },
    }
}

fn record((mac, ifindex, is_static, age): ([u8; 6], u32, bool, Duration)) -> FdbRecord {
    FdbRecord { mac, ifindex, is_static, age_ns: u64::try_from(age.as_nanos()).unwrap_or(u64::MAX) }
}

#[cfg(test)]
mod tests {
    use super::{super::engine::Config, *};

    fn round_trip<T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug>(value: T, json: &str) {
        assert_eq!(serde_json::to_string(&value).ok().as_deref(), Some(json));
        assert_eq!(serde_json::from_str::<T>(json).ok(), Some(value));
    }

    #[test]
    fn requests_are_tagged_by_op() {
        round_trip(
            Request::AddPort { slot: 2, ifindex: 17, ifname: "sred-1".into(), guard: None },
            r#"{"op":"add_port","slot":2,"ifindex":17,"ifname":"sred-1"}"#,
        );
        round_trip(
            Request::AddPort {
                slot: 2,
                ifindex: 17,
                ifname: "sred-1".into(),
                guard: Some(Guard { flags: 6, mac: [2, 0, 0, 0, 0, 1], ip: 7, ..Guard::default() }),
            },
            r#"{"op":"add_port","slot":2,"ifindex":17,"ifname":"sred-1","guard":{"flags":6,"mac":[2,0,0,0,0,1],"ip":7}}"#,
        );
        round_trip(Request::DelPort { slot: 2 }, r#"{"op":"del_port","slot":2}"#);
        round_trip(Request::Fdb, r#"{"op":"fdb"}"#);
        round_trip(
            Request::FdbAdd { mac: [2, 0, 0, 0, 0, 1], ifindex: 5 },
            r#"{"op":"fdb_add","mac":[2,0,0,0,0,1],"ifindex":5}"#,
        );
        round_trip(Request::FdbDel { mac: [2, 0, 0, 0, 0, 1] }, r#"{"op":"fdb_del","mac":[2,0,0,0,0,1]}"#);
        round_trip(Request::Stats { slot: 0 }, r#"{"op":"stats","slot":0}"#);
        round_trip(Request::SetAgeing { secs: 30 }, r#"{"op":"set_ageing","secs":30}"#);
        round_trip(Request::Ping, r#"{"op":"ping"}"#);
        round_trip(Request::Shutdown, r#"{"op":"shutdown"}"#);
    }

    #[test]
    fn responses_are_tagged_by_status() {
        round_trip(Response::Ok, r#"{"status":"ok"}"#);
        round_trip(Response::Deleted { existed: true }, r#"{"status":"deleted","existed":true}"#);
        round_trip(Response::Error { message: "no".into() }, r#"{"status":"error","message":"no"}"#);
        round_trip(
            Response::Fdb {
                entries: vec![FdbRecord { mac: [2, 0, 0, 0, 0, 1], ifindex: 3, is_static: false, age_ns: 7 }],
            },
            r#"{"status":"fdb","entries":[{"mac":[2,0,0,0,0,1],"ifindex":3,"is_static":false,"age_ns":7}]}"#,
        );
        let stats = StatsRecord { rx_packets: 1, tx_errors: 8, ..StatsRecord::default() };
        let json = serde_json::to_string(&Response::Stats { stats }).unwrap_or_default();
        assert!(json.starts_with(r#"{"status":"stats","stats":{"rx_packets":1,"#), "{json}");
        assert_eq!(serde_json::from_str::<Response>(&json).ok(), Some(Response::Stats { stats }));
    }

    fn socket_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("switch-control-test-{}-{name}.sock", std::process::id()))
    }

    #[tokio::test]
    async fn serves_requests_until_shutdown_request() {
        let path = socket_path("shutdown");
        let engine = Engine::new(Config::new(Duration::from_secs(300)));
        let server = tokio::spawn({
            let path = path.clone();
            async move { serve(&path, engine, std::future::pending()).await }
        });
        // Wait for the socket to appear.
        let mut answer = None;
        for _ in 0..100 {
            if let Ok(r) = request(&path, &Request::Ping).await {
                answer = Some(r);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(answer, Some(Response::Ok));
        // A second server on the same live socket is refused.
        let other = serve(&path, Engine::new(Config::new(Duration::from_secs(1))), std::future::pending()).await;
        assert!(matches!(other, Err(Error::Command(_))), "{other:?}");

        let ask = |req: Request| {
            let path = path.clone();
            async move { request(&path, &req).await.unwrap_or_else(|e| Response::Error { message: e.to_string() }) }
        };
        assert_eq!(ask(Request::Fdb).await, Response::Fdb { entries: vec![] });
        assert_eq!(ask(Request::Stats { slot: 3 }).await, Response::Stats { stats: StatsRecord::default() });
        assert_eq!(ask(Request::SetAgeing { secs: 5 }).await, Response::Ok);
        assert_eq!(ask(Request::FdbDel { mac: [2, 0, 0, 0, 0, 1] }).await, Response::Deleted { existed: false });
        assert_eq!(ask(Request::DelPort { slot: 9 }).await, Response::Ok);
        let add = ask(Request::FdbAdd { mac: [2, 0, 0, 0, 0, 1], ifindex: 4242 }).await;
        assert!(matches!(&add, Response::Error { message } if message.contains("4242")), "{add:?}");

        // A line that is not a request gets an error, and the connection stays usable.
        let mut stream = UnixStream::connect(&path).await.unwrap_or_else(|e| panic!("{e}"));
        stream.write_all(b"{\"op\":\"fly\"}\n{\"op\":\"ping\"}\n").await.unwrap_or_else(|e| panic!("{e}"));
        let mut lines = BufReader::new(stream).lines();
        let first = lines.next_line().await.ok().flatten().unwrap_or_default();
        assert!(first.contains(r#""status":"error""#), "{first}");
        assert_eq!(lines.next_line().await.ok().flatten().as_deref(), Some(r#"{"status":"ok"}"#));

        assert_eq!(ask(Request::Shutdown).await, Response::Ok);
        let served = tokio::time::timeout(Duration::from_secs(5), server).await;
        assert!(matches!(served, Ok(Ok(Ok(())))), "{served:?}");
        assert!(!path.exists(), "socket file removed");
        let gone = request(&path, &Request::Ping).await;
        assert!(
            matches!(&gone, Err(Error::Io { context, .. }) if context.contains(&path.display().to_string())),
            "{gone:?}"
        );
    }

    #[tokio::test]
    async fn stops_when_shutdown_future_resolves_and_replaces_stale_socket() {
        let path = socket_path("future");
        // A stale socket file: bound, then its listener dropped.
        drop(std::os::unix::net::UnixListener::bind(&path));
        assert!(path.exists());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn({
            let path = path.clone();
            async move {
                serve(&path, Engine::new(Config::new(Duration::from_secs(300))), async {
                    let _ = rx.await;
                })
                .await
            }
        });
        let mut up = false;
        for _ in 0..100 {
            if request(&path, &Request::Ping).await.is_ok() {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(up);
        let _ = tx.send(());
        let served = tokio::time::timeout(Duration::from_secs(5), server).await;
        assert!(matches!(served, Ok(Ok(Ok(())))), "{served:?}");
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn refuses_to_replace_a_file_that_is_not_a_socket() {
        let path = socket_path("regular");
        std::fs::write(&path, b"x").unwrap_or_else(|e| panic!("{e}"));
        let served = serve(&path, Engine::new(Config::new(Duration::from_secs(1))), std::future::ready(())).await;
        assert!(matches!(served, Err(Error::Command(_))), "{served:?}");
        assert!(path.exists());
        let _ = std::fs::remove_file(&path);
    }
}
