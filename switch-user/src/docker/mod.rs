//! The Docker network driver `switch docker-plugin`: Docker's libnetwork "remote driver"
//! protocol (JSON over HTTP on a Unix socket), so `docker network create -d switch` makes a
//! switch and `docker run --network NET -p ...` plugs containers into it.
//!
//! ```text
//!  dockerd ──POST /NetworkDriver.X──► docker-plugin (cli/commands/docker_plugin.rs: axum)
//!                                        └─► Driver::call ─► one handler per call group:
//!   network.rs       CreateNetwork, DeleteNetwork   controller::switch::up / down; the
//!                                                   network's options kept under DATA_DIR
//!   endpoint.rs      CreateEndpoint, DeleteEndpoint, EndpointOperInfo: the address and MAC
//!                                                   Docker's IPAM gives, kept under /run
//!   join.rs          Join, Leave                    controller::ns::attach_handed_over: a
//!                                                   port whose far end Docker moves itself
//!   connectivity.rs  Program/RevokeExternalConnectivity: `-p` as controller::forward
//!   firewall.rs      the FORWARD rule Docker's DROP policy makes a network need
//! ```
//! The driver holds nothing in memory: every call reads what the switch's state, the
//! network records and the endpoint records say, so a restarted driver carries on where the
//! last one stopped, and after a reboot (empty `/run`, Docker still has its networks) the
//! first endpoint of a network makes its switch again from the options the driver kept.
//! Every error is one line in the protocol's `{"Err": "..."}`, which `docker` shows.
mod api;
mod connectivity;
mod endpoint;
mod firewall;
mod join;
mod network;

use std::path::{Path, PathBuf};

use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

use crate::{
    error::{Context as _, Error},
    sys::{blocking, files, host},
};

/// Where Docker looks for the socket of the driver named `switch`.
pub const DEFAULT_SOCKET: &str = "/run/docker/plugins/switch.sock";
/// Where the driver keeps the options of the networks it made (they outlive a reboot).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/switch/docker";
/// The media type of the plugin protocol's replies.
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1+json";

/// An error of a call, as Docker shows it: one line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DriverError(pub String);

impl From<Error> for DriverError {
    fn from(e: Error) -> Self {
        Self(e.to_string())
    }
}

/// What a call answers, or why not.
type Reply = Result<Value, DriverError>;

/// The driver: where it keeps its records.
#[derive(Clone, Debug)]
pub struct Driver {
    /// Network records (`networks/ID.json`): they outlive a reboot.
    data_dir: PathBuf,
    /// Endpoint records (`ID.json`): they go with the ports, on a tmpfs.
    run_dir: PathBuf,
    /// Docker's own API socket, to ask for the containers' names (`--docker-host`).
    docker_api: Option<PathBuf>,
}

impl Driver {
    /// A driver keeping its network records under `data_dir`, asking Docker at `docker_host`
    /// (`unix:///PATH`) for the names of the containers, if given.
    pub fn new(data_dir: PathBuf, docker_host: Option<&str>) -> Result<Self, DriverError> {
        let docker_api = docker_host.map(api::socket).transpose()?;
        Ok(Self { data_dir, run_dir: host::state_dir().join("docker"), docker_api })
    }

    /// Picks up where a driver that stopped left off: the ports whose container namespace (or
    /// name) it had not learned yet are watched for it again.
    pub async fn resume(&self) -> Result<(), DriverError> {
        let dir = self.run_dir.clone();
        let ids: Vec<String> = blocking(move || {
            let entries = match std::fs::read_dir(&dir) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
                r => r.context(format!("reading {}", dir.display()))?,
            };
            Ok(entries.filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".json").map(str::to_owned)).collect())
        })
        .await?;
        for id in ids.iter().filter(|id| check_id("endpoint", id).is_ok()) {
            let Some(ep) = read_record::<endpoint::EndpointRecord>(self.endpoint_path(id)).await? else { continue };
            let (name, switch) = (port_name(&ep.endpoint), switch_name(&ep.network));
            if let Some((p, _)) = crate::controller::ns::attached(&name, Some(&switch)).await?
                && p.ready
                && (p.netns_cookie == 0 || (p.workload.is_none() && self.docker_api.is_some()))
                && let Some(netns) = p.netns_file()
            {
                join::learn_when_made(&ep, netns, self.docker_api.clone());
            }
        }
        Ok(())
    }

    /// Answers call `method` (e.g. `NetworkDriver.Join`) with body `body`: the reply, or
    /// `{"Err": "..."}`.
    pub async fn call(&self, method: &str, body: &[u8]) -> Value {
        match self.dispatch(method, body).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("{method}: {e}");
                json!({ "Err": e.0 })
            }
        }
    }

    async fn dispatch(&self, method: &str, body: &[u8]) -> Reply {
        // Docker sends an empty body (or `null`) to calls without arguments.
        let req: Value = if body.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(body).map_err(|e| DriverError(format!("{method}: the request is not JSON: {e}")))?
        };
        match method {
            "Plugin.Activate" => Ok(json!({ "Implements": ["NetworkDriver"] })),
            "NetworkDriver.GetCapabilities" => Ok(json!({ "Scope": "local", "ConnectivityScope": "local" })),
            "NetworkDriver.CreateNetwork" => network::create(self, parse(req)?).await,
            "NetworkDriver.DeleteNetwork" => network::delete(self, parse(req)?).await,
            "NetworkDriver.CreateEndpoint" => endpoint::create(self, parse(req)?).await,
            "NetworkDriver.DeleteEndpoint" => endpoint::delete(self, parse(req)?).await,
            "NetworkDriver.EndpointOperInfo" => endpoint::oper_info(self, parse(req)?).await,
            "NetworkDriver.Join" => join::join(self, parse(req)?).await,
            "NetworkDriver.Leave" => join::leave(self, parse(req)?).await,
            "NetworkDriver.ProgramExternalConnectivity" => connectivity::program(self, parse(req)?).await,
            "NetworkDriver.RevokeExternalConnectivity" => connectivity::revoke(self, parse(req)?).await,
            // Other hosts' discovery: a local-scope driver has nothing to do with it.
            "NetworkDriver.DiscoverNew" | "NetworkDriver.DiscoverDelete" => Ok(json!({})),
            other => Err(DriverError(format!("{other}: not a call this driver answers"))),
        }
    }
}

fn parse<T: DeserializeOwned>(req: Value) -> Result<T, DriverError> {
    serde_json::from_value(req).map_err(|e| DriverError(format!("unexpected request: {e}")))
}

/// Checks an ID Docker names a network or an endpoint by (64 hex digits): it becomes a file
/// name and part of interface names.
fn check_id(what: &str, id: &str) -> Result<(), DriverError> {
    if id.len() < 12 || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(DriverError(format!("invalid {what} ID '{id}': Docker's are 64 hex digits")));
    }
    Ok(())
}

/// The switch of network `id`: `dk-` and its first 12 hex digits, as `docker network ls`
/// shows the ID.
pub fn switch_name(network_id: &str) -> String {
    format!("dk-{}", &network_id[..12])
}

/// The port (its owner in listings) of endpoint `id`.
pub fn port_name(endpoint_id: &str) -> String {
    format!("dk-{}", &endpoint_id[..12])
}

/// The name of the container end of endpoint `id`'s veth pair on the host, until Docker
/// moves it into the container and renames it `ethN`.
fn container_end(endpoint_id: &str) -> String {
    format!("dkc{}", &endpoint_id[..12])
}

/// Reads record `path`: `None` if there is none.
async fn read_record<T: DeserializeOwned + Send + 'static>(path: PathBuf) -> Result<Option<T>, DriverError> {
    let r = blocking(move || match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::Command(format!("{}: not a record of this driver: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).context(format!("reading {}", path.display())),
    });
    Ok(r.await?)
}

/// Writes record `path` whole (a crash leaves the old one or the new one).
async fn write_record<T: Serialize>(path: PathBuf, value: &T) -> Result<(), DriverError> {
    let bytes = serde_json::to_vec_pretty(value).expect("records serialise");
    blocking(move || {
        files::private_dir(path.parent().expect("records are in a directory"))?;
        files::write_private_atomic(&path, &bytes)
    })
    .await?;
    Ok(())
}

/// Removes record `path` (gone already is fine).
async fn remove_record(path: PathBuf) -> Result<(), DriverError> {
    blocking(move || match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).context(format!("removing {}", path.display())),
        _ => Ok(()),
    })
    .await?;
    Ok(())
}

fn record_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.json"))
}
