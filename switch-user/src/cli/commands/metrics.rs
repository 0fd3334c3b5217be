//! `switch metrics [serve]`: the Prometheus exposition of every switch, once on stdout or
//! over HTTP (axum) until Ctrl-C or SIGTERM.
use std::{net::SocketAddr, sync::Arc};

use anyhow::{Context as _, Result, bail};
use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use switch::controller::metrics::{self, CONTENT_TYPE};
use tokio::sync::Semaphore;

use crate::cli::{
    args::{MetricsArgs, MetricsCommand},
    output::Reply,
    signal,
};

/// Prints the metrics once, or serves them.
pub async fn do_metrics(a: MetricsArgs) -> Result<Reply> {
    match a.command {
        None => {
            let c = metrics::collect().await?;
            if let Some((switch, e)) = c.errors.first() {
                bail!("reading switch '{switch}': {e}");
            }
            Ok(Reply::new(&c, metrics::encode(&c)?))
        }
        Some(MetricsCommand::Serve { listen }) => serve(listen).await,
    }
}

async fn serve(listen: SocketAddr) -> Result<Reply> {
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listening on {listen}"))?;
    let local = listener.local_addr().context("reading the listening address")?;
    if !local.ip().is_loopback() {
        eprintln!(
            "warning: metrics on {local} are open to every host that can reach it: they name the \
             namespaces, their interfaces and forwarded addresses"
        );
    }
    eprintln!("serving metrics at http://{local}/metrics; Ctrl-C to stop");
    let app = Router::new().route("/metrics", get(scrape)).with_state(Arc::new(Semaphore::new(metrics::MAX_SCRAPES)));
    axum::serve(listener, app).with_graceful_shutdown(signal::shutdown()).await.context("serving metrics")?;
    Ok(Reply::done())
}

/// One scrape: fresh numbers. A switch that cannot be read is left out of this scrape and
/// said on stderr, so the others are still scraped; a state that cannot be read at all is a
/// 500 with the reason. Beyond `MAX_SCRAPES` at once, a 503 (Prometheus tries again at its
/// next interval).
async fn scrape(State(running): State<Arc<Semaphore>>) -> Response {
    let Ok(_permit) = running.try_acquire_owned() else {
        let busy = format!("error: {} scrapes are running already; try again\n", metrics::MAX_SCRAPES);
        return (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "1")], busy).into_response();
    };
    let text = metrics::collect().await.and_then(|c| {
        for (switch, e) in &c.errors {
            tracing::warn!("metrics: switch '{switch}' left out of this scrape: {e}");
        }
        metrics::encode(&c)
    });
    match text {
        Ok(body) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("error: {e}\n")).into_response(),
    }
}
