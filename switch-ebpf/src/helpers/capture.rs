//! Packet capture for `switch capture`: a copy of each frame the running capture wants, as it
//! arrived on a port and before the switch acted on it, with the switch's verdict, written
//! into the `CAPTURE` ring buffer.
//!
//! The entry programs call `of_tc`/`of_xdp` only while `Config::capture()` says a capture
//! runs: otherwise the hot path pays one test of a flag it already loaded. The copy is in a
//! BPF subprogram per program type (`#[inline(never)]`), so the entry programs barely grow.
//!
//! ```text
//!   CAPTURE_FILTER (port, verdicts, snap length) ── wanted? ──► CAPTURE_SCRATCH (this CPU)
//!     header + first `caplen` bytes (bpf_skb_load_bytes / bpf_xdp_load_bytes)
//!       └─► bpf_ringbuf_output(CAPTURE, 32 + caplen bytes) ──► `switch capture` (tokio)
//! ```
//!
//! A record's size depends on the frame, and a ring buffer reservation must have a size the
//! verifier knows, so the record is built in a per-CPU scratch value and copied into the ring
//! with a bounded variable size. A full ring loses the record; the scratch header counts the
//! losses and the next record that gets through carries the count.
use aya_ebpf::{
    bindings::{__sk_buff, xdp_md},
    cty::c_void,
    helpers::{
        bpf_ktime_get_ns,
        generated::{bpf_skb_load_bytes, bpf_xdp_load_bytes},
    },
    programs::{TcContext, XdpContext},
};
use switch_common::capture::{
    HEADER_LEN, MAX_SNAPLEN, Record, VERDICT_DROP, VERDICT_FLOOD, VERDICT_FORWARD, WANT_DROPPED, WANT_FORWARDED,
};

use super::{
    decide::{Decision, FLOOD, NOT_PORT, UNICAST},
    maps::{CAPTURE, CAPTURE_FILTER, CAPTURE_SCRATCH},
};

/// The verdict of decision `d` and its detail (the output port of a forwarded frame, the
/// reason of a dropped one); `None` for a frame that is not the switch's.
#[inline(always)]
fn verdict(d: &Decision) -> Option<(u32, u32)> {
    match d.action {
        NOT_PORT => None,
        UNICAST => Some((VERDICT_FORWARD as u32, d.out_ifindex)),
        FLOOD => Some((VERDICT_FLOOD as u32, 0)),
        _ => Some((VERDICT_DROP as u32, d.drop_reason)),
    }
}

/// Captures the frame of a TC program, if the running capture wants it.
#[inline(always)]
pub fn of_tc(ctx: &TcContext, d: &Decision, in_ifindex: u32, len: u32) {
    if let Some((verdict, detail)) = verdict(d) {
        tc_record(ctx.skb.skb, in_ifindex, len, verdict, detail);
    }
}

/// Captures the frame of an XDP program, if the running capture wants it.
#[inline(always)]
pub fn of_xdp(ctx: &XdpContext, d: &Decision, in_ifindex: u32, len: u32) {
    if let Some((verdict, detail)) = verdict(d) {
        xdp_record(ctx.ctx, in_ifindex, len, verdict, detail);
    }
}

/// A subprogram: the verifier checks it once, with the context pointer as the caller's.
/// `bpf_skb_load_bytes` also reads the non-linear part of a GSO super-frame.
#[inline(never)]
fn tc_record(skb: *mut __sk_buff, in_ifindex: u32, len: u32, verdict: u32, detail: u32) {
    let Some((rec, caplen)) = begin(in_ifindex, len, verdict, detail) else { return };
    // SAFETY: the helper writes `caplen` bytes (1..=MAX_SNAPLEN, checked in `begin`) into
    // the scratch record's data, which has room for MAX_SNAPLEN.
    let copied =
        unsafe { bpf_skb_load_bytes(skb as *const c_void, 0, rec.data.as_mut_ptr().cast(), caplen as u32) } == 0;
    finish(rec, caplen, copied);
}

/// As `tc_record`, for an XDP frame (`bpf_xdp_load_bytes` also reads fragments).
#[inline(never)]
fn xdp_record(md: *mut xdp_md, in_ifindex: u32, len: u32, verdict: u32, detail: u32) {
    let Some((rec, caplen)) = begin(in_ifindex, len, verdict, detail) else { return };
    // SAFETY: as in `tc_record`.
    let copied = unsafe { bpf_xdp_load_bytes(md, 0, rec.data.as_mut_ptr().cast(), caplen as u32) } == 0;
    finish(rec, caplen, copied);
}

/// This CPU's scratch record with its header filled in, and how many bytes of the frame to
/// copy; `None` if the capture does not want the frame.
#[inline(always)]
fn begin(in_ifindex: u32, len: u32, verdict: u32, detail: u32) -> Option<(&'static mut Record, u64)> {
    let filter = CAPTURE_FILTER.get(0)?;
    if filter.ifindex != 0 && filter.ifindex != in_ifindex {
        return None;
    }
    let want = if verdict == VERDICT_DROP as u32 { WANT_DROPPED } else { WANT_FORWARDED };
    if filter.verdicts & want == 0 {
        return None;
    }
    // Both bounds explicit: the helpers' size arguments must be a range the verifier can
    // prove, 1..=MAX_SNAPLEN (zero is refused by the skb/xdp load helpers). In 64 bits: a
    // 32-bit value tested on a zero-extended copy leaves the original's range unproven.
    let (snaplen, len64) = (u64::from(filter.snaplen), u64::from(len));
    let mut caplen = if snaplen < len64 { snaplen } else { len64 };
    if caplen > MAX_SNAPLEN as u64 {
        caplen = MAX_SNAPLEN as u64;
    }
    if caplen == 0 {
        return None;
    }
    let rec = CAPTURE_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's copy of a per-CPU array value; a program does not run twice at once
    // on one CPU, and nothing else writes it.
    let rec = unsafe { &mut *rec };
    let h = &mut rec.header;
    // SAFETY: helper without arguments.
    h.ts_ns = unsafe { bpf_ktime_get_ns() };
    h.ifindex = in_ifindex;
    h.len = len;
    h.caplen = caplen as u32;
    h.verdict = verdict as u16;
    (h.out_ifindex, h.reason) = if verdict == VERDICT_DROP as u32 { (0, detail as u16) } else { (detail, 0) };
    Some((rec, caplen))
}

/// Writes the record (header and `caplen` bytes) into the ring, or counts it as lost.
#[inline(always)]
fn finish(rec: &mut Record, caplen: u64, copied: bool) {
    if !copied {
        return;
    }
    let size = HEADER_LEN + caplen as usize;
    // SAFETY: `size` is at most HEADER_LEN + MAX_SNAPLEN, the size of the record.
    let bytes = unsafe { core::slice::from_raw_parts((rec as *const Record).cast::<u8>(), size) };
    if CAPTURE.output::<[u8]>(bytes, 0).is_ok() {
        rec.header.lost = 0;
    } else {
        rec.header.lost += 1;
    }
}
