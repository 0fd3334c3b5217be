//! Datapath log records (aya-log), emitted only while the switch's CFG_F_LOG flag is set
//! (`switch logs`).
//!
//! Each record is its own BPF subprogram (`#[inline(never)]`): the ring-buffer formatting code
//! is long, and keeping it out of the hot function keeps that function small for the verifier
//! and the instruction cache.
use aya_ebpf::EbpfContext;
use aya_log_ebpf::{debug, warn};

use super::decide::{DROP_MALFORMED, DROP_SAME_PORT, DROP_SOURCE, DROP_SPOOFED, Decision, FLOOD, UNICAST};

/// Logs `d` for a frame of `len` bytes from `in_ifindex`.
#[inline(never)]
pub fn decision<C: EbpfContext>(ctx: &C, in_ifindex: u32, len: u32, d: &Decision) {
    match d.action {
        DROP_MALFORMED => warn!(ctx, "port {}: runt frame of {} bytes dropped", in_ifindex, len),
        DROP_SOURCE => warn!(ctx, "port {}: frame with a group or zero source MAC dropped", in_ifindex),
        DROP_SPOOFED => warn!(ctx, "port {}: frame with another station's MAC or address dropped", in_ifindex),
        DROP_SAME_PORT => debug!(ctx, "port {}: destination on the same port, dropped", in_ifindex),
        UNICAST => debug!(ctx, "port {}: known unicast to port {}", in_ifindex, d.out_ifindex),
        FLOOD => debug!(ctx, "port {}: flooded", in_ifindex),
        _ => {}
    }
}
