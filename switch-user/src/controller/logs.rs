//! `switch logs`: the datapath's aya-log records, live.
//!
//! Logging costs on every frame, so the datapath only logs while CFG_F_LOG is set. This command
//! sets it, streams the records from the program's ring buffer, and clears it again on exit.
use std::io::Write as _;

use switch_common::CFG_F_LOG;
use tokio::io::unix::AsyncFd;

use super::{blocking, lock};
use crate::{
    datapath::ebpf::{Pins, maps::SwitchMaps},
    error::{Error, Result, bpf},
    names::validate_name,
};

/// Prints records as `LEVEL message` lines on stdout.
struct Printer;

impl log::Log for Printer {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{:<5} {}", record.level(), record.args());
    }
    fn flush(&self) {}
}

async fn set_logging(switch: &str, on: bool) -> Result<()> {
    let pins = Pins::new(switch);
    blocking(move || {
        let mut maps = SwitchMaps::open(&pins)?;
        let mut cfg = maps.config()?;
        cfg.flags = if on { cfg.flags | CFG_F_LOG } else { cfg.flags & !CFG_F_LOG };
        maps.set_config(cfg)
    })
    .await
}

/// Streams `switch`'s datapath log until `stop` resolves; `started` is called once the
/// switch is known to have a log.
pub async fn follow(switch: &str, started: impl FnOnce(), stop: impl std::future::Future<Output = ()>) -> Result<()> {
    validate_name("switch name", switch)?;
    {
        // Hold the lock only to check the switch: streaming must not block other commands.
        let store = lock().await?;
        let state = store.load()?;
        super::ebpf_switch(&state, switch, "switch logs", "a datapath log")?;
    }
    let pins = Pins::new(switch);
    let id = blocking(move || pins.prog_id()).await?;
    let logger = aya_log::EbpfLogger::init_from_id_with_logger(id, Printer).map_err(bpf("opening the datapath log"))?;
    // SAFETY: the logger owns its ring buffer fd and keeps it open, unchanged, for as long as
    // the AsyncFd owns the logger.
    let mut fd = unsafe { AsyncFd::register(logger) }
        .map_err(|e| Error::Io { context: "watching the datapath log".into(), source: e.into() })?;
    set_logging(switch, true).await?;
    started();
    tokio::pin!(stop);
    let streamed = async {
        loop {
            tokio::select! {
                _ = &mut stop => return Ok(()),
                guard = fd.readable_mut() => {
                    let mut guard = guard.map_err(|e| Error::Io { context: "reading the datapath log".into(), source: e })?;
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
            }
        }
    }
    .await;
    set_logging(switch, false).await?;
    streamed
}
