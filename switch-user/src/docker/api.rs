//! Docker's own API, asked (when the user names its socket with `--docker-host`) for what
//! the driver protocol does not tell: the name of the container behind an endpoint, shown as
//! its port's workload. One HTTP/1.0 GET on the daemon's Unix socket (no chunked body, the
//! connection closes after it): no HTTP client library for two calls.
use std::path::{Path, PathBuf};

use serde_json::Value;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::UnixStream,
};

use super::DriverError;

/// The daemon's socket from `unix:///run/docker.sock` or a plain path.
pub fn socket(host: &str) -> Result<PathBuf, DriverError> {
    match host.strip_prefix("unix://").unwrap_or(host) {
        p if p.starts_with('/') => Ok(PathBuf::from(p)),
        _ => Err(DriverError(format!("--docker-host {host}: the daemon's Unix socket (unix:///PATH)"))),
    }
}

/// `GET path` on the daemon at `socket`: the JSON body of a 200.
async fn get(socket: &Path, path: &str) -> Result<Value, DriverError> {
    let fail = |e: std::io::Error| DriverError(format!("asking Docker at {}: {e}", socket.display()));
    let mut s = UnixStream::connect(socket).await.map_err(fail)?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n").as_bytes()).await.map_err(fail)?;
    let mut reply = vec![];
    s.read_to_end(&mut reply).await.map_err(fail)?;
    let text = String::from_utf8_lossy(&reply);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if head.split_whitespace().nth(1) != Some("200") {
        return Err(DriverError(format!("Docker answered {path} with {}", head.lines().next().unwrap_or_default())));
    }
    serde_json::from_str(body).map_err(|e| DriverError(format!("Docker's answer to {path}: {e}")))
}

/// The name of the container whose endpoint on network `network` is `endpoint`, if Docker
/// lists it already.
pub async fn container_of(socket: &Path, network: &str, endpoint: &str) -> Result<Option<String>, DriverError> {
    // filters={"network":["ID"]}, percent-encoded.
    let path = format!("/containers/json?all=1&filters=%7B%22network%22%3A%5B%22{network}%22%5D%7D");
    let list = get(socket, &path).await?;
    let ours = list.as_array().into_iter().flatten().find(|c| {
        let nets = c["NetworkSettings"]["Networks"].as_object();
        nets.into_iter().flatten().any(|(_, n)| n["EndpointID"] == endpoint)
    });
    Ok(ours.and_then(|c| c["Names"][0].as_str()).map(|n| n.trim_start_matches('/').to_owned()))
}
