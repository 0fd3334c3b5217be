//! The one shutdown signal of every long-running command (`run`, `logs`, `monitor`, `capture`, `demo`,
//! `bench`, `metrics serve`).

/// Resolves on the first Ctrl-C (SIGINT) or SIGTERM, whichever comes first. If SIGTERM
/// cannot be watched, Ctrl-C alone still works.
pub async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
