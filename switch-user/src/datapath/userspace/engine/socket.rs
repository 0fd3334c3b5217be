//! The `AF_PACKET` sockets of a port, and every `unsafe` libc call of the engine.
//!
//! Each port has one raw packet socket per lane (engine thread) bound to the host end of its
//! veth, the lanes' sockets forming a fanout group ([`PacketSocket::open_group`]). Four choices
//! make them fast enough to switch TCP at multi-gigabit rates from userspace:
//!
//! - A receive ring (`PACKET_RX_RING`, `TPACKET_V2`, [`Ring`]): the kernel copies each frame
//!   into a slot of a buffer mapped into this process, in the softirq that receives it, and
//!   frees its skb at once; the engine reads the slots where they are, with no system call
//!   per frame or per batch, and sends them on from there. Only an empty ring makes a task
//!   wait (tokio `AsyncFd`, woken through the socket's poll).
//! - `PACKET_VNET_HDR`: the kernel hands over GSO super-frames whole, each behind a
//!   `virtio_net_hdr` that describes how to segment it, and accepts them back the same way.
//!   A 64 KiB TCP burst costs one send slot instead of 45. Frames too big for a ring slot
//!   (GSO, jumbo) wait whole in the socket's queue (`PACKET_COPY_THRESH`) and are read with
//!   one `recv`.
//! - A transmit ring (`PACKET_TX_RING`, [`TxSocket`]) on a second socket per lane: the engine
//!   copies each frame that fits a slot into one, and a single `send` per batch and
//!   destination has the kernel send them all. Bigger frames (GSO, jumbo) go out with
//!   `sendmmsg`, up to [`BATCH`] per system call, straight from where they were received.
//! - Non-blocking calls only (`MSG_DONTWAIT`): a full transmit queue drops frames instead of
//!   stalling the receive loop.
//!
//! Frames are sent on unchanged, virtio header included (but for `hdr_len`, see
//! [`prepare_vnet_header`]). A small frame is copied three times (by the kernel into the
//! receive ring, by the engine into a transmit slot, by the kernel into the buffer it sends);
//! a big one twice, both times by the kernel (into the engine's buffer by `recv`, out of it
//! by `sendmmsg`).
use std::{
    io, mem,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
    ptr::{self, NonNull},
    sync::atomic::{AtomicU32, Ordering},
};

use bytes::BytesMut;

use super::{BATCH, mapping::Mapping};

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

/// What one [`PacketSocket::send`] achieved.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Sent {
    pub(super) packets: u64,
    pub(super) bytes: u64,
    pub(super) errors: u64,
}

impl Sent {
    fn add(&mut self, other: &Sent) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        self.errors += other.errors;
    }
}

/// Bytes of one receive ring slot: a `tpacket2_hdr`, the `sockaddr_ll`, padding, the virtio
/// header and the frame. A full-size Ethernet frame (1514 bytes, 1518 tagged) fits: the frame
/// starts 76 bytes in (`tp_mac`), leaving 1972 bytes for it.
const RING_FRAME: usize = 2048;
/// Bytes of one ring block (the kernel allocates the ring in blocks): 32 slots.
const RING_BLOCK: usize = 64 << 10;
/// Slots of the rings of one port, shared out between its lanes: 4 MiB (the socket buffer of
/// the engine before rings), ~10 ms of 64-byte frames at 200 k/s.
const PORT_RING_FRAMES: usize = 2048;
/// Fewest slots of one lane's ring, however many lanes share a port.
const MIN_RING_FRAMES: usize = 256;

/// Slots of each lane's ring when `lanes` share a port: a multiple of the slots per block.
fn ring_frames(lanes: usize) -> usize {
    (PORT_RING_FRAMES / lanes.max(1)).max(MIN_RING_FRAMES).next_multiple_of(RING_BLOCK / RING_FRAME)
}

/// A packet ring of one socket (`PACKET_RX_RING` or `PACKET_TX_RING`, `TPACKET_V2`), mapped
/// into this process. What follows describes the receive ring; [`TxSocket`] says how the
/// transmit ring differs.
///
/// Layout: one shared mapping of `frames` slots of [`RING_FRAME`] bytes, slot `i` at
/// byte `i * RING_FRAME` (the kernel allocates [`RING_BLOCK`]-byte blocks of whole slots, and
/// maps them back to back):
///
/// ```text
///  slot i:  | tpacket2_hdr | sockaddr_ll | pad | virtio_net_hdr | Ethernet frame ...   |
///           ^ tp_status                         ^ tp_mac - 10    ^ tp_mac, tp_snaplen bytes
/// ```
///
/// `tp_status` says who owns the slot: `TP_STATUS_KERNEL` (0), the kernel's to fill, or
/// `TP_STATUS_USER`, a frame for the engine. The kernel fills slots in order and wraps around;
/// the engine reads them in the same order ([`RxBuffers::head`]) and hands each one back by
/// storing `TP_STATUS_KERNEL` once the batch it belongs to is sent. `tp_len` is the frame's
/// length, `tp_snaplen` what the slot holds: less when the frame did not fit, and then
/// `TP_STATUS_COPY` says the whole frame waits in the socket's receive queue.
///
/// Sharing it between threads is safe because the slots of a receive ring are read only by the
/// one lane task that owns their `RxBuffers`, those of a transmit ring written only under the
/// `TxSocket`'s mutex, and ownership of each slot is passed between the kernel and the engine
/// through its atomic `tp_status`.
#[derive(Debug)]
struct Ring {
    /// Unmapped when the ring is dropped.
    mapping: Mapping,
    /// Slots: a multiple of the slots of one block.
    frames: usize,
}

impl Ring {
    /// Asks for a ring of `frames` slots on `fd` (a packet socket with `TPACKET_V2` set),
    /// `which` being `PACKET_RX_RING` or `PACKET_TX_RING`, and maps it.
    fn map(fd: RawFd, which: libc::c_int, frames: usize) -> io::Result<Self> {
        let len = frames * RING_FRAME;
        let req = libc::tpacket_req {
            tp_block_size: RING_BLOCK as u32,
            tp_block_nr: (len / RING_BLOCK) as u32,
            tp_frame_size: RING_FRAME as u32,
            tp_frame_nr: frames as u32,
        };
        // SAFETY: `req` is a live tpacket_req and its size is passed along.
        let ret = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                which,
                ptr::from_ref(&req).cast(),
                mem::size_of::<libc::tpacket_req>() as libc::socklen_t,
            )
        };
        if ret != 0 {
            return Err(io::Error::last_os_error());
        }
        // The ring the kernel just allocated for `fd`, whole.
        Ok(Self { mapping: Mapping::new(fd, len)?, frames })
    }

    /// The header of slot `i` (below `frames`).
    fn header(&self, i: usize) -> *mut libc::tpacket2_hdr {
        debug_assert!(i < self.frames);
        // SAFETY: slot i lies inside the mapping; slots are 16-byte aligned (page-aligned
        // blocks of 2048-byte slots), as tpacket2_hdr needs.
        unsafe { self.mapping.base().as_ptr().add(i * RING_FRAME).cast() }
    }

    /// `tp_status` of slot `i`, the word the kernel and the engine hand the slot over with.
    fn status(&self, i: usize) -> &AtomicU32 {
        // SAFETY: tp_status is the first field, a 4-byte aligned u32 that lives as long as the
        // mapping; the kernel writes it concurrently, hence the atomic.
        unsafe { AtomicU32::from_ptr(ptr::addr_of_mut!((*self.header(i)).tp_status)) }
    }
}

/// Where a frame of the current batch is.
#[derive(Clone, Copy, Debug, Default)]
enum Held {
    /// Nothing (a slot whose header made no sense): an empty frame.
    #[default]
    Empty,
    /// Bytes `start..start + len` of the ring mapping (virtio header, frame).
    Ring { start: usize, len: usize },
    /// The first `len` bytes of [`RxBuffers::copy`].
    Copy { len: usize },
}

/// The receive state of one lane: where it is in its socket's ring, the frames of the batch
/// being switched, and a buffer for the one frame per batch too big for a ring slot.
pub(super) struct RxBuffers {
    /// Base of the ring mapping of the lane's socket (kept alive by the task's `Arc<Port>`).
    base: NonNull<u8>,
    /// The next slot to read.
    head: usize,
    /// Slots the current batch holds, just before `head`: handed back by the next `recv`.
    held: usize,
    frames: [Held; BATCH],
    /// Whether the frame did not fit its slot (or the copy buffer) and arrived cut short.
    pub(super) truncated: [bool; BATCH],
    /// Whether the frame had a VLAN tag the kernel took out of its bytes into the skb (the
    /// slot's `TP_STATUS_VLAN_VALID`; a packet socket never puts it back): port security
    /// drops it, as it drops a tag in the bytes.
    pub(super) tagged: [bool; BATCH],
    /// A frame too big for its slot, read whole from the socket's queue: virtio header and
    /// frame. One allocation per lane, made when the port is added.
    copy: BytesMut,
}

// SAFETY: `base` points into the ring of the socket this lane reads, which the lane's task
// keeps open (it holds the port) for as long as the RxBuffers live; only that task reads the
// slots, and only those the kernel handed over.
unsafe impl Send for RxBuffers {}

impl RxBuffers {
    /// Receive state for `socket`'s ring.
    pub(super) fn new(socket: &PacketSocket) -> Self {
        Self {
            base: socket.ring.mapping.base(),
            head: 0,
            held: 0,
            frames: [Held::Empty; BATCH],
            truncated: [false; BATCH],
            tagged: [false; BATCH],
            copy: BytesMut::zeroed(BUF_LEN),
        }
    }

    /// Frame `i` of the batch as received: virtio header, then the frame. This is what is sent
    /// on.
    pub(super) fn raw(&self, i: usize) -> &[u8] {
        match self.frames[i] {
            Held::Empty => &[],
            // SAFETY: `recv` checked the range lies inside slot `start / RING_FRAME`, which the
            // kernel handed over and which stays ours until the next `recv` (that takes
            // `&mut self`, so no slice of it outlives the hand-back).
            Held::Ring { start, len } => unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(start), len) },
            Held::Copy { len } => &self.copy[..len.min(BUF_LEN)],
        }
    }

    /// Writes `mac` as the destination of frame `i` (no-op for a frame shorter than that).
    pub(super) fn set_destination(&mut self, i: usize, mac: [u8; 6]) {
        let (start, len) = match self.frames[i] {
            Held::Empty => return,
            Held::Ring { start, len } => (start, len),
            Held::Copy { len } => {
                if let Some(d) = self.copy.get_mut(VNET_HDR_LEN..VNET_HDR_LEN + 6).filter(|_| len >= VNET_HDR_LEN + 6) {
                    d.copy_from_slice(&mac);
                }
                return;
            }
        };
        if len >= VNET_HDR_LEN + 6 {
            // SAFETY: as in `raw`: the range lies inside a slot the kernel handed over, ours
            // until the next `recv`; the mapping is writable (PROT_WRITE), and `&mut self`
            // means no slice of it is alive.
            unsafe { std::ptr::copy_nonoverlapping(mac.as_ptr(), self.base.as_ptr().add(start + VNET_HDR_LEN), 6) };
        }
    }

    /// The Ethernet frame of frame `i` (empty if the kernel gave less than a virtio header).
    pub(super) fn frame(&self, i: usize) -> &[u8] {
        self.raw(i).get(VNET_HDR_LEN..).unwrap_or_default()
    }
}

/// An `AF_PACKET` raw socket bound to one interface, with virtio headers on.
#[derive(Debug)]
pub(super) struct PacketSocket {
    /// Declared before `fd`: unmapped before the socket closes.
    ring: Ring,
    fd: OwnedFd,
    /// Where frames that fit a ring slot leave (the others leave through `fd`).
    tx: TxSocket,
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl PacketSocket {
    /// Opens `lanes` sockets on `ifindex` that share its frames between them: one per thread
    /// of the engine, so that every CPU switches frames (see [`PacketSocket::open_one`] for what
    /// each socket is). With more than one, they form a fanout group whose demux is `steer`, the
    /// lane steering program (`PACKET_FANOUT_EBPF`; see steer.rs), or without it the kernel's
    /// flow hash (`PACKET_FANOUT_HASH`): either way a flow's frames stay on one socket, in order.
    ///
    /// Every socket drops everything (a one-instruction BPF filter) from before its bind until
    /// the whole group is formed and steered: a bound socket outside the group would get a copy
    /// of every frame, and the frame would be switched twice.
    pub(super) fn open_group(ifindex: u32, lanes: usize, steer: Option<BorrowedFd<'_>>) -> io::Result<Vec<Self>> {
        let lanes = lanes.max(1);
        let grouped = lanes > 1;
        let mut sockets = Vec::with_capacity(lanes);
        let mut group_id = 0u32;
        // A group has one hook of its own: PACKET_IGNORE_OUTGOING of its sockets does not
        // apply to it, so the group must ignore outgoing frames itself (frames others send
        // out of the interface; the group's own sends are never looped back to it).
        let demux = if steer.is_some() { libc::PACKET_FANOUT_EBPF } else { libc::PACKET_FANOUT_HASH };
        let kind = demux | libc::PACKET_FANOUT_FLAG_IGNORE_OUTGOING;
        for i in 0..lanes {
            let socket = Self::open_one(ifindex, grouped, ring_frames(lanes))?;
            if grouped {
                if i == 0 {
                    // The kernel picks an id no other group on the host uses.
                    let flags = kind | libc::PACKET_FANOUT_FLAG_UNIQUEID;
                    socket.set(libc::SOL_PACKET, libc::PACKET_FANOUT, (flags << 16) as libc::c_int)?;
                    // Read back as id | type << 16 | flags << 24.
                    group_id = socket.get(libc::SOL_PACKET, libc::PACKET_FANOUT)? as u32 & 0xffff;
                    if let Some(program) = steer {
                        // The group's demux, shared by its sockets (set through any of them).
                        socket.set(libc::SOL_PACKET, libc::PACKET_FANOUT_DATA, program.as_raw_fd())?;
                    }
                } else {
                    let arg = group_id | (kind << 16);
                    socket.set(libc::SOL_PACKET, libc::PACKET_FANOUT, arg as libc::c_int)?;
                }
            }
            sockets.push(socket);
        }
        if grouped {
            for socket in &sockets {
                socket.detach_filter()?;
            }
        }
        Ok(sockets)
    }

    /// Opens one socket on `ifindex`, dropping every frame if `muted` (until
    /// [`PacketSocket::detach_filter`]).
    ///
    /// It is created with protocol 0, which receives nothing, and only `bind` asks for
    /// `ETH_P_ALL` on the one interface: created with `ETH_P_ALL` it would queue frames of
    /// every interface of the host until the bind, and those would be switched.
    fn open_one(ifindex: u32, muted: bool, ring_frames: usize) -> io::Result<Self> {
        let fd = ring_socket()?;
        // A frame too big for its slot goes whole to the socket's queue as well.
        set_int(fd.as_raw_fd(), libc::SOL_PACKET, libc::PACKET_COPY_THRESH, 1)?;
        let ring = Ring::map(fd.as_raw_fd(), libc::PACKET_RX_RING, ring_frames)?;
        let socket = Self { ring, fd, tx: TxSocket::open(ifindex, tx_ring_frames(ring_frames))? };
        // Frames the engine sends out of this port must not come back in through its socket.
        socket.set(libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1)?;
        set_buffer(socket.as_raw_fd(), libc::SO_RCVBUFFORCE, libc::SO_RCVBUF)?;
        set_buffer(socket.as_raw_fd(), libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)?;
        if muted {
            socket.attach_drop_all()?;
        }
        bind(socket.as_raw_fd(), ifindex, libc::ETH_P_ALL as u16)?;
        // Binding to an interface that is still down (the controller plugs a port in before
        // setting its host end up) leaves ENETDOWN pending on the socket, which the first
        // send would return: a flooded ARP request lost, a second of delay. Clear it.
        socket.take_error();
        Ok(socket)
    }

    /// Attaches a classic BPF filter of one instruction, `ret #0`: every frame is dropped.
    fn attach_drop_all(&self) -> io::Result<()> {
        // BPF_RET | BPF_K with k = 0: accept 0 bytes of the frame, i.e. drop it.
        let mut drop_all = [libc::sock_filter { code: 0x06, jt: 0, jf: 0, k: 0 }];
        let prog = libc::sock_fprog { len: 1, filter: drop_all.as_mut_ptr() };
        // SAFETY: `prog` points at a live one-instruction program and its size is passed along;
        // the kernel copies the program during the call.
        let ret = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                ptr::from_ref(&prog).cast(),
                mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        };
        if ret == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
    }

    /// Removes the filter of [`PacketSocket::attach_drop_all`].
    fn detach_filter(&self) -> io::Result<()> {
        self.set(libc::SOL_SOCKET, libc::SO_DETACH_FILTER, 0)
    }

    fn get(&self, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
        let mut value: libc::c_int = 0;
        let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` and `len` are live and sized for an int option.
        let ret =
            unsafe { libc::getsockopt(self.fd.as_raw_fd(), level, name, ptr::from_mut(&mut value).cast(), &mut len) };
        if ret == 0 { Ok(value) } else { Err(io::Error::last_os_error()) }
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
        set_int(self.fd.as_raw_fd(), level, name, value)
    }

    /// Takes up to [`BATCH`] frames from the ring into `rx` without waiting, after handing the
    /// slots of the previous batch back to the kernel; `WouldBlock` if the ring is empty. At
    /// most one frame per batch is read from the socket's queue (one too big for its slot): a
    /// second one ends the batch before it.
    pub(super) fn recv(&self, rx: &mut RxBuffers) -> io::Result<usize> {
        let ring = &self.ring;
        // Hand back the previous batch, oldest slot first (the kernel fills in that order).
        for k in (1..=rx.held).rev() {
            let slot = (rx.head + ring.frames - k) % ring.frames;
            ring.status(slot).store(libc::TP_STATUS_KERNEL, Ordering::Release);
        }
        rx.held = 0;
        let mut n = 0;
        let mut copied = false;
        while n < BATCH {
            let slot = rx.head;
            // Acquire: the header and frame the kernel wrote before setting the status.
            let status = ring.status(slot).load(Ordering::Acquire);
            if status & libc::TP_STATUS_USER == 0 {
                break;
            }
            let wants_copy = status & libc::TP_STATUS_COPY != 0;
            if wants_copy && copied {
                break;
            }
            // Set for a frame read from the queue too: the kernel fills the slot's header for
            // it all the same.
            rx.tagged[n] = status & libc::TP_STATUS_VLAN_VALID != 0;
            // SAFETY: the slot is ours (TP_STATUS_USER, seen with Acquire); its header is
            // plain data the kernel finished writing.
            let (len, snap, mac) = unsafe {
                let h = ring.header(slot);
                ((*h).tp_len as usize, (*h).tp_snaplen as usize, usize::from((*h).tp_mac))
            };
            let slot_start = slot * RING_FRAME;
            (rx.frames[n], rx.truncated[n]) = if wants_copy {
                copied = true;
                self.recv_copy(rx)
            } else if mac >= VNET_HDR_LEN && mac + snap <= RING_FRAME {
                (Held::Ring { start: slot_start + mac - VNET_HDR_LEN, len: snap + VNET_HDR_LEN }, snap < len)
            } else {
                (Held::Empty, true)
            };
            rx.head = (slot + 1) % ring.frames;
            rx.held += 1;
            n += 1;
        }
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    /// Reads the next frame of the socket's queue into `rx.copy`: where the kernel puts a
    /// frame too big for a ring slot. Returns where it is and whether it was cut short.
    fn recv_copy(&self, rx: &mut RxBuffers) -> (Held, bool) {
        // SAFETY: `rx.copy` has BUF_LEN writable bytes, borrowed for the call.
        let got = unsafe {
            libc::recv(self.fd.as_raw_fd(), rx.copy.as_mut_ptr().cast(), BUF_LEN, libc::MSG_DONTWAIT | libc::MSG_TRUNC)
        };
        match usize::try_from(got) {
            // MSG_TRUNC: the frame's real length, more than the buffer if it did not fit.
            Ok(len) => (Held::Copy { len: len.min(BUF_LEN) }, len > BUF_LEN),
            // Nothing queued after all (the kernel could not queue it): a frame lost.
            Err(_) => (Held::Empty, true),
        }
    }

    /// Reads and so clears the socket's pending error, e.g. ENETDOWN after its interface went
    /// down. With a receive ring nothing else reads it, and the next send would fail with it.
    pub(super) fn clear_error(&self) {
        self.take_error();
    }

    /// Sends `frames` (each beginning with its virtio header), at most [`BATCH`], in order and
    /// without waiting: those that fit a slot through the transmit ring, the others (GSO
    /// super-frames, jumbo frames) with `sendmmsg`. A frame the kernel refuses, or that finds
    /// the ring or the queue full, is dropped and counted as an error: the receive loop must
    /// never stall.
    pub(super) fn send<'a>(&self, frames: impl Iterator<Item = &'a [u8]>) -> Sent {
        let mut sent = Sent::default();
        let mut tx = self.tx.lock();
        // A run of frames too big for a slot, sent together once the run ends.
        let mut big: [&[u8]; BATCH] = [&[]; BATCH];
        let mut bigs = 0;
        for frame in frames.take(BATCH) {
            if frame.len() <= TX_SLOT_DATA {
                if bigs > 0 {
                    sent.add(&self.send_copies(big[..bigs].iter().copied()));
                    bigs = 0;
                }
                tx.put(frame, &mut sent);
            } else {
                // Frames already in the ring leave first: order is kept within a batch.
                tx.flush(&mut sent);
                big[bigs] = frame;
                bigs += 1;
            }
        }
        tx.flush(&mut sent);
        if bigs > 0 {
            sent.add(&self.send_copies(big[..bigs].iter().copied()));
        }
        sent
    }

    /// Sends `frames` (each beginning with its virtio header), at most [`BATCH`], with
    /// `sendmmsg`: the kernel copies each one into a new buffer. A frame the kernel refuses is
    /// dropped and counted as an error; a full queue (`EAGAIN`, `ENOBUFS`) drops the rest, since
    /// retrying at once would fail too.
    fn send_copies<'a>(&self, frames: impl Iterator<Item = &'a [u8]>) -> Sent {
        // SAFETY: iovec and mmsghdr are plain C structs for which all zeros is a valid value
        // (null pointers, zero lengths), as in `recv`.
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

/// Slots of one lane's transmit ring for `rx_frames` receive slots: a quarter (a slot is free
/// again as soon as the receiving side has taken its frame, long before the receive ring
/// wraps), at least a block.
fn tx_ring_frames(rx_frames: usize) -> usize {
    (rx_frames / 4).next_multiple_of(RING_BLOCK / RING_FRAME)
}

/// Where a frame starts in a transmit slot: right after the `tpacket2_hdr` (the kernel reads
/// it at `TPACKET2_HDRLEN - sizeof(struct sockaddr_ll)` unless told otherwise).
const TX_SLOT_OFFSET: usize = libc::TPACKET2_HDRLEN - mem::size_of::<libc::sockaddr_ll>();
/// Most bytes (virtio header and frame) a transmit slot carries: a full-size Ethernet frame
/// fits, a GSO super-frame does not.
const TX_SLOT_DATA: usize = RING_FRAME - TX_SLOT_OFFSET;

/// The transmit side of a lane's socket: a second packet socket, bound to the same interface,
/// with a transmit ring (`PACKET_TX_RING`, `TPACKET_V2`) and its own virtio headers.
///
/// The engine copies each frame into a free slot, marks it `TP_STATUS_SEND_REQUEST`, and one
/// `send` per batch makes the kernel transmit every marked slot: no message headers copied in
/// and checked per frame as with `sendmmsg`. The kernel marks a slot `TP_STATUS_AVAILABLE`
/// again when the buffer it built from it is freed.
///
/// Why a socket of its own: a socket with a transmit ring can send nothing else, and the
/// lane's receive socket is watched by the tokio reactor, so the kernel would wake its wait
/// queue for every sent frame freed (`sock_def_write_space`, 4 % of the engine's time for
/// 64-byte frames). Nobody waits on this one, and it receives nothing (bound with protocol 0).
#[derive(Debug)]
struct TxSocket {
    /// Declared before `fd`: unmapped before the socket closes.
    ring: Ring,
    fd: OwnedFd,
    /// The next slot to fill. Only the lane that owns the socket sends through it; the mutex,
    /// never contended, keeps it so whatever a future caller does.
    head: std::sync::Mutex<usize>,
}

impl TxSocket {
    fn open(ifindex: u32, frames: usize) -> io::Result<Self> {
        let fd = ring_socket()?;
        let raw = fd.as_raw_fd();
        // A slot the kernel cannot send (a malformed virtio header) is skipped and handed back,
        // instead of stopping the ring at it.
        set_int(raw, libc::SOL_PACKET, libc::PACKET_LOSS, 1)?;
        let ring = Ring::map(raw, libc::PACKET_TX_RING, frames)?;
        let socket = Self { ring, fd, head: std::sync::Mutex::new(0) };
        set_buffer(raw, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)?;
        // Protocol 0: bound to the interface for sending, receiving nothing.
        bind(raw, ifindex, 0)?;
        Ok(socket)
    }

    fn lock(&self) -> TxBatch<'_> {
        let head = self.head.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        TxBatch { socket: self, head, queued: [(0, 0); BATCH], len: 0 }
    }
}

/// The slots filled for one batch, not yet handed to the kernel.
struct TxBatch<'a> {
    socket: &'a TxSocket,
    head: std::sync::MutexGuard<'a, usize>,
    /// Slots marked `TP_STATUS_SEND_REQUEST` since the last flush, and their frames' lengths.
    queued: [(usize, usize); BATCH],
    len: usize,
}

impl TxBatch<'_> {
    /// Copies `frame` (virtio header and frame, at most [`TX_SLOT_DATA`] bytes) into the next
    /// slot; counts an error if that slot is still the kernel's (the ring is full).
    fn put(&mut self, frame: &[u8], sent: &mut Sent) {
        let ring = &self.socket.ring;
        let slot = *self.head;
        // Acquire: the kernel is done with the slot's buffer before the engine writes it.
        let status = ring.status(slot).load(Ordering::Acquire);
        if status & (libc::TP_STATUS_SEND_REQUEST | libc::TP_STATUS_SENDING) != 0 || self.len == BATCH {
            sent.errors += 1;
            return;
        }
        let len = frame.len().min(TX_SLOT_DATA);
        // SAFETY: the slot is ours (neither requested nor being sent, seen with Acquire), and
        // TX_SLOT_OFFSET + len <= RING_FRAME keeps the copy inside it.
        unsafe {
            let h = ring.header(slot);
            let data = h.cast::<u8>().add(TX_SLOT_OFFSET);
            ptr::copy_nonoverlapping(frame.as_ptr(), data, len);
            prepare_vnet_header(std::slice::from_raw_parts_mut(data, len));
            (*h).tp_len = len as u32;
        }
        // Release: the frame is in the slot before the kernel can see the request.
        ring.status(slot).store(libc::TP_STATUS_SEND_REQUEST, Ordering::Release);
        self.queued[self.len] = (slot, len);
        self.len += 1;
        *self.head = (slot + 1) % ring.frames;
    }

    /// Has the kernel send every slot queued, then counts them. Slots it did not take (the
    /// interface down, the peer's queue full) are taken back and counted as errors, so no
    /// frame leaves late, out of order with later batches.
    fn flush(&mut self, sent: &mut Sent) {
        if self.len == 0 {
            return;
        }
        let ring = &self.socket.ring;
        // No buffer: "send what the ring holds". The kernel keeps a head of its own and sends
        // requested slots from it, in order, until it meets one that is not requested or a
        // send fails; so what it leaves is the tail of this batch.
        // SAFETY: a null buffer of length 0 is what a ring socket's send expects.
        unsafe { libc::send(self.socket.fd.as_raw_fd(), ptr::null(), 0, libc::MSG_DONTWAIT) };
        let queued = &self.queued[..self.len];
        let requested = |slot: usize| ring.status(slot).load(Ordering::Acquire) & libc::TP_STATUS_SEND_REQUEST != 0;
        let taken = queued.iter().position(|&(slot, _)| requested(slot)).unwrap_or(queued.len());
        for &(_, len) in &queued[..taken] {
            sent.packets += 1;
            sent.bytes += len.saturating_sub(VNET_HDR_LEN) as u64;
        }
        if let Some(&(first, _)) = queued.get(taken) {
            // The kernel's head stopped at `first`; ours must go back there too, or the kernel
            // would wait at a slot never requested again while the engine fills the ones after
            // it: the port could not send any more. Only this thread sends through the socket
            // and the kernel is done with this send, so nothing races the stores.
            for &(slot, _) in &queued[taken..] {
                ring.status(slot).store(libc::TP_STATUS_AVAILABLE, Ordering::Release);
                sent.errors += 1;
            }
            *self.head = first;
        }
        self.len = 0;
    }
}

/// Makes the kernel copy a whole small frame into the buffer it sends (`hdr_len` = the frame's
/// length). Otherwise it copies only the header and attaches the rest of the slot as a page
/// fragment; veth must then copy the fragment again, into a page allocated per frame, before
/// the slot can be reused (tpacket buffers are zero-copy buffers). GSO frames are left alone:
/// their `hdr_len` tells the kernel how to segment them. `raw` is the virtio header and frame.
fn prepare_vnet_header(raw: &mut [u8]) {
    // virtio_net_hdr: flags (1), gso_type (1), hdr_len (2, little-endian: the kernel reads it
    // as legacy virtio, in the host's order, and this host is little-endian)...
    const GSO_TYPE: usize = 1;
    const HDR_LEN: std::ops::Range<usize> = 2..4;
    if raw.len() < VNET_HDR_LEN || raw[GSO_TYPE] != 0 {
        return;
    }
    let frame_len = u16::try_from(raw.len() - VNET_HDR_LEN).unwrap_or(u16::MAX);
    raw[HDR_LEN].copy_from_slice(&frame_len.to_ne_bytes());
}

/// A raw packet socket, non-blocking, that receives nothing until bound with a protocol, set up
/// for a `TPACKET_V2` ring with virtio headers: GSO super-frames stay whole, each behind a
/// header describing it. Both are set before any ring, as the kernel refuses to change them
/// once there is one.
fn ring_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain system call with constant arguments; the result is checked below.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a descriptor we just opened and nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    set_int(fd.as_raw_fd(), libc::SOL_PACKET, libc::PACKET_VNET_HDR, 1)?;
    set_int(fd.as_raw_fd(), libc::SOL_PACKET, libc::PACKET_VERSION, libc::tpacket_versions::TPACKET_V2 as i32)?;
    Ok(fd)
}

/// Binds packet socket `fd` to interface `ifindex`, receiving frames of `protocol` (host
/// order; `ETH_P_ALL` for every frame, 0 for none: a socket that only sends).
fn bind(fd: RawFd, ifindex: u32, protocol: u16) -> io::Result<()> {
    // SAFETY: sockaddr_ll is a plain C struct for which all zeros is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as libc::c_ushort;
    addr.sll_protocol = protocol.to_be();
    addr.sll_ifindex = ifindex as libc::c_int;
    // SAFETY: `addr` is a live sockaddr_ll and its size is passed along.
    let ret =
        unsafe { libc::bind(fd, ptr::from_ref(&addr).cast(), mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t) };
    if ret == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Sets a socket buffer of `fd` to [`SOCKET_BUF_BYTES`]: the `*FORCE` option ignores the
/// `net.core.[rw]mem_max` limit but needs CAP_NET_ADMIN, so fall back to the plain one.
fn set_buffer(fd: RawFd, force: libc::c_int, plain: libc::c_int) -> io::Result<()> {
    set_int(fd, libc::SOL_SOCKET, force, SOCKET_BUF_BYTES)
        .or_else(|_| set_int(fd, libc::SOL_SOCKET, plain, SOCKET_BUF_BYTES))
}

/// Sets an int socket option on `fd`.
fn set_int(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: `value` is a live c_int and its size is passed along.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            ptr::from_ref(&value).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if ret == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_virtio_header_and_frame() {
        let mut backing = vec![0u8; 4 * RING_FRAME];
        let mut rx = RxBuffers {
            base: NonNull::new(backing.as_mut_ptr()).unwrap(),
            head: 0,
            held: 0,
            frames: [Held::Empty; BATCH],
            truncated: [false; BATCH],
            tagged: [false; BATCH],
            copy: BytesMut::zeroed(BUF_LEN),
        };
        rx.frames[1] = Held::Ring { start: RING_FRAME + 66, len: VNET_HDR_LEN + 20 };
        rx.frames[2] = Held::Ring { start: 0, len: 4 };
        assert_eq!(rx.raw(1).len(), VNET_HDR_LEN + 20);
        assert_eq!(rx.frame(1).len(), 20);
        assert!(rx.frame(2).is_empty());
        assert!(rx.raw(0).is_empty());
        rx.frames[3] = Held::Copy { len: usize::MAX };
        assert_eq!(rx.raw(3).len(), BUF_LEN);
    }

    #[test]
    fn ring_geometry() {
        assert_eq!(RING_BLOCK % RING_FRAME, 0, "slots never straddle blocks");
        for lanes in 1..=64 {
            let frames = ring_frames(lanes);
            assert_eq!((frames * RING_FRAME) % RING_BLOCK, 0, "whole blocks for {lanes} lanes");
            assert!(frames >= MIN_RING_FRAMES && frames * lanes.min(8) >= PORT_RING_FRAMES);
        }
        assert_eq!(ring_frames(2), 1024);
        assert_eq!(RING_FRAME % libc::TPACKET_ALIGNMENT, 0);
        // The kernel puts the frame at TPACKET_ALIGN(hdrlen + 16) + virtio header - 14.
        let mac = (libc::TPACKET2_HDRLEN + 16).next_multiple_of(libc::TPACKET_ALIGNMENT) + VNET_HDR_LEN - 14;
        assert!(RING_FRAME - mac >= 1518, "a full-size tagged frame fits a slot");
        // Transmit slots: a full-size tagged frame with its virtio header fits too, and the
        // transmit ring is whole blocks.
        assert_eq!(TX_SLOT_OFFSET, 32);
        const { assert!(TX_SLOT_DATA >= VNET_HDR_LEN + 1518) };
        for lanes in 1..=64 {
            let frames = tx_ring_frames(ring_frames(lanes));
            assert_eq!((frames * RING_FRAME) % RING_BLOCK, 0);
            assert!(frames >= BATCH);
        }
    }

    #[test]
    fn small_frames_are_sent_whole_gso_frames_untouched() {
        // A 60-byte frame whose checksum the kernel must finish: hdr_len becomes 60.
        let mut raw = vec![0u8; VNET_HDR_LEN + 60];
        raw[0] = 1; // VIRTIO_NET_HDR_F_NEEDS_CSUM
        prepare_vnet_header(&mut raw);
        assert_eq!(u16::from_le_bytes([raw[2], raw[3]]), 60);
        assert_eq!(raw[0], 1, "flags are kept");
        // A TCP GSO frame (gso_type 1): its hdr_len is the segmentation's, kept.
        let mut gso = vec![0u8; VNET_HDR_LEN + 1000];
        gso[1] = 1;
        gso[2] = 66;
        prepare_vnet_header(&mut gso);
        assert_eq!(u16::from_le_bytes([gso[2], gso[3]]), 66);
        // Shorter than a virtio header: nothing to do, no panic.
        prepare_vnet_header(&mut [0u8; 4]);
    }
}
