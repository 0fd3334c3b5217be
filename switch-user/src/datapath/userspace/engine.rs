//! The userspace datapath: a learning switch over one AF_PACKET socket per port.
//!
//! ```text
//!  namespace red        host (this process, tokio)                         namespace blue
//!  eth0 ──veth──► sred-… ─► AF_PACKET ─recvmmsg─► port task of sred-…
//!                                                   1 count rx, parse (after virtio_net_hdr)
//!                                                   2 decide every frame of the batch
//!                                                     (FDB read lock once per batch)
//!                                                   3 learn sources (write lock, only if needed)
//!                                                   4 sendmmsg per destination port ─► sblue-… ─► eth0
//! ```
//!
//! The decisions are the eBPF datapath's (`switch-ebpf/src/tc_ingress.rs`): runts are dropped
//! as malformed, group or zero sources are dropped, sources are learned (refreshed at most
//! once per [`FDB_REFRESH_NS`], moved when a station changes port, static entries never move),
//! known unicast goes to its port, a destination behind the ingress port is dropped, and
//! everything else is flooded to every other port. Expired dynamic entries are ignored on
//! lookup and removed by a sweep once a second ([`Engine::spawn_ageing`]).
//!
//! Throughput comes from keeping TCP's GSO super-frames whole (`PACKET_VNET_HDR`: one 64 KiB
//! frame costs one syscall slot, not 45), from batching both directions (`recvmmsg`,
//! `sendmmsg`), and from taking each lock once per batch rather than once per frame.
use bytes::BytesMut;
use pnet_packet::ethernet::EthernetPacket;
use std::{
    collections::HashMap,
    io, mem,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    ptr,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use switch_common::{
    FDB_CAPACITY, FDB_F_STATIC, FDB_REFRESH_NS, FdbEntry, MAX_PORTS, PortStats, is_group, is_valid_source,
};
use tokio::{
    io::{Interest, unix::AsyncFd},
    task::JoinHandle,
};

use crate::error::{Context as _, Error, Result};

/// Frames taken from (or handed to) the kernel per system call.
const BATCH: usize = 32;
/// `sizeof(struct virtio_net_hdr)`: with `PACKET_VNET_HDR` every received buffer starts with
/// one, and every sent buffer must.
const VNET_HDR_LEN: usize = 10;
/// Largest frame the kernel hands over: a GSO super-frame of up to 64 KiB (the veth default
/// `gso_max_size`), plus room for a VLAN tag or two. A larger one arrives truncated and is
/// dropped.
const MAX_FRAME: usize = 65_536 + 512;
/// One receive buffer: the virtio header and the frame.
const BUF_LEN: usize = VNET_HDR_LEN + MAX_FRAME;
/// Socket buffer sizes. A 64 KiB GSO frame takes about as much again in skb overhead, so the
/// default ~200 KiB would hold one or two of them and drop the bursts TCP sends.
const SOCKET_BUF_BYTES: libc::c_int = 4 << 20;
/// Batches a port task handles per wake-up before it lets other tasks (the other ports, the
/// control socket, the ageing sweep) run on its worker thread.
const BATCHES_PER_WAKE: usize = 64;
/// Pause after an unexpected receive error, so a socket stuck in an error state does not spin.
const ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// How often expired dynamic entries are removed.
const SWEEP_PERIOD: Duration = Duration::from_secs(1);

/// A port as the FDB and the forwarding decision see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PortId {
    /// Slot in the switch (the counters' index and the flood order).
    slot: u32,
    /// Interface index of the host-side veth.
    ifindex: u32,
}

/// The time of a batch and the ageing time, both in nanoseconds on the engine's monotonic clock.
#[derive(Clone, Copy, Debug)]
struct Clock {
    now: u64,
    ageing: u64,
}

/// A learned or static station: the same entry the eBPF FDB holds, plus the port's slot so
/// forwarding needs no second lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Station {
    entry: FdbEntry,
    slot: u32,
}

impl Station {
    fn port(&self) -> PortId {
        PortId { slot: self.slot, ifindex: self.entry.ifindex }
    }
}

/// The forwarding database, shared by all port tasks behind one `RwLock`. Frames only read it
/// unless a source is new, moved or due for a refresh, so the write lock is rare.
#[derive(Debug, Default)]
struct Fdb {
    stations: HashMap<[u8; 6], Station>,
}

impl Fdb {
    /// Whether learning `src` on `port` at `now` would change the table: a new station, one
    /// that moved, or one whose last-seen time is older than [`FDB_REFRESH_NS`] (refreshing on
    /// every frame would take the write lock on every frame). Static entries never change.
    fn wants_learn(&self, src: &[u8; 6], port: PortId, now: u64) -> bool {
        match self.stations.get(src) {
            None => true,
            Some(s) if s.entry.is_static() => false,
            Some(s) if s.entry.ifindex != port.ifindex => true,
            Some(s) => now > s.entry.last_seen_ns.saturating_add(FDB_REFRESH_NS),
        }
    }

    /// Records that `src` was seen on `port` at `now`.
    fn learn(&mut self, src: [u8; 6], port: PortId, now: u64) {
        if self.wants_learn(&src, port, now) {
            let entry = FdbEntry { ifindex: port.ifindex, flags: 0, last_seen_ns: now };
            self.insert(src, Station { entry, slot: port.slot });
        }
    }

    /// Adds or replaces `mac`. A full table (as many stations as the eBPF LRU map holds) makes
    /// room by evicting the least recently seen dynamic station, as the LRU map would.
    fn insert(&mut self, mac: [u8; 6], station: Station) {
        if self.stations.len() >= FDB_CAPACITY as usize && !self.stations.contains_key(&mac) {
            let oldest = self
                .stations
                .iter()
                .filter(|(_, s)| !s.entry.is_static())
                .min_by_key(|(_, s)| s.entry.last_seen_ns)
                .map(|(m, _)| *m);
            if let Some(m) = oldest {
                self.stations.remove(&m);
            }
        }
        self.stations.insert(mac, station);
    }

    /// The station `dst`, unless unknown or expired.
    fn lookup(&self, dst: &[u8; 6], clock: Clock) -> Option<Station> {
        self.stations.get(dst).filter(|s| !s.entry.is_expired(clock.now, clock.ageing)).copied()
    }

    /// Removes expired dynamic entries.
    fn sweep(&mut self, clock: Clock) {
        self.stations.retain(|_, s| !s.entry.is_expired(clock.now, clock.ageing));
    }

    /// Removes every entry (static too) behind the port with `ifindex`.
    fn forget_port(&mut self, ifindex: u32) {
        self.stations.retain(|_, s| s.entry.ifindex != ifindex);
    }
}

/// What happens to one received frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// Shorter than an Ethernet header: dropped, counted as dropped and malformed.
    Malformed,
    /// Invalid source, destination behind the ingress port, or truncated: dropped.
    Drop,
    /// Broadcast, multicast or unknown unicast: a copy to every other port.
    Flood,
    /// Known unicast: to the port in this slot.
    Unicast(u32),
}

impl Verdict {
    /// Whether a frame with this verdict goes out of the port in `slot` (never the ingress
    /// port: flooding skips it, and unicast to it is a `Drop`).
    fn goes_to(self, slot: u32) -> bool {
        self == Verdict::Flood || self == Verdict::Unicast(slot)
    }
}

/// Destination and source MAC of an Ethernet frame, or `None` if it is shorter than a header.
/// Nothing past the header is looked at: the switch forwards any EtherType unchanged.
fn addresses(frame: &[u8]) -> Option<([u8; 6], [u8; 6])> {
    // A zero-copy view: pnet checks the length and reads the two fields in place.
    let eth = EthernetPacket::new(frame)?;
    Some((eth.get_destination().octets(), eth.get_source().octets()))
}

/// Source addresses of the frames of one batch decided so far.
///
/// All of them arrived on the ingress port, and the table is only written once the whole
/// batch is decided, so a later frame of the batch addressed to one of them must be treated as
/// the eBPF datapath (which learns before every lookup) would: as behind the ingress port.
struct BatchSources {
    macs: [[u8; 6]; BATCH],
    /// Whether the table must be written for `macs[i]` (see [`Fdb::wants_learn`]).
    stale: [bool; BATCH],
    len: usize,
}

impl BatchSources {
    fn new() -> Self {
        Self { macs: [[0; 6]; BATCH], stale: [false; BATCH], len: 0 }
    }

    fn contains(&self, mac: &[u8; 6]) -> bool {
        self.macs[..self.len].contains(mac)
    }

    fn note(&mut self, fdb: &Fdb, src: [u8; 6], port: PortId, now: u64) {
        if self.len < BATCH && !self.contains(&src) {
            self.macs[self.len] = src;
            self.stale[self.len] = fdb.wants_learn(&src, port, now);
            self.len += 1;
        }
    }

    /// Sources the table must learn.
    fn stale(&self) -> impl Iterator<Item = &[u8; 6]> {
        self.macs[..self.len].iter().zip(&self.stale).filter_map(|(m, s)| s.then_some(m))
    }
}

/// Decides what to do with `frame` (the Ethernet frame, without the virtio header) received on
/// `ingress`. `live` says whether a port still exists (an entry may point at one just removed:
/// the frame is flooded then, as the eBPF datapath does).
fn decide(
    fdb: &Fdb,
    frame: &[u8],
    ingress: PortId,
    sources: &mut BatchSources,
    clock: Clock,
    live: impl Fn(PortId) -> bool,
) -> Verdict {
    let Some((dst, src)) = addresses(frame) else {
        return Verdict::Malformed;
    };
    if !is_valid_source(&src) {
        // Multicast or zero source: the Linux bridge drops these too, and learning them would
        // poison the table.
        return Verdict::Drop;
    }
    sources.note(fdb, src, ingress, clock.now);
    if is_group(&dst) {
        return Verdict::Flood;
    }
    let station = fdb.lookup(&dst, clock);
    let out = match station {
        // Learned from this batch: behind the ingress port, unless a static entry pins it.
        _ if sources.contains(&dst) && !station.is_some_and(|s| s.entry.is_static()) => ingress,
        Some(s) => s.port(),
        None => return Verdict::Flood,
    };
    if out.ifindex == ingress.ifindex {
        // Destination is on the port the frame came from: the bridge without hairpin mode drops
        // these too.
        Verdict::Drop
    } else if live(out) {
        Verdict::Unicast(out.slot)
    } else {
        Verdict::Flood
    }
}

/// Per-batch receive-side counts, added to the port's atomics once per batch.
#[derive(Debug, Default, PartialEq, Eq)]
struct RxTally {
    packets: u64,
    bytes: u64,
    flooded: u64,
    dropped: u64,
    malformed: u64,
}

impl RxTally {
    fn count(&mut self, verdict: Verdict, len: usize) {
        self.packets += 1;
        self.bytes += len as u64;
        match verdict {
            Verdict::Malformed => {
                self.dropped += 1;
                self.malformed += 1;
            }
            Verdict::Drop => self.dropped += 1,
            Verdict::Flood => self.flooded += 1,
            Verdict::Unicast(_) => {}
        }
    }
}

/// What one [`PacketSocket::send`] achieved.
#[derive(Debug, Default, PartialEq, Eq)]
struct Sent {
    packets: u64,
    bytes: u64,
    errors: u64,
}

/// Counters of one port, as [`PortStats`]. Atomics because the port's own task counts its
/// receptions while every other port's task counts what it sends out of this one.
#[derive(Debug, Default)]
struct Counters {
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    flooded_packets: AtomicU64,
    dropped_packets: AtomicU64,
    malformed_packets: AtomicU64,
    tx_errors: AtomicU64,
}

impl Counters {
    fn add_rx(&self, t: &RxTally) {
        for (counter, n) in [
            (&self.rx_packets, t.packets),
            (&self.rx_bytes, t.bytes),
            (&self.flooded_packets, t.flooded),
            (&self.dropped_packets, t.dropped),
            (&self.malformed_packets, t.malformed),
        ] {
            if n != 0 {
                counter.fetch_add(n, Relaxed);
            }
        }
    }

    fn add_tx(&self, s: &Sent) {
        for (counter, n) in [(&self.tx_packets, s.packets), (&self.tx_bytes, s.bytes), (&self.tx_errors, s.errors)] {
            if n != 0 {
                counter.fetch_add(n, Relaxed);
            }
        }
    }

    fn snapshot(&self) -> PortStats {
        PortStats {
            rx_packets: self.rx_packets.load(Relaxed),
            rx_bytes: self.rx_bytes.load(Relaxed),
            tx_packets: self.tx_packets.load(Relaxed),
            tx_bytes: self.tx_bytes.load(Relaxed),
            flooded_packets: self.flooded_packets.load(Relaxed),
            dropped_packets: self.dropped_packets.load(Relaxed),
            malformed_packets: self.malformed_packets.load(Relaxed),
            tx_errors: self.tx_errors.load(Relaxed),
        }
    }
}

/// Receive buffers of one port, allocated once when its task starts: [`BATCH`] slots of
/// [`BUF_LEN`] bytes, each holding a virtio header and a frame.
struct RxBuffers {
    /// One allocation for the whole batch, made when the port is added and reused for every
    /// batch after.
    buf: BytesMut,
    /// Bytes the kernel wrote into each slot (virtio header included).
    lens: [usize; BATCH],
    /// Whether the frame did not fit its slot.
    truncated: [bool; BATCH],
}

impl RxBuffers {
    fn new() -> Self {
        Self { buf: BytesMut::zeroed(BATCH * BUF_LEN), lens: [0; BATCH], truncated: [false; BATCH] }
    }

    /// Slot `i` as received: virtio header, then the frame. This is what is sent on.
    fn raw(&self, i: usize) -> &[u8] {
        let start = i * BUF_LEN;
        &self.buf[start..start + self.lens[i].min(BUF_LEN)]
    }

    /// The Ethernet frame of slot `i` (empty if the kernel gave less than a virtio header).
    fn frame(&self, i: usize) -> &[u8] {
        self.raw(i).get(VNET_HDR_LEN..).unwrap_or_default()
    }
}

/// An `AF_PACKET` raw socket bound to one interface, with virtio headers on.
#[derive(Debug)]
struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// Opens a socket on `ifindex`.
    ///
    /// It is created with protocol 0, which receives nothing, and only `bind` asks for
    /// `ETH_P_ALL` on the one interface: created with `ETH_P_ALL` it would queue frames of
    /// every interface of the host until the bind, and those would be switched.
    fn open(ifindex: u32) -> io::Result<Self> {
        // SAFETY: plain system call with constant arguments; the result is checked below.
        let raw =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor we just opened and nobody else owns.
        let socket = Self { fd: unsafe { OwnedFd::from_raw_fd(raw) } };
        // GSO super-frames stay whole, with a virtio header describing them.
        socket.set(libc::SOL_PACKET, libc::PACKET_VNET_HDR, 1)?;
        // Frames the engine sends out of this port must not come back in through its socket.
        socket.set(libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1)?;
        socket.set_buffer(libc::SO_RCVBUFFORCE, libc::SO_RCVBUF)?;
        socket.set_buffer(libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)?;
        socket.bind(ifindex)?;
        // Binding to an interface that is still down (the controller plugs a port in before
        // setting its host end up) leaves ENETDOWN pending on the socket, which the first
        // send would return: a flooded ARP request lost, a second of delay. Clear it.
        socket.take_error();
        Ok(socket)
    }

    /// Reads and so clears the socket's pending error (SO_ERROR).
    fn take_error(&self) {
        let mut err: libc::c_int = 0;
        let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `err` and `len` are live and sized for SO_ERROR's int.
        unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                ptr::from_mut(&mut err).cast(),
                &mut len,
            );
        }
    }

    fn set(&self, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
        // SAFETY: `value` is a live c_int and its size is passed along.
        let ret = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                ptr::from_ref(&value).cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if ret == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
    }

    /// Sets a socket buffer to [`SOCKET_BUF_BYTES`]: the `*FORCE` option ignores the
    /// `net.core.[rw]mem_max` limit but needs CAP_NET_ADMIN, so fall back to the plain one.
    fn set_buffer(&self, force: libc::c_int, plain: libc::c_int) -> io::Result<()> {
        self.set(libc::SOL_SOCKET, force, SOCKET_BUF_BYTES)
            .or_else(|_| self.set(libc::SOL_SOCKET, plain, SOCKET_BUF_BYTES))
    }

    fn bind(&self, ifindex: u32) -> io::Result<()> {
        // SAFETY: sockaddr_ll is a plain C struct for which all zeros is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as libc::c_ushort;
        addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        addr.sll_ifindex = ifindex as libc::c_int;
        // SAFETY: `addr` is a live sockaddr_ll and its size is passed along.
        let ret = unsafe {
            libc::bind(
                self.fd.as_raw_fd(),
                ptr::from_ref(&addr).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if ret == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
    }

    /// Receives up to [`BATCH`] frames into `rx` without waiting; `WouldBlock` if none is
    /// queued.
    fn recv(&self, rx: &mut RxBuffers) -> io::Result<usize> {
        // SAFETY: iovec and mmsghdr are plain C structs for which all zeros is a valid value
        // (null pointers, zero lengths).
        let (mut iov, mut msgs): ([libc::iovec; BATCH], [libc::mmsghdr; BATCH]) = unsafe { mem::zeroed() };
        for ((v, m), slot) in iov.iter_mut().zip(msgs.iter_mut()).zip(rx.buf.chunks_exact_mut(BUF_LEN)) {
            *v = libc::iovec { iov_base: slot.as_mut_ptr().cast(), iov_len: BUF_LEN };
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every message points at its own iovec, which points at BUF_LEN writable
        // bytes of `rx.buf`; all of them outlive the call and nothing else touches them.
        let n = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for (i, m) in msgs[..n].iter().enumerate() {
            rx.lens[i] = m.msg_len as usize;
            rx.truncated[i] = m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        }
        Ok(n)
    }

    /// Sends `frames` (each beginning with its virtio header), at most [`BATCH`], without
    /// waiting. A frame the kernel refuses is dropped and counted as an error; a full queue
    /// (`EAGAIN`, `ENOBUFS`) drops the rest of the batch, since retrying at once would fail too
    /// and the receive loop must never stall.
    fn send<'a>(&self, frames: impl Iterator<Item = &'a [u8]>) -> Sent {
        // SAFETY: as in `recv`.
        let (mut iov, mut msgs): ([libc::iovec; BATCH], [libc::mmsghdr; BATCH]) = unsafe { mem::zeroed() };
        let mut count = 0;
        for frame in frames.take(BATCH) {
            // The kernel only reads through this pointer (sendmsg); iovec has no const variant.
            iov[count] = libc::iovec { iov_base: frame.as_ptr().cast_mut().cast(), iov_len: frame.len() };
            count += 1;
        }
        for (m, v) in msgs.iter_mut().zip(iov.iter_mut()).take(count) {
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
        }
        let mut sent = Sent::default();
        let mut next = 0;
        while next < count {
            // SAFETY: msgs[next..count] point at their iovecs, which point at frames borrowed
            // for the whole call.
            let ret = unsafe {
                libc::sendmmsg(
                    self.fd.as_raw_fd(),
                    msgs[next..].as_mut_ptr(),
                    (count - next) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if ret < 0 {
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EAGAIN | libc::ENOBUFS) => {
                        sent.errors += (count - next) as u64;
                        break;
                    }
                    // This frame only (too big, interface gone...): skip it.
                    _ => {
                        sent.errors += 1;
                        next += 1;
                        continue;
                    }
                }
            }
            let done = ret as usize;
            sent.packets += done as u64;
            sent.bytes +=
                iov[next..next + done].iter().map(|v| v.iov_len.saturating_sub(VNET_HDR_LEN) as u64).sum::<u64>();
            // A short count means message `next + done` failed; the next call reports why.
            next += done;
        }
        sent
    }
}

/// One port: its socket and counters. Shared (`Arc`) by its own receive task, by the port
/// table every other task sends through, and by the table snapshots of batches in flight, so
/// the socket closes only when the last of them lets go.
#[derive(Debug)]
struct Port {
    id: PortId,
    name: String,
    socket: PacketSocket,
    counters: Counters,
}

impl AsRawFd for Port {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.fd.as_raw_fd()
    }
}

impl Port {
    /// Sends the frames of the batch in `rx` whose verdict sends them out of this port.
    fn transmit(&self, rx: &RxBuffers, verdicts: &[Verdict]) {
        let frames = verdicts.iter().enumerate().filter(|(_, v)| v.goes_to(self.id.slot)).map(|(i, _)| rx.raw(i));
        self.counters.add_tx(&self.socket.send(frames));
    }
}

/// The ports by slot. Immutable: adding or removing a port swaps in a new table, so a batch
/// works on one consistent snapshot without holding a lock while it sends.
#[derive(Debug, Default)]
struct PortTable {
    by_slot: Vec<Option<Arc<Port>>>,
}

impl PortTable {
    fn get(&self, slot: u32) -> Option<&Arc<Port>> {
        self.by_slot.get(slot as usize)?.as_ref()
    }

    /// Ports in slot order (the flood order of the eBPF datapath).
    fn iter(&self) -> impl Iterator<Item = &Arc<Port>> {
        self.by_slot.iter().flatten()
    }

    fn by_ifindex(&self, ifindex: u32) -> Option<&Arc<Port>> {
        self.iter().find(|p| p.id.ifindex == ifindex)
    }

    fn is_live(&self, id: PortId) -> bool {
        self.get(id.slot).is_some_and(|p| p.id == id)
    }

    /// A copy of the table with `slot` set to `port`.
    fn with(&self, slot: u32, port: Option<Arc<Port>>) -> Self {
        let mut by_slot = self.by_slot.clone();
        if by_slot.len() <= slot as usize {
            by_slot.resize(slot as usize + 1, None);
        }
        by_slot[slot as usize] = port;
        while by_slot.last().is_some_and(Option::is_none) {
            by_slot.pop();
        }
        Self { by_slot }
    }
}

/// Sends every frame of a batch from `ingress` to where its verdict says: one `sendmmsg` per
/// destination port.
fn forward(table: &PortTable, ingress: PortId, rx: &RxBuffers, verdicts: &[Verdict]) {
    if verdicts.contains(&Verdict::Flood) {
        for out in table.iter().filter(|p| p.id.slot != ingress.slot) {
            out.transmit(rx, verdicts);
        }
        return;
    }
    let mut done = [0u32; BATCH];
    let mut n = 0;
    for v in verdicts {
        if let Verdict::Unicast(slot) = *v
            && !done[..n].contains(&slot)
        {
            done[n] = slot;
            n += 1;
            if let Some(out) = table.get(slot) {
                out.transmit(rx, verdicts);
            }
        }
    }
}

/// State shared by the engine and its tasks.
///
/// Lock order: `fdb` before `ports` (a batch checks its port under the FDB write lock); the
/// engine's `tasks` mutex before either.
#[derive(Debug)]
struct Shared {
    /// Zero of the FDB's clock.
    epoch: Instant,
    ageing_ns: AtomicU64,
    fdb: RwLock<Fdb>,
    ports: RwLock<Arc<PortTable>>,
}

impl Shared {
    fn clock(&self) -> Clock {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        Clock { now, ageing: self.ageing_ns.load(Relaxed) }
    }

    fn table(&self) -> Arc<PortTable> {
        Arc::clone(&read(&self.ports))
    }

    /// Swaps in a table with `slot` set to `port`.
    fn set_port(&self, slot: u32, port: Option<Arc<Port>>) {
        let mut table = write(&self.ports);
        *table = Arc::new(table.with(slot, port));
    }

    /// Switches the `n` frames in `rx` received on `port`.
    fn switch_batch(&self, port: &Port, rx: &RxBuffers, n: usize) {
        let ingress = port.id;
        let clock = self.clock();
        let table = self.table();
        let mut verdicts = [Verdict::Drop; BATCH];
        let mut sources = BatchSources::new();
        let mut tally = RxTally::default();
        {
            let fdb = read(&self.fdb);
            for (i, v) in verdicts[..n].iter_mut().enumerate() {
                let frame = rx.frame(i);
                if !rx.truncated[i] {
                    *v = decide(&fdb, frame, ingress, &mut sources, clock, |p| table.is_live(p));
                }
                tally.count(*v, frame.len());
            }
        }
        if sources.stale().next().is_some() {
            let mut fdb = write(&self.fdb);
            // Checked under the FDB lock: a port removed meanwhile (table first, then its
            // entries) must not get entries back from its last batch.
            if read(&self.ports).is_live(ingress) {
                for src in sources.stale() {
                    fdb.learn(*src, ingress, clock.now);
                }
            }
        }
        port.counters.add_rx(&tally);
        forward(&table, ingress, rx, &verdicts[..n]);
    }

    fn sweep(&self) {
        let clock = self.clock();
        write(&self.fdb).sweep(clock);
    }
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    // A panic elsewhere cannot leave the table half-updated (every update is one insert or
    // retain), so a poisoned lock is still good to use.
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

fn lock<T>(lock: &Mutex<T>) -> MutexGuard<'_, T> {
    lock.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The receive task of one port: waits until its socket is readable, then switches batches
/// until the socket is drained (or the budget is spent, to let other tasks run).
async fn serve_port(shared: Arc<Shared>, fd: AsyncFd<Arc<Port>>) {
    let port = Arc::clone(fd.get_ref());
    let mut rx = RxBuffers::new();
    loop {
        let mut guard = match fd.readable().await {
            Ok(guard) => guard,
            Err(e) => {
                tracing::error!("userspace switch: port {} stops receiving: {e}", port.name);
                return;
            }
        };
        let mut budget = BATCHES_PER_WAKE;
        let mut failed = false;
        while budget > 0 {
            // try_io clears the readiness when the socket says EAGAIN.
            match guard.try_io(|fd| fd.get_ref().socket.recv(&mut rx)) {
                Ok(Ok(n)) => {
                    shared.switch_batch(&port, &rx, n);
                    budget -= 1;
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                // The socket reports ENETDOWN once when its interface is (or was) down, e.g. a
                // port added before its host end is set up, which is the controller's order.
                // Reading the error clears it; frames queued behind it must not wait.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ENETDOWN) => {}
                Ok(Err(e)) => {
                    // E.g. ENETDOWN once when the interface goes down; the socket works again
                    // when it comes back up.
                    tracing::warn!("userspace switch: receiving on {}: {e}", port.name);
                    failed = true;
                    break;
                }
                Err(_would_block) => break,
            }
        }
        drop(guard);
        if failed {
            tokio::time::sleep(ERROR_BACKOFF).await;
        } else if budget == 0 {
            tokio::task::yield_now().await;
        }
    }
}

/// Tasks the engine started, aborted when their port goes or the engine is dropped.
#[derive(Debug, Default)]
struct Tasks {
    ports: HashMap<u32, JoinHandle<()>>,
    ageing: Option<JoinHandle<()>>,
}

/// The userspace switch: ports, FDB and counters. Used as `Arc<Engine>` from the control
/// socket's tasks; it stops its tasks when dropped.
#[derive(Debug)]
pub struct Engine {
    shared: Arc<Shared>,
    /// Also serialises port and static-entry changes against each other.
    tasks: Mutex<Tasks>,
}

impl Engine {
    /// An engine without ports, ageing dynamic entries after `ageing`.
    pub fn new(ageing: Duration) -> Arc<Self> {
        let shared = Shared {
            epoch: Instant::now(),
            ageing_ns: AtomicU64::new(duration_ns(ageing)),
            fdb: RwLock::default(),
            ports: RwLock::default(),
        };
        Arc::new(Self { shared: Arc::new(shared), tasks: Mutex::default() })
    }

    /// Opens the socket for `ifname`/`ifindex` and starts its receive task (must be called
    /// inside a tokio runtime with I/O enabled). Idempotent for the same slot and ifindex; a
    /// slot given another interface is replaced. Counters of the slot start at zero.
    pub fn add_port(self: &Arc<Self>, slot: u32, ifindex: u32, ifname: &str) -> Result<()> {
        if slot >= MAX_PORTS {
            return Err(Error::invalid("port slot", slot.to_string(), format!("must be below {MAX_PORTS}")));
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| Error::Command(format!("adding port {ifname} to the userspace switch: {e}")))?;
        let mut tasks = lock(&self.tasks);
        let table = self.shared.table();
        if table.get(slot).is_some_and(|p| p.id.ifindex == ifindex) {
            return Ok(());
        }
        if let Some(other) = table.by_ifindex(ifindex) {
            return Err(Error::Command(format!(
                "interface {ifname} (index {ifindex}) is already port {} of the userspace switch",
                other.id.slot
            )));
        }
        check_ifindex(ifname, ifindex)?;
        let socket = PacketSocket::open(ifindex).context(format!("opening a packet socket on {ifname}"))?;
        let id = PortId { slot, ifindex };
        let port = Arc::new(Port { id, name: ifname.to_owned(), socket, counters: Counters::default() });
        // SAFETY: the fd belongs to the PacketSocket inside the Arc<Port>; the AsyncFd holds one
        // reference to that Arc, so the fd stays open and unchanged for the AsyncFd's lifetime
        // (nothing ever closes or replaces a Port's socket; it closes when the last Arc drops).
        let fd = unsafe { AsyncFd::register_with_interest(Arc::clone(&port), Interest::READABLE) }
            .map_err(|e| Error::Io { context: format!("watching the packet socket on {ifname}"), source: e.into() })?;
        self.remove_port(&mut tasks, slot);
        self.shared.set_port(slot, Some(port));
        tasks.ports.insert(slot, runtime.spawn(serve_port(Arc::clone(&self.shared), fd)));
        tracing::info!("userspace switch: port {slot} is {ifname} (index {ifindex})");
        Ok(())
    }

    /// Stops the port's task, closes its socket, forgets FDB entries on it. Unknown slot:
    /// `Ok(())`. The socket closes once a batch in flight on another task is done with it.
    pub fn del_port(&self, slot: u32) -> Result<()> {
        let mut tasks = lock(&self.tasks);
        self.remove_port(&mut tasks, slot);
        Ok(())
    }

    fn remove_port(&self, tasks: &mut Tasks, slot: u32) {
        if let Some(task) = tasks.ports.remove(&slot) {
            task.abort();
        }
        let Some(port) = self.shared.table().get(slot).cloned() else {
            return;
        };
        self.shared.set_port(slot, None);
        write(&self.shared.fdb).forget_port(port.id.ifindex);
        tracing::info!("userspace switch: port {slot} ({}) removed", port.name);
    }

    /// Sets the ageing time of dynamic entries (effective for the next frame).
    pub fn set_ageing(&self, ageing: Duration) {
        self.shared.ageing_ns.store(duration_ns(ageing), Relaxed);
    }

    /// (mac, ifindex, is_static, age) of every live entry (expired dynamic entries are left
    /// out). The age of a static entry is the time since it was added.
    pub fn fdb(&self) -> Vec<([u8; 6], u32, bool, Duration)> {
        let clock = self.shared.clock();
        read(&self.shared.fdb)
            .stations
            .iter()
            .filter(|(_, s)| !s.entry.is_expired(clock.now, clock.ageing))
            .map(|(mac, s)| {
                let age = Duration::from_nanos(clock.now.saturating_sub(s.entry.last_seen_ns));
                (*mac, s.entry.ifindex, s.entry.is_static(), age)
            })
            .collect()
    }

    /// Static entry: `mac` is behind the port with this ifindex (replacing a learned entry).
    /// Error if no port has that ifindex.
    pub fn fdb_add_static(&self, mac: [u8; 6], ifindex: u32) -> Result<()> {
        // Held so the port cannot be removed (and its entries forgotten) in between.
        let _tasks = lock(&self.tasks);
        let table = self.shared.table();
        let port = table
            .by_ifindex(ifindex)
            .ok_or_else(|| Error::Command(format!("no port of the userspace switch has interface index {ifindex}")))?;
        let entry = FdbEntry { ifindex, flags: FDB_F_STATIC, last_seen_ns: self.shared.clock().now };
        write(&self.shared.fdb).insert(mac, Station { entry, slot: port.id.slot });
        Ok(())
    }

    /// Deletes an entry (static or learned); returns whether it existed.
    pub fn fdb_del(&self, mac: [u8; 6]) -> bool {
        write(&self.shared.fdb).stations.remove(&mac).is_some()
    }

    /// Counters of a slot (zeros for an unknown slot).
    pub fn stats(&self, slot: u32) -> PortStats {
        self.shared.table().get(slot).map(|p| p.counters.snapshot()).unwrap_or_default()
    }

    /// Starts the once-a-second ageing sweep task (inside a tokio runtime; panics outside
    /// one). Calling it again while the sweep runs does nothing.
    pub fn spawn_ageing(self: &Arc<Self>) {
        let mut tasks = lock(&self.tasks);
        if tasks.ageing.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let shared = Arc::downgrade(&self.shared);
        tasks.ageing = Some(tokio::spawn(sweep_forever(shared)));
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let tasks = self.tasks.get_mut().unwrap_or_else(PoisonError::into_inner);
        for (_, task) in tasks.ports.drain() {
            task.abort();
        }
        if let Some(task) = tasks.ageing.take() {
            task.abort();
        }
    }
}

/// Removes expired entries every [`SWEEP_PERIOD`] until the engine is gone.
async fn sweep_forever(shared: Weak<Shared>) {
    let mut tick = tokio::time::interval(SWEEP_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.sweep();
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Refuses an ifindex that is not `ifname`'s: a port bound to the wrong interface would switch
/// someone else's traffic.
fn check_ifindex(ifname: &str, ifindex: u32) -> Result<()> {
    let actual = nix::net::if_::if_nametoindex(ifname).context(format!("looking up interface {ifname}"))?;
    if actual != ifindex {
        return Err(Error::Command(format!("interface {ifname} has index {actual}, not {ifindex}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa];
    const B: [u8; 6] = [0x02, 0, 0, 0, 0, 0xb];
    const C: [u8; 6] = [0x02, 0, 0, 0, 0, 0xc];
    const P1: PortId = PortId { slot: 0, ifindex: 11 };
    const P2: PortId = PortId { slot: 1, ifindex: 12 };
    const SEC: u64 = 1_000_000_000;

    fn clock(now: u64) -> Clock {
        Clock { now, ageing: 300 * SEC }
    }

    fn frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
        let mut f = Vec::from(dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x08, 0x00, 0x45]);
        f
    }

    fn station(fdb: &Fdb, mac: [u8; 6]) -> Station {
        fdb.stations[&mac]
    }

    /// Decides one frame alone in its batch, every port alive.
    fn decide1(fdb: &Fdb, f: &[u8], ingress: PortId, now: u64) -> Verdict {
        decide(fdb, f, ingress, &mut BatchSources::new(), clock(now), |_| true)
    }

    #[test]
    fn runts_and_bad_sources_are_dropped() {
        let fdb = Fdb::default();
        assert_eq!(decide1(&fdb, &[], P1, 0), Verdict::Malformed);
        assert_eq!(decide1(&fdb, &frame(B, A)[..13], P1, 0), Verdict::Malformed);
        assert_eq!(decide1(&fdb, &frame(B, A)[..14], P1, 0), Verdict::Flood);
        assert_eq!(decide1(&fdb, &frame(B, [0xff; 6]), P1, 0), Verdict::Drop);
        assert_eq!(decide1(&fdb, &frame(B, [0x01, 0, 0x5e, 0, 0, 1]), P1, 0), Verdict::Drop);
        assert_eq!(decide1(&fdb, &frame(B, [0; 6]), P1, 0), Verdict::Drop);
    }

    #[test]
    fn group_and_unknown_destinations_flood_known_go_to_their_port() {
        let mut fdb = Fdb::default();
        assert_eq!(decide1(&fdb, &frame([0xff; 6], A), P1, 0), Verdict::Flood);
        assert_eq!(decide1(&fdb, &frame(B, A), P1, 0), Verdict::Flood);
        fdb.learn(B, P2, 0);
        assert_eq!(decide1(&fdb, &frame(B, A), P1, 0), Verdict::Unicast(P2.slot));
        // Broadcast floods even from a known station.
        assert_eq!(decide1(&fdb, &frame([0xff; 6], A), P1, 0), Verdict::Flood);
        // Destination behind the ingress port: dropped.
        assert_eq!(decide1(&fdb, &frame(B, A), P2, 0), Verdict::Drop);
    }

    #[test]
    fn entry_of_a_removed_port_floods() {
        let mut fdb = Fdb::default();
        fdb.learn(B, P2, 0);
        let v = decide(&fdb, &frame(B, A), P1, &mut BatchSources::new(), clock(0), |p| p != P2);
        assert_eq!(v, Verdict::Flood);
    }

    #[test]
    fn learning_refreshes_at_most_once_per_interval() {
        let mut fdb = Fdb::default();
        assert!(fdb.wants_learn(&A, P1, 5));
        fdb.learn(A, P1, 5);
        assert_eq!(station(&fdb, A).entry, FdbEntry { ifindex: P1.ifindex, flags: 0, last_seen_ns: 5 });
        assert!(!fdb.wants_learn(&A, P1, 5 + FDB_REFRESH_NS));
        fdb.learn(A, P1, 5 + FDB_REFRESH_NS);
        assert_eq!(station(&fdb, A).entry.last_seen_ns, 5);
        assert!(fdb.wants_learn(&A, P1, 6 + FDB_REFRESH_NS));
        fdb.learn(A, P1, 6 + FDB_REFRESH_NS);
        assert_eq!(station(&fdb, A).entry.last_seen_ns, 6 + FDB_REFRESH_NS);
    }

    #[test]
    fn a_station_moves_at_once() {
        let mut fdb = Fdb::default();
        fdb.learn(A, P1, 0);
        assert!(fdb.wants_learn(&A, P2, 1));
        fdb.learn(A, P2, 1);
        assert_eq!(station(&fdb, A).port(), P2);
        assert_eq!(decide1(&fdb, &frame(A, B), P1, 2), Verdict::Unicast(P2.slot));
    }

    #[test]
    fn static_entries_neither_move_nor_age() {
        let mut fdb = Fdb::default();
        let entry = FdbEntry { ifindex: P1.ifindex, flags: FDB_F_STATIC, last_seen_ns: 0 };
        fdb.insert(A, Station { entry, slot: P1.slot });
        assert!(!fdb.wants_learn(&A, P2, 10 * SEC));
        fdb.learn(A, P2, 10 * SEC);
        assert_eq!(station(&fdb, A).port(), P1);
        let late = 10_000 * SEC;
        fdb.sweep(clock(late));
        assert_eq!(fdb.lookup(&A, clock(late)).map(|s| s.port()), Some(P1));
        // Even a frame from A on P2 earlier in the same batch does not move it.
        let mut sources = BatchSources::new();
        assert_eq!(decide(&fdb, &frame(B, A), P2, &mut sources, clock(late), |_| true), Verdict::Flood);
        assert_eq!(sources.stale().count(), 0);
        assert_eq!(decide(&fdb, &frame(A, B), P2, &mut sources, clock(late), |_| true), Verdict::Unicast(P1.slot));
    }

    #[test]
    fn expired_entries_are_ignored_then_swept() {
        let mut fdb = Fdb::default();
        fdb.learn(B, P2, 0);
        let ageing = 300 * SEC;
        assert_eq!(decide1(&fdb, &frame(B, A), P1, ageing), Verdict::Unicast(P2.slot));
        assert_eq!(decide1(&fdb, &frame(B, A), P1, ageing + 1), Verdict::Flood);
        fdb.learn(A, P1, ageing);
        fdb.sweep(clock(ageing + 1));
        assert!(!fdb.stations.contains_key(&B));
        assert!(fdb.stations.contains_key(&A));
    }

    #[test]
    fn later_frames_of_a_batch_see_sources_learned_earlier() {
        let mut fdb = Fdb::default();
        // B is known on P2 but shows up on P1 in this batch: the datapath would move it before
        // the second frame is looked up.
        fdb.learn(B, P2, 0);
        let mut sources = BatchSources::new();
        let live = |_| true;
        assert_eq!(decide(&fdb, &frame(C, B), P1, &mut sources, clock(1), live), Verdict::Flood);
        assert_eq!(decide(&fdb, &frame(B, A), P1, &mut sources, clock(1), live), Verdict::Drop);
        // A frame to its own source is dropped, as after learning it.
        assert_eq!(decide(&fdb, &frame(A, A), P1, &mut BatchSources::new(), clock(1), live), Verdict::Drop);
        let stale: Vec<_> = sources.stale().copied().collect();
        assert_eq!(stale, vec![B, A]);
    }

    #[test]
    fn batch_sources_are_distinct_and_only_stale_ones_are_learned() {
        let mut fdb = Fdb::default();
        fdb.learn(A, P1, 0);
        let mut sources = BatchSources::new();
        for _ in 0..3 {
            sources.note(&fdb, A, P1, 1);
            sources.note(&fdb, B, P1, 1);
        }
        assert_eq!(sources.len, 2);
        assert_eq!(sources.stale().copied().collect::<Vec<_>>(), vec![B]);
    }

    #[test]
    fn full_table_evicts_the_coldest_dynamic_station() {
        let mut fdb = Fdb::default();
        let entry = FdbEntry { ifindex: P1.ifindex, flags: FDB_F_STATIC, last_seen_ns: 0 };
        fdb.insert(A, Station { entry, slot: P1.slot });
        for i in 1..FDB_CAPACITY {
            let mac = [0x06, 0, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8];
            fdb.learn(mac, P2, u64::from(i) + 10);
        }
        assert_eq!(fdb.stations.len(), FDB_CAPACITY as usize);
        fdb.learn(C, P2, SEC);
        assert_eq!(fdb.stations.len(), FDB_CAPACITY as usize);
        assert!(fdb.stations.contains_key(&C));
        assert!(fdb.stations.contains_key(&A), "static entries are never evicted");
        assert!(!fdb.stations.contains_key(&[0x06, 0, 0, 0, 0, 1]), "the coldest one goes");
    }

    #[test]
    fn forget_port_removes_static_and_dynamic_entries() {
        let mut fdb = Fdb::default();
        fdb.learn(A, P1, 0);
        fdb.learn(B, P2, 0);
        fdb.insert(
            C,
            Station { entry: FdbEntry { ifindex: P1.ifindex, flags: FDB_F_STATIC, last_seen_ns: 0 }, slot: 0 },
        );
        fdb.forget_port(P1.ifindex);
        assert_eq!(fdb.stations.keys().collect::<Vec<_>>(), vec![&B]);
    }

    #[test]
    fn verdicts_choose_egress_ports_and_counters() {
        assert!(Verdict::Flood.goes_to(3));
        assert!(Verdict::Unicast(3).goes_to(3));
        assert!(!Verdict::Unicast(2).goes_to(3));
        assert!(!Verdict::Drop.goes_to(3));
        assert!(!Verdict::Malformed.goes_to(3));
        let mut t = RxTally::default();
        t.count(Verdict::Malformed, 5);
        t.count(Verdict::Drop, 60);
        t.count(Verdict::Flood, 60);
        t.count(Verdict::Unicast(1), 1000);
        assert_eq!(t, RxTally { packets: 4, bytes: 1125, flooded: 1, dropped: 2, malformed: 1 });
        let c = Counters::default();
        c.add_rx(&t);
        c.add_tx(&Sent { packets: 2, bytes: 100, errors: 1 });
        let s = c.snapshot();
        assert_eq!((s.rx_packets, s.rx_bytes, s.flooded_packets, s.dropped_packets), (4, 1125, 1, 2));
        assert_eq!((s.malformed_packets, s.tx_packets, s.tx_bytes, s.tx_errors), (1, 2, 100, 1));
    }

    #[test]
    fn buffers_split_virtio_header_and_frame() {
        let mut rx = RxBuffers::new();
        rx.lens[1] = VNET_HDR_LEN + 20;
        rx.lens[2] = 4;
        assert_eq!(rx.raw(1).len(), VNET_HDR_LEN + 20);
        assert_eq!(rx.frame(1).len(), 20);
        assert!(rx.frame(2).is_empty());
        rx.lens[3] = usize::MAX;
        assert_eq!(rx.raw(3).len(), BUF_LEN);
    }

    #[test]
    fn port_table_snapshots() {
        let t = PortTable::default();
        assert!(t.get(0).is_none());
        let t = t.with(3, None);
        assert!(t.by_slot.is_empty());
    }

    #[tokio::test]
    async fn engine_without_ports() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Engine>();
        let engine = Engine::new(Duration::from_secs(300));
        engine.spawn_ageing();
        engine.spawn_ageing();
        assert_eq!(engine.stats(7), PortStats::default());
        assert!(engine.fdb().is_empty());
        assert!(engine.fdb_add_static(A, 42).is_err());
        assert!(!engine.fdb_del(A));
        assert!(engine.del_port(3).is_ok());
        assert!(engine.add_port(MAX_PORTS, 1, "lo").is_err());
        assert!(engine.add_port(0, 999_999, "ustest-none").is_err());
    }
}

/// Tests on the real kernel: three namespaces with veth pairs, switched by an [`Engine`].
///
/// Run as root with `cargo test -p switch-user --lib -- --ignored userspace` (with `--release`
/// for a meaningful iperf3 figure). Uses namespaces `ustestA`..`ustestC` (10.77.0.1..3/24) and
/// host interfaces `ustestA-h`..`ustestC-h`, removed again even when the test fails.
#[cfg(test)]
mod kernel_tests {
    use std::process::Command;

    use super::*;

    const NAMESPACES: [&str; 3] = ["ustestA", "ustestB", "ustestC"];

    fn ip(args: &[&str]) -> std::result::Result<(), String> {
        let out = Command::new("ip").args(args).output().map_err(|e| format!("ip {args:?}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    /// Namespaces and veth pairs, deleted on drop.
    struct TestNet;

    impl TestNet {
        fn create() -> Self {
            let net = TestNet;
            net.cleanup();
            for (i, ns) in NAMESPACES.iter().enumerate() {
                let host = format!("{ns}-h");
                let addr = format!("10.77.0.{}/24", i + 1);
                let steps: [&[&str]; 7] = [
                    &["netns", "add", ns],
                    // Quiet namespaces (no router solicitations or MLD reports), so the flood
                    // counters below count ARP only.
                    &["netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"],
                    &["link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", ns],
                    &["-n", ns, "addr", "add", &addr, "dev", "eth0"],
                    &["-n", ns, "link", "set", "eth0", "up"],
                    &["-n", ns, "link", "set", "lo", "up"],
                    &["link", "set", &host, "up"],
                ];
                for step in steps {
                    ip(step).unwrap_or_else(|e| panic!("{e}"));
                }
            }
            net
        }

        fn cleanup(&self) {
            for ns in NAMESPACES {
                let _ = ip(&["link", "del", &format!("{ns}-h")]);
                let _ = ip(&["netns", "del", ns]);
            }
        }
    }

    impl Drop for TestNet {
        fn drop(&mut self) {
            self.cleanup();
        }
    }

    fn ifindex(ifname: &str) -> u32 {
        nix::net::if_::if_nametoindex(ifname).unwrap_or_else(|e| panic!("{ifname}: {e}"))
    }

    async fn in_ns(ns: &str, cmd: &[&str]) -> std::process::Output {
        tokio::process::Command::new("ip")
            .args(["netns", "exec", ns])
            .args(cmd)
            .output()
            .await
            .unwrap_or_else(|e| panic!("{cmd:?} in {ns}: {e}"))
    }

    #[test]
    #[ignore = "needs root; creates namespaces ustestA, ustestB and ustestC"]
    fn userspace_switch_pings_and_streams() {
        let _net = TestNet::create();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        runtime.block_on(async {
            let engine = Engine::new(Duration::from_secs(300));
            engine.spawn_ageing();
            let (a, b) = (ifindex("ustestA-h"), ifindex("ustestB-h"));
            for (slot, ns) in NAMESPACES.iter().enumerate() {
                let host = format!("{ns}-h");
                engine.add_port(slot as u32, ifindex(&host), &host).unwrap_or_else(|e| panic!("{e}"));
            }
            engine.add_port(1, b, "ustestB-h").unwrap_or_else(|e| panic!("idempotent: {e}"));
            assert!(engine.add_port(2, b, "ustestB-h").is_err(), "one interface, one port");

            let ping = in_ns("ustestA", &["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.77.0.2"]).await;
            assert!(ping.status.success(), "ping: {}", String::from_utf8_lossy(&ping.stdout));
            let ports: Vec<u32> = engine.fdb().iter().map(|e| e.1).collect();
            assert!(ports.contains(&a) && ports.contains(&b), "fdb: {:?}", engine.fdb());
            // C first: a flood is counted on its ingress port before it is sent.
            let sc = engine.stats(2);
            let (sa, sb) = (engine.stats(0), engine.stats(1));
            assert!(sa.rx_packets >= 4 && sb.tx_packets >= 4, "{sa:?} {sb:?}");
            assert!(sa.flooded_packets >= 1, "the first ARP request is flooded: {sa:?}");
            // C gets the floods of A and B, and none of their unicast.
            assert_eq!(sc.tx_packets + sc.tx_errors, sa.flooded_packets + sb.flooded_packets, "{sa:?} {sb:?} {sc:?}");

            if Command::new("iperf3").arg("--version").output().is_ok() {
                // A child rather than `iperf3 -D`, so it cannot outlive the test.
                let mut server = tokio::process::Command::new("ip")
                    .args(["netns", "exec", "ustestB", "iperf3", "-s", "-1"])
                    .stdout(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .spawn()
                    .unwrap_or_else(|e| panic!("iperf3 server: {e}"));
                tokio::time::sleep(Duration::from_millis(300)).await;
                let out = in_ns("ustestA", &["iperf3", "-c", "10.77.0.2", "-t", "4"]).await;
                let _ = server.kill().await;
                let text = String::from_utf8_lossy(&out.stdout);
                for line in text.lines().filter(|l| l.contains("sender") || l.contains("receiver")) {
                    println!("iperf3 through the userspace switch: {line}");
                }
                let s = engine.stats(0);
                println!("port 0: {s:?} ({} bytes per frame)", s.rx_bytes / s.rx_packets.max(1));
                println!("port 1: {:?}", engine.stats(1));
            }

            engine.del_port(0).unwrap_or_else(|e| panic!("{e}"));
            assert!(engine.fdb().iter().all(|e| e.1 != a));
            assert_eq!(engine.stats(0), PortStats::default());
        });
    }
}
