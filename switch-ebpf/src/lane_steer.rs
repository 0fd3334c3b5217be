//! `lane_steer`: which lane of the userspace switch a frame goes to (an object of its own, loaded
//! by the userspace engine, not per switch).
//!
//! The engine reads each port through one packet socket per lane (a thread pinned to a CPU),
//! the sockets of a port forming one `PACKET_FANOUT` group. This program is the group's
//! `PACKET_FANOUT_EBPF` demux: the kernel runs it for every frame a port receives and puts the
//! frame into the socket whose index it returns (modulo the group's size).
//!
//! ```text
//!  frame on CPU c ──► flow = (interface, addresses, protocol, ports): one direction
//!                     TCP: (addresses, ports) in either order: the connection
//!                       │
//!                       ▼  its lane p: c % LANES; TCP: the next one, (c + 1) % LANES
//!        new, or on lane p already? ──yes──► lane p (remembered)
//!                       │ no: on lane l
//!                       ▼
//!     idle STICK_NS, or (not TCP and) lane l has
//!     caught up with the flow's last frame (found the    ──yes──► moves to lane p
//!     port's ring empty after it: CAUGHT_UP)?
//!                       │ no
//!                       ▼
//!                 stays on lane l (its frames still queued there: order kept)
//! ```
//!
//! A flow other than TCP thus follows its sender from CPU to CPU, but only once no frame of it
//! is left on the old lane: the engine writes `CAUGHT_UP` (mapped into its memory) whenever a
//! lane finds a port's ring empty, with the time it looked, taken before it looked.
//!
//! A TCP connection is one flow, both directions, switched on the lane next to the CPU that
//! opened it, and it stays there while it is busy. Measured with one iperf3 stream on 2 CPUs,
//! 8 rounds interleaved with a bridge: TCP at 0.77-0.89x the bridge (median 0.83x), against
//! 0.70-0.81x (median 0.74x) for each direction on its sender's lane; the connection on its
//! opener's own lane measured 0.79x in `switch bench`. A bulk sender keeps
//! its CPU busy making segments; switched on the same CPU, sender and lane take turns, switched
//! beside it they work at once (as the bridge's receive side does, in the receiver's softirq).
//! A TCP request-response exchange was as fast either way (sockperf TCP ping-pong p50 36 us).
//! Datagram flows stay on their sender's CPU: a request-response exchange then wakes no thread
//! on another CPU (UDP ping-pong is what the latency targets measure).
//!
//! Why not the kernel's own demuxes: `PACKET_FANOUT_CPU` (the lane of the receiving CPU) lets
//! a flow's frames overtake each other, because a TCP sender transmits from whichever CPU it
//! runs on or takes an ACK on, and two lanes run in parallel (about ten thousand spurious
//! retransmits a second in one iperf3 stream, measured). `PACKET_FANOUT_HASH` keeps each flow on one lane, but on
//! the CPU its hash picks, which wakes a thread on the other CPU for half the flows (busy-poll
//! latency 3.9x the bridge instead of 1.8x). A flow here goes to the lane of the CPU that sent
//! it, as soon as that cannot reorder it.
#![no_std]
#![no_main]
#![allow(clippy::needless_borrows_for_generic_args)]

mod object;

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, bpf_hdr_start_off::BPF_HDR_START_NET},
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_skb_load_bytes_relative},
    macros::{map, socket_filter},
    maps::{Array, HashMap, LruHashMap},
    programs::SkBuffContext,
};
use switch_common::{
    MAX_PORTS,
    steer::{CAUGHT_UP_ENTRIES, MAX_LANES},
};

/// The engine's lanes per port (sockets in each fanout group); set by the engine at load.
#[unsafe(no_mangle)]
static LANES: u32 = 1;

/// A flow idle this long moves to the lane of the CPU its next frame comes from at once: its
/// last frame has long left the old lane, even one too loaded to report catching up.
const STICK_NS: u64 = 10_000_000;
/// How much later than a flow's last frame a lane must have looked at an empty ring for that
/// frame to be surely behind it: the frame reaches the ring in the same softirq as this
/// program, well within this.
const CAUGHT_UP_MARGIN_NS: u64 = 5_000;
/// Flows remembered at once; the least recently used is forgotten first (it then starts again
/// on the lane of the CPU its next frame comes from).
const FLOWS_MAX: u32 = 16384;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_SCTP: u8 = 132;

/// One direction of a flow on one port, or a whole TCP connection (see [`connection`]). IPv4
/// addresses take the first 4 bytes of each field.
#[repr(C)]
#[derive(Clone, Copy)]
struct FlowKey {
    /// The interface the frame came in on; zero for a TCP connection (both its ports).
    ifindex: u32,
    /// The EtherType, in host order.
    ethertype: u16,
    protocol: u8,
    pad: u8,
    src: [u8; 16],
    dst: [u8; 16],
    /// Source and destination ports as on the wire; zero for other protocols and fragments.
    ports: [u8; 4],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Steer {
    lane: u32,
    /// The slot of the port the flow came in on, where its lanes report in `CAUGHT_UP`.
    slot: u32,
    /// When its last frame went to `lane`.
    last_ns: u64,
}

#[map]
static FLOWS: LruHashMap<FlowKey, Steer> = LruHashMap::with_max_entries(FLOWS_MAX, 0);

#[map]
static STEER_SLOTS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_PORTS, 0);

#[map]
static CAUGHT_UP: Array<u64> = Array::with_max_entries(CAUGHT_UP_ENTRIES, BPF_F_MMAPABLE);

#[socket_filter]
pub fn lane_steer(ctx: SkBuffContext) -> i64 {
    // SAFETY: a read-only global the loader set.
    let lanes = unsafe { core::ptr::read_volatile(&LANES) }.clamp(1, MAX_LANES);
    let cpu = unsafe { bpf_get_smp_processor_id() };
    // checked_rem: a plain `%` would keep a division-by-zero panic path the verifier refuses.
    let here = cpu.checked_rem(lanes).unwrap_or(0);
    // SAFETY: a read of the context's field the verifier allows a socket filter.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let Some(key) = flow_key(&ctx, ifindex) else {
        // Not IP (ARP, say): no order to keep across frames of it.
        return i64::from(here);
    };
    let lane = if key.protocol == IPPROTO_TCP { cpu.wrapping_add(1).checked_rem(lanes).unwrap_or(0) } else { here };
    i64::from(lane_of(&key, ifindex, lane))
}

/// The lane `key`'s frames go to now, made or updated; `here` is the lane it would start on
/// now, from interface `ifindex`.
#[inline(always)]
fn lane_of(key: &FlowKey, ifindex: u32, here: u32) -> u32 {
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(steer) = FLOWS.get_ptr_mut(key) else {
        // SAFETY: a presence check, the value is copied out.
        let Some(slot) = (unsafe { STEER_SLOTS.get(&ifindex) }).copied() else {
            // Not a port (yet): nowhere to learn when a lane has caught up; no flow kept.
            return here;
        };
        // A full map forgets its least recently used flow; an insert that fails anyway only
        // means the next frame decides again.
        let _ = FLOWS.insert(key, &Steer { lane: here, slot, last_ns: now }, 0);
        return here;
    };
    // SAFETY: a value of the map, valid for this run; a racing update from another CPU can at
    // worst move the flow as the next frame would have.
    let steer = unsafe { &mut *steer };
    if steer.lane != here && may_move(key, steer, now) {
        steer.lane = here;
    }
    steer.last_ns = now;
    steer.lane
}

/// Whether a flow may move to the lane its frame would start on now.
///
/// A TCP connection moves only once idle (`STICK_NS`): a TCP sender transmits from its
/// process's CPU and from whichever CPU takes its ACKs, so the CPU of one segment says little
/// about where the sender is (a bulk flow that followed it bounced between the lanes: 0.64-0.67x
/// the bridge's TCP throughput), and its two directions come in through two ports, while a
/// lane reports catching up per port. Other flows are sent from their application's CPU: they
/// follow it as soon as the old lane has caught up with them, which keeps a request-response
/// exchange on the CPUs its two sides run on (sleeping p50 latency 0.69-0.73x the bridge
/// against 1.16-1.38x staying put).
#[inline(always)]
fn may_move(key: &FlowKey, steer: &Steer, now: u64) -> bool {
    let idle = now.wrapping_sub(steer.last_ns);
    if idle >= STICK_NS {
        // Its last frame has long left the old lane, even one too loaded to report.
        return true;
    }
    key.protocol != IPPROTO_TCP && caught_up(steer)
}

/// Whether no frame of the flow is left on its lane: the lane found the port's ring empty
/// after the flow's last frame went there.
#[inline(always)]
fn caught_up(steer: &Steer) -> bool {
    let index = steer.slot.wrapping_mul(MAX_LANES).wrapping_add(steer.lane);
    let caught_up = CAUGHT_UP.get(index).copied().unwrap_or(0);
    caught_up > steer.last_ns.wrapping_add(CAUGHT_UP_MARGIN_NS)
}

/// Reads `N` bytes at `offset` from the network header (wherever the kernel's data pointer is
/// when the demux runs).
#[inline(always)]
fn net_bytes<const N: usize>(ctx: &SkBuffContext, offset: u32) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    // SAFETY: the helper writes at most N bytes into `out`, which is N bytes long.
    let ret = unsafe {
        bpf_skb_load_bytes_relative(
            ctx.skb.skb as *const _,
            offset,
            out.as_mut_ptr() as *mut _,
            N as u32,
            BPF_HDR_START_NET,
        )
    };
    (ret == 0).then_some(out)
}

/// The flow a frame that came in on `ifindex` belongs to, if it is IPv4 or IPv6.
#[inline(always)]
fn flow_key(ctx: &SkBuffContext, ifindex: u32) -> Option<FlowKey> {
    // SAFETY: a read of the context's field the verifier allows a socket filter.
    let protocol = unsafe { (*ctx.skb.skb).protocol };
    let ethertype = u16::from_be(protocol as u16);
    let mut key = FlowKey { ifindex, ethertype, protocol: 0, pad: 0, src: [0; 16], dst: [0; 16], ports: [0; 4] };
    let l4 = match ethertype {
        ETH_P_IP => {
            // version/IHL, ..., flags/fragment offset (6..8), ..., protocol (9), ..., addresses (12..20).
            let h: [u8; 20] = net_bytes(ctx, 0)?;
            key.protocol = h[9];
            key.src[..4].copy_from_slice(&h[12..16]);
            key.dst[..4].copy_from_slice(&h[16..20]);
            // A fragment other than the first has no ports, and the first must go where they go.
            let fragment = u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0;
            if fragment { None } else { Some(u32::from(h[0] & 0x0f) * 4) }
        }
        ETH_P_IPV6 => {
            // ..., next header (6), ..., addresses (8..40). Extension headers are not walked:
            // such frames are keyed by their addresses and first next header alone.
            let h: [u8; 40] = net_bytes(ctx, 0)?;
            key.protocol = h[6];
            key.src.copy_from_slice(&h[8..24]);
            key.dst.copy_from_slice(&h[24..40]);
            Some(40)
        }
        _ => return None,
    };
    if let Some(offset) = l4
        && matches!(key.protocol, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP)
    {
        // A frame too short for its ports keeps zero ports: still one flow.
        key.ports = net_bytes(ctx, offset).unwrap_or([0; 4]);
    }
    if key.protocol == IPPROTO_TCP {
        connection(&mut key);
    }
    Some(key)
}

/// Makes a TCP segment's key its connection's: the same for both directions, whichever port
/// they come in on (no interface; the lower endpoint, address then port, first).
///
/// The key no longer says which port: a namespace forging another connection's addresses and
/// ports shares its entry. It can then choose that connection's lane (by sending first) or
/// keep it from moving (by keeping it busy); it cannot reorder or drop its frames, since the
/// entry only moves once idle.
#[inline(always)]
fn connection(key: &mut FlowKey) {
    key.ifindex = 0;
    let src_port = [key.ports[0], key.ports[1]];
    let dst_port = [key.ports[2], key.ports[3]];
    if (key.src, src_port) > (key.dst, dst_port) {
        core::mem::swap(&mut key.src, &mut key.dst);
        key.ports = [dst_port[0], dst_port[1], src_port[0], src_port[1]];
    }
}
