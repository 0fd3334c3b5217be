//! What the programs stream to readers while one listens: the log (aya-log), events
//! (`switch monitor`) and captured frames (`switch capture`), each switched on by a flag in
//! CONFIG.
use std::io::Write as _;

use async_trait::async_trait;
use aya::maps::{
    MapData,
    perf::{PerfEvent, PerfEventArrayBuffer},
};
use switch_common::{
    CFG_F_CAPTURE, CFG_F_EVENTS, CFG_F_LOG,
    capture::{BUFFER_BYTES, HEADER_LEN, Header},
    maps as names,
};
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
    /// The capture's own buffers are not there yet: `stream` turns the flag on once it has
    /// opened them, so that no frame is copied to a CPU without one (a switch an older binary
    /// made has its ring buffer already, and gets the flag here).
    async fn set_capture(&self, filter: Option<switch_common::capture::Filter>) -> Result<()> {
        let Some(filter) = filter else { return self.set_flag(CFG_F_CAPTURE, false).await };
        let pins = self.pins.clone();
        let ring = blocking(move || {
            maps::set_capture_filter(&pins, filter)?;
            maps::is_ring(&pins, names::CAPTURE)
        })
        .await?;
        if ring { self.set_flag(CFG_F_CAPTURE, true).await } else { Ok(()) }
    }

    async fn stream(
        &self,
        sink: RingSink,
        started: Box<dyn FnOnce() + Send>,
        stop: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    ) -> Result<()> {
        let pins = self.pins.clone();
        // A switch an older binary made has a ring buffer there, which the switch holds.
        if blocking(move || maps::is_ring(&pins, names::CAPTURE)).await? {
            return self.read_ring(names::CAPTURE, "captured frames", sink, started, stop).await;
        }
        self.read_capture(sink, started, stop).await
    }
}

/// One CPU's buffer of a capture, watched by tokio.
type CpuBuffer = AsyncFd<PerfEventArrayBuffer<MapData>>;

/// The records waiting in `buffer`, each cut to its header and kept bytes (a perf sample is
/// padded to 8 bytes).
fn drain(buffer: &mut PerfEventArrayBuffer<MapData>) -> Vec<Vec<u8>> {
    let mut items = vec![];
    buffer.for_each(|event| {
        // Losses are counted by the programs and carried by the next record (`Header::lost`).
        if let PerfEvent::Sample { head, tail } = event {
            let mut item = [head, tail].concat();
            if let Some((h, _)) = item.split_at_checked(HEADER_LEN) {
                // SAFETY: `Header` is plain old data of HEADER_LEN bytes; read unaligned.
                let h: Header = unsafe { std::ptr::read_unaligned(h.as_ptr().cast()) };
                item.truncate(HEADER_LEN + h.caplen as usize);
            }
            items.push(item);
        }
    });
    items
}

/// Waits until one of `buffers` is readable and takes what it holds.
async fn next_batch(buffers: &mut [CpuBuffer]) -> std::io::Result<Vec<Vec<u8>>> {
    let waits = buffers.iter_mut().map(|b| {
        Box::pin(async move {
            let mut guard = b.readable_mut().await?;
            let items = drain(guard.get_inner_mut());
            guard.clear_ready();
            Ok::<_, std::io::Error>(items)
        })
    });
    futures::future::select_all(waits).await.0
}

impl Ebpf {
    /// Reads the capture's own buffers: one per CPU, opened into `CAPTURE` here and gone with
    /// this reader (the kernel empties the array's slots when the descriptor that filled them
    /// is closed), so the switch holds no capture memory while nothing captures. Records of
    /// one batch are handed on in time order; two CPUs' batches may interleave slightly.
    async fn read_capture(
        &self,
        mut sink: RingSink,
        started: Box<dyn FnOnce() + Send>,
        mut stop: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    ) -> Result<()> {
        let pins = self.pins.clone();
        let (_array, buffers) = blocking(move || maps::capture_buffers(&pins, BUFFER_BYTES as usize)).await?;
        let mut fds = Vec::with_capacity(buffers.len());
        for b in buffers {
            // SAFETY: the buffer owns its perf event fd and keeps it open, unchanged, for as long
            // as the AsyncFd owns the buffer.
            let fd = unsafe { AsyncFd::register(b) }
                .map_err(|e| Error::Io { context: "watching the capture's buffers".into(), source: e.into() })?;
            fds.push(fd);
        }
        self.set_flag(CFG_F_CAPTURE, true).await?;
        started();
        loop {
            let mut batch = tokio::select! {
                _ = &mut stop => return Ok(()),
                batch = next_batch(&mut fds) => batch
                    .map_err(|e| Error::Io { context: "reading captured frames".into(), source: e })?,
            };
            batch.sort_by_key(|item| item.get(..8).map(|t| u64::from_ne_bytes(t.try_into().unwrap_or_default())));
            for item in &batch {
                sink(item);
            }
        }
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
