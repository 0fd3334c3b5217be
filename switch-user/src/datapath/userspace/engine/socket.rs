//! The `AF_PACKET` socket of a port, and every `unsafe` libc call of the engine.
//!
//! Each port is one raw packet socket bound to the host end of its veth. Three choices make it
//! fast enough to switch TCP at multi-gigabit rates from userspace:
//!
//! - `PACKET_VNET_HDR`: the kernel hands over GSO super-frames whole, each behind a
//!   `virtio_net_hdr` that describes how to segment it, and accepts them back the same way.
//!   A 64 KiB TCP burst costs one syscall slot instead of 45.
//! - `recvmmsg`/`sendmmsg`: up to [`BATCH`] frames per system call in both directions, into
//!   and out of buffers allocated once per port ([`RxBuffers`]), never per frame.
//! - Non-blocking calls only (`MSG_DONTWAIT`): the port task waits for readiness in tokio
//!   (`AsyncFd`), and a full transmit queue drops frames instead of stalling the receive loop.
//!
//! Received buffers are sent on unchanged, virtio header included, so a frame is never
//! copied between receiving it on one port and sending it out of another.
use std::{
    io, mem,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    ptr,
};

use bytes::BytesMut;

use super::BATCH;

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

/// Receive buffers of one port, allocated once when its task starts: [`BATCH`] slots of
/// [`BUF_LEN`] bytes, each holding a virtio header and a frame.
pub(super) struct RxBuffers {
    /// One allocation for the whole batch, made when the port is added and reused for every
    /// batch after.
    buf: BytesMut,
    /// Bytes the kernel wrote into each slot (virtio header included).
    lens: [usize; BATCH],
    /// Whether the frame did not fit its slot.
    pub(super) truncated: [bool; BATCH],
}

impl RxBuffers {
    pub(super) fn new() -> Self {
        Self { buf: BytesMut::zeroed(BATCH * BUF_LEN), lens: [0; BATCH], truncated: [false; BATCH] }
    }

    /// Slot `i` as received: virtio header, then the frame. This is what is sent on.
    pub(super) fn raw(&self, i: usize) -> &[u8] {
        let start = i * BUF_LEN;
        &self.buf[start..start + self.lens[i].min(BUF_LEN)]
    }

    /// The Ethernet frame of slot `i` (empty if the kernel gave less than a virtio header).
    pub(super) fn frame(&self, i: usize) -> &[u8] {
        self.raw(i).get(VNET_HDR_LEN..).unwrap_or_default()
    }
}

/// An `AF_PACKET` raw socket bound to one interface, with virtio headers on.
#[derive(Debug)]
pub(super) struct PacketSocket {
    fd: OwnedFd,
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl PacketSocket {
    /// Opens `lanes` sockets on `ifindex` that share its frames between them: one per thread
    /// of the engine, so that every CPU switches frames (see [`PacketSocket::open_one`] for what
    /// each socket is). With more than one, they form a `PACKET_FANOUT_CPU` group: a frame goes
    /// to the socket of the CPU the kernel received it on, so the frames of one sender on one
    /// CPU stay in one socket and in order, and the CPUs a sender runs on share its load.
    ///
    /// Every socket drops everything (a one-instruction BPF filter) from before its bind until
    /// the whole group is formed: a bound socket outside the group would get a copy of every
    /// frame, and the frame would be switched twice.
    pub(super) fn open_group(ifindex: u32, lanes: usize) -> io::Result<Vec<Self>> {
        let lanes = lanes.max(1);
        let grouped = lanes > 1;
        let mut sockets = Vec::with_capacity(lanes);
        let mut group_id = 0u32;
        for i in 0..lanes {
            let socket = Self::open_one(ifindex, grouped)?;
            if grouped {
                if i == 0 {
                    // The kernel picks an id no other group on the host uses.
                    let flags = libc::PACKET_FANOUT_CPU | libc::PACKET_FANOUT_FLAG_UNIQUEID;
                    socket.set(libc::SOL_PACKET, libc::PACKET_FANOUT, (flags << 16) as libc::c_int)?;
                    // Read back as id | type << 16 | flags << 24.
                    group_id = socket.get(libc::SOL_PACKET, libc::PACKET_FANOUT)? as u32 & 0xffff;
                } else {
                    let arg = group_id | (libc::PACKET_FANOUT_CPU << 16);
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
    fn open_one(ifindex: u32, muted: bool) -> io::Result<Self> {
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
        if muted {
            socket.attach_drop_all()?;
        }
        socket.bind(ifindex)?;
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
    pub(super) fn recv(&self, rx: &mut RxBuffers) -> io::Result<usize> {
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
    pub(super) fn send<'a>(&self, frames: impl Iterator<Item = &'a [u8]>) -> Sent {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
