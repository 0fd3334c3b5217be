//! `switch docker-plugin`: Docker's network driver, served over HTTP (axum) on a Unix socket
//! until Ctrl-C or SIGTERM; the socket is removed on the way out.
use std::{path::Path, sync::Arc};

use anyhow::{Context as _, Result, bail};
use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{Uri, header},
    response::{IntoResponse, Response},
};
use switch::docker::{CONTENT_TYPE, Driver};

use crate::cli::{args::DockerPluginArgs, output::Reply, signal};

/// Serves the driver until the shutdown signal.
pub async fn do_docker_plugin(a: DockerPluginArgs) -> Result<Reply> {
    switch::sys::preflight::check()?;
    let listener = listen(&a.socket).await?;
    eprintln!("serving Docker's network driver on {}; Ctrl-C to stop", a.socket.display());
    let driver = Driver::new(a.data_dir, a.docker_host.as_deref())?;
    driver.resume().await?;
    let app = Router::new().fallback(call).with_state(Arc::new(driver));
    let served = axum::serve(listener, app).with_graceful_shutdown(signal::shutdown()).await;
    let _ = tokio::fs::remove_file(&a.socket).await;
    served.context("serving the Docker driver")?;
    Ok(Reply::done())
}

/// Binds `path`: a socket left by a driver that died is replaced, one a live driver serves is
/// not.
async fn listen(path: &Path) -> Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await.with_context(|| format!("making {}", dir.display()))?;
    }
    if tokio::fs::try_exists(path).await.unwrap_or(false) {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            bail!("{} is served already (another docker-plugin?)", path.display());
        }
        tokio::fs::remove_file(path).await.with_context(|| format!("removing the stale socket {}", path.display()))?;
    }
    tokio::net::UnixListener::bind(path).with_context(|| format!("listening on {}", path.display()))
}

/// One call: `POST /Plugin.Activate`, `POST /NetworkDriver.Join`, ...; always 200, errors as
/// `{"Err": "..."}` (what Docker shows).
async fn call(State(driver): State<Arc<Driver>>, uri: Uri, body: Bytes) -> Response {
    let method = uri.path().trim_start_matches('/');
    let reply = driver.call(method, &body).await;
    tracing::info!("{method}: {reply}");
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], reply.to_string()).into_response()
}
