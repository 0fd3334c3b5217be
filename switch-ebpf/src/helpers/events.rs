//! Events for `switch monitor`: drops with their reason (the switch's and NAT's), learned
//! stations and moves, and connections NAT creates, each with a summary of its frame, written into the `EVENTS` ring buffer.
//!
//! The entry programs call `of_decision` only when `Config::events()` says someone listens:
//! off, the hot path pays one test of a config flag it has already loaded. The work itself is
//! in `emit`, a BPF subprogram (`#[inline(never)]`), so the entry programs' own code (and the
//! states the verifier explores in them) barely grows.
//!
//! A flood of bad frames must not become a flood of events: each CPU emits at most
//! `RATE_PER_WINDOW` events per window of about a second (`EVENT_RATE`, per CPU, so no
//! atomics), and counts the rest; the next event that gets through carries the count.
use aya_ebpf::{helpers::bpf_ktime_get_ns, programs::TcContext};
use switch_common::{
    ETH_HLEN,
    events::{
        DROP_NOT_PEER, Event, FRAME_F_IPV4, FRAME_F_PORTS, FrameSummary, KIND_DROP, KIND_NAT, RATE_PER_WINDOW,
        RATE_WINDOW_SHIFT,
    },
    nat::{PROTO_TCP, PROTO_UDP},
};

use super::{
    config::Config,
    ctx::skb_ifindex,
    decide::Decision,
    maps::{EVENT_RATE, EVENTS},
};

/// EtherType of IPv4.
const ETH_P_IP: u16 = 0x0800;

/// What the entry program knows about one event. Passed by reference: a BPF call takes at
/// most five arguments, and this keeps `emit` at three.
pub struct EventArgs {
    pub kind: u16,
    pub reason: u16,
    pub ifindex: u32,
    pub other_ifindex: u32,
    pub len: u32,
    pub nat_addr: u32,
    pub nat_port: u16,
}

impl EventArgs {
    const NONE: Self = Self { kind: 0, reason: 0, ifindex: 0, other_ifindex: 0, len: 0, nat_addr: 0, nat_port: 0 };
}

/// Emits the events of decision `d` on a frame of `len` bytes from `in_ifindex`, whose
/// linear bytes are `[data, data_end)` (both programs' packet pointers: the summary reads
/// only what is already linear and never pulls, so emitting changes nothing in the packet).
#[inline(always)]
pub fn of_decision(d: &Decision, in_ifindex: u32, len: u32, data: usize, data_end: usize) {
    if d.learned != 0 {
        let kind = d.learned as u16;
        let a = EventArgs { kind, ifindex: in_ifindex, other_ifindex: d.moved_from, len, ..EventArgs::NONE };
        emit(&a, data, data_end);
    }
    if d.drop_reason != 0 {
        let a =
            EventArgs { kind: KIND_DROP, reason: d.drop_reason as u16, ifindex: in_ifindex, len, ..EventArgs::NONE };
        emit(&a, data, data_end);
    }
}

/// A connection NAT just created (`reason`: `NAT_FORWARD` or `NAT_MASQUERADE`), translated to
/// `addr:port`; called before the packet is rewritten, so the frame is as it came. Only new
/// connections get here, so the config is loaded here rather than on every packet.
#[inline(always)]
pub fn nat_connection(ctx: &TcContext, reason: u16, addr: u32, port: u16) {
    if !Config::load().events() {
        return;
    }
    let a = EventArgs {
        kind: KIND_NAT,
        reason,
        ifindex: skb_ifindex(ctx),
        len: ctx.len(),
        nat_addr: addr,
        nat_port: port,
        ..EventArgs::NONE
    };
    emit(&a, ctx.data(), ctx.data_end());
}

/// A frame the tunnel port refused (another VNI, or not from a peer). The frame is the
/// decapsulated one; which peer it claimed to come from is not in the event.
#[inline(always)]
pub fn not_peer(ctx: &TcContext, in_ifindex: u32) {
    let a =
        EventArgs { kind: KIND_DROP, reason: DROP_NOT_PEER, ifindex: in_ifindex, len: ctx.len(), ..EventArgs::NONE };
    emit(&a, ctx.data(), ctx.data_end());
}

/// A packet the NAT programs drop (`reason`: `DROP_NAT_REFUSED`, `DROP_UNSOLICITED`), on the
/// interface it is on (an uplink, the gateway). Only drops get here, so the config is loaded
/// here rather than on every packet.
#[inline(always)]
pub fn nat_drop(ctx: &TcContext, reason: u16) {
    if !Config::load().events() {
        return;
    }
    let a = EventArgs { kind: KIND_DROP, reason, ifindex: skb_ifindex(ctx), len: ctx.len(), ..EventArgs::NONE };
    emit(&a, ctx.data(), ctx.data_end());
}

/// Writes one event unless this CPU is over its rate. A subprogram of its own: the verifier
/// checks it with the caller's argument types, so `data`/`data_end` stay packet pointers in
/// here and the reads of `summarize` are checked against them as in the caller.
#[inline(never)]
fn emit(a: &EventArgs, data: usize, data_end: usize) {
    let Some(rate) = EVENT_RATE.get_ptr_mut(0) else { return };
    // SAFETY: this CPU's copy of a per-CPU array value; the program cannot run twice at once
    // on one CPU.
    let rate = unsafe { &mut *rate };
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let window = now >> RATE_WINDOW_SHIFT;
    if rate.window != window {
        rate.window = window;
        rate.sent = 0;
    }
    if rate.sent >= RATE_PER_WINDOW {
        rate.suppressed += 1;
        return;
    }
    // Reserved in place (no 56-byte copy on the stack, whose 512 bytes the caller's frame
    // shares); the verifier insists the entry is submitted or discarded on every path, which
    // the straight line below does.
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        // Full ring: the reader is behind. Counted like a suppressed event.
        rate.suppressed += 1;
        return;
    };
    rate.sent += 1;
    let event = Event {
        ts_ns: now,
        kind: a.kind,
        reason: a.reason,
        ifindex: a.ifindex,
        other_ifindex: a.other_ifindex,
        suppressed: rate.suppressed,
        nat_addr: a.nat_addr,
        nat_port: a.nat_port,
        pad: 0,
        frame: summarize(data, data_end, a.len),
    };
    rate.suppressed = 0;
    entry.write(event);
    entry.submit(0);
}

/// The summary of the frame at `[data, data_end)`: MACs and EtherType, and for IPv4 the
/// addresses, protocol and (TCP/UDP, first fragment) ports. Every read is behind the
/// comparison with `data_end` that the verifier requires for it.
#[inline(always)]
fn summarize(data: usize, data_end: usize, len: u32) -> FrameSummary {
    let mut f = FrameSummary { len, ..FrameSummary::default() };
    if data + ETH_HLEN > data_end {
        return f;
    }
    // SAFETY: the Ethernet header is inside [data, data_end), checked just above.
    unsafe {
        f.dst = *(data as *const [u8; 6]);
        f.src = *((data + 6) as *const [u8; 6]);
        f.ethertype = u16::from_be(*((data + 12) as *const u16));
    }
    // The fixed IPv4 header ends at 14 + 20.
    if f.ethertype != ETH_P_IP || data + ETH_HLEN + 20 > data_end {
        return f;
    }
    let ip = data + ETH_HLEN;
    // SAFETY: the 20-byte IPv4 header is inside [data, data_end), checked just above.
    let (ihl, frag) = unsafe {
        f.proto = *((ip + 9) as *const u8);
        f.saddr = *((ip + 12) as *const u32);
        f.daddr = *((ip + 16) as *const u32);
        (((*(ip as *const u8)) & 0x0f) as usize * 4, u16::from_be(*((ip + 6) as *const u16)) & 0x1fff)
    };
    f.flags = FRAME_F_IPV4;
    // The mask above bounds `ihl` to 0..=60, which lets the verifier track the pointer sum.
    if ihl < 20 || frag != 0 || (f.proto != PROTO_TCP && f.proto != PROTO_UDP) || ip + ihl + 4 > data_end {
        return f;
    }
    // SAFETY: the four port bytes are inside [data, data_end), checked just above.
    unsafe {
        f.sport = u16::from_be(*((ip + ihl) as *const u16));
        f.dport = u16::from_be(*((ip + ihl + 2) as *const u16));
    }
    f.flags |= FRAME_F_PORTS;
    f
}
