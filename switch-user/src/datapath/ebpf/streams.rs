//! What the programs stream to readers while one listens: the log (aya-log), events
//! (`switch monitor`) and captured frames (`switch capture`), each switched on by a flag in
//! CONFIG.
use std::io::Write as _;

use async_trait::async_trait;
use switch_common::{CFG_F_CAPTURE, CFG_F_EVENTS, CFG_F_LOG, maps as names};
use tokio::io::unix::AsyncFd;

use super::{Ebpf, NatMaps, SwitchMaps, maps};
use crate::{
    datapath::{DatapathCapture, DatapathEvents, DatapathLog, RingSink, TablesNow},
    error::{Error, Result, bpf},
    sys::{blocking, clock::now_ns},
};

/// Prints aya-log records as `LEVEL message` lines on stdout.
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

#[async_trait]
impl DatapathLog for Ebpf {
    /// The programs only log while CFG_F_LOG is set in CONFIG.
    async fn set_logging(&self, on: bool) -> Result<()> {
        self.set_flag(CFG_F_LOG, on).await
    }

    async fn stream(
        &self,
        started: Box<dyn FnOnce() + Send>,
        mut stop: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    ) -> Result<()> {
        let pins = self.pins.clone();
        let id = blocking(move || pins.prog_id()).await?;
        let logger =
            aya_log::EbpfLogger::init_from_id_with_logger(id, Printer).map_err(bpf("opening the datapath log"))?;
        // SAFETY: the logger owns its ring buffer fd and keeps it open, unchanged, for as long
        // as the AsyncFd owns the logger.
        let mut fd = unsafe { AsyncFd::register(logger) }
            .map_err(|e| Error::Io { context: "watching the datapath log".into(), source: e.into() })?;
        started();
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
}

impl Ebpf {
    /// Sets or clears `flag` in CONFIG.
    async fn set_flag(&self, flag: u32, on: bool) -> Result<()> {
        self.with_maps(move |mut maps| {
            let mut cfg = maps.config()?;
            cfg.flags = if on { cfg.flags | flag } else { cfg.flags & !flag };
            maps.set_config(cfg)
        })
        .await
    }
}

#[async_trait]
impl DatapathEvents for Ebpf {
    /// The programs only emit events while CFG_F_EVENTS is set in CONFIG.
    async fn set_events(&self, on: bool) -> Result<()> {
        self.set_flag(CFG_F_EVENTS, on).await
    }

    async fn tables_now(&self) -> Result<TablesNow> {
        let pins = self.pins.clone();
        blocking(move || {
            let maps = SwitchMaps::open(&pins)?;
            let ageing_ns = maps.config()?.ageing_ns;
            let stations = maps.fdb_entries()?.into_iter().filter(|(_, e)| !e.is_static()).map(|(k, e)| (k.addr, e));
            let stations = stations.collect();
            // A switch without port forwarding has empty connection tables.
            let connections = NatMaps::open(&pins).map(|n| n.dnat_entries()).unwrap_or_default();
            Ok(TablesNow { now_ns: now_ns(), ageing_ns, stations, connections })
        })
        .await
    }

    async fn stream(
        &self,
        mut sink: Box<dyn FnMut(switch_common::events::Event) + Send>,
        started: Box<dyn FnOnce() + Send>,
        stop: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    ) -> Result<()> {
        let sink = Box::new(move |item: &[u8]| {
            if let Some(e) = maps::decode_event(item) {
                sink(e);
            }
        });
        self.read_ring(names::EVENTS, "the datapath's events", sink, started, stop).await
    }
}

#[async_trait]
impl DatapathCapture for Ebpf {
    /// The filter first, then the flag: the programs never see the flag with a stale filter.
    async fn set_capture(&self, filter: Option<switch_common::capture::Filter>) -> Result<()> {
        if let Some(filter) = filter {
            let pins = self.pins.clone();
            blocking(move || maps::set_capture_filter(&pins, filter)).await?;
        }
        self.set_flag(CFG_F_CAPTURE, filter.is_some()).await
    }

    async fn stream(
        &self,
        sink: RingSink,
        started: Box<dyn FnOnce() + Send>,
        stop: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    ) -> Result<()> {
        self.read_ring(names::CAPTURE, "captured frames", sink, started, stop).await
    }
}

impl Ebpf {
    /// Hands every item of ring buffer `ring` to `sink` until `stop` resolves, waiting on the
    /// ring's descriptor (epoll) while it is empty.
    async fn read_ring(
        &self,
        ring: &'static str,
        what: &str,
        mut sink: RingSink,
        started: Box<dyn FnOnce() + Send>,
        mut stop: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    ) -> Result<()> {
        let pins = self.pins.clone();
        let ring = blocking(move || maps::ring(&pins, ring)).await?;
        // SAFETY: the ring buffer owns its map fd and keeps it open, unchanged, for as long as
        // the AsyncFd owns the ring buffer.
        let mut fd = unsafe { AsyncFd::register(ring) }
            .map_err(|e| Error::Io { context: format!("watching {what}"), source: e.into() })?;
        started();
        loop {
            tokio::select! {
                _ = &mut stop => return Ok(()),
                guard = fd.readable_mut() => {
                    let mut guard = guard.map_err(|e| Error::Io { context: format!("reading {what}"), source: e })?;
                    // Consuming a ring buffer item is a memory read, not a system call: fine on
                    // a tokio worker.
                    while let Some(item) = guard.get_inner_mut().next() {
                        sink(&item);
                    }
                    guard.clear_ready();
                }
            }
        }
    }
}
