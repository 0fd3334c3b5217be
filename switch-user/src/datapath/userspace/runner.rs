//! `switch run`: the userspace switch process run by hand in the foreground, or as the
//! daemon `switch up --datapath userspace` starts (`--daemon`). Either serves the engine and
//! the control socket (`daemon::serve`) until told to stop; the switch's record and ports
//! belong to the controller, which makes and removes them around the foreground runner.
use std::{future::Future, time::Duration};

use super::{daemon, engine::Config};
use crate::{
    error::{Error, Result},
    names::validate_name,
};

/// `switch run --daemon`: the background process `up --datapath userspace` starts. Serves
/// until a shutdown request or `stop` (SIGTERM).
pub async fn daemon(name: &str, config: Config, stop: impl Future<Output = ()>) -> Result<()> {
    validate_name("switch name", name)?;
    daemon::serve(name, config, stop).await
}

/// `switch run` in the foreground: serves switch `name` until `stop` (Ctrl-C or SIGTERM).
/// `up` runs once the control socket answers (the controller marks the switch ready there);
/// a failure of it stops the process.
pub async fn foreground(
    name: &str,
    config: Config,
    up: impl Future<Output = Result<()>>,
    stop: impl Future<Output = ()>,
) -> Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = daemon::serve(name, config, async move {
        let _ = stop_rx.await;
    });
    tokio::pin!(server);
    // Mark the switch up once its control socket answers, then wait for the stop signal.
    let marked = async {
        for _ in 0..200 {
            if daemon::alive(name).await {
                up.await?;
                eprintln!("userspace switch '{name}' is up; Ctrl-C or SIGTERM stops it and removes it");
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err(Error::Command(format!("switch '{name}' did not answer on its control socket")))
    };
    tokio::select! {
        r = &mut server => r,
        r = async { marked.await?; stop.await; Ok::<_, Error>(()) } => match r {
            Ok(()) => {
                let _ = stop_tx.send(());
                server.await
            }
            Err(e) => Err(e),
        },
    }
}
