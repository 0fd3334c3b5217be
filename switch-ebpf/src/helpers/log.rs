//! Datapath log records (aya-log), emitted only while the switch's CFG_F_LOG flag is set
//! (`switch logs`).
//!
//! Each record is its own BPF subprogram (`#[inline(never)]`): the ring-buffer formatting code
//! is long, and keeping it out of the hot function keeps that function small for the verifier
//! and the instruction cache.
use aya_ebpf::programs::TcContext;
use aya_log_ebpf::{debug, warn};

#[inline(never)]
pub fn runt(ctx: &TcContext, ifindex: u32, len: u32) {
    warn!(ctx, "port {}: runt frame of {} bytes dropped", ifindex, len);
}

#[inline(never)]
pub fn bad_source(ctx: &TcContext, ifindex: u32) {
    warn!(ctx, "port {}: frame with a group or zero source MAC dropped", ifindex);
}

#[inline(never)]
pub fn unicast(ctx: &TcContext, in_ifindex: u32, out_ifindex: u32) {
    debug!(ctx, "port {}: known unicast to port {}", in_ifindex, out_ifindex);
}

#[inline(never)]
pub fn flood(ctx: &TcContext, in_ifindex: u32) {
    debug!(ctx, "port {}: flooded", in_ifindex);
}
