//! What the readers of the datapath see of a decision, in the order every entry program
//! reports it: the log record (`switch logs`), the events (`switch monitor`) and the captured
//! frame (`switch capture`). Each costs one test of a config flag the program has already
//! loaded unless its reader runs. Called before the frame is acted on, so a capture shows it
//! as it arrived.
use aya_ebpf::programs::{TcContext, XdpContext};

use super::{
    capture,
    config::Config,
    decide::{Decision, NOT_PORT},
    events, log,
};

/// For a TC program (a port's ingress, the tunnel port's).
#[inline(always)]
pub fn tc(ctx: &TcContext, cfg: &Config, d: &Decision, in_ifindex: u32, len: u32) {
    if cfg.log() && d.action != NOT_PORT {
        log::decision(ctx, in_ifindex, len, d);
    }
    if cfg.events() {
        events::of_decision(d, in_ifindex, len, ctx.data(), ctx.data_end());
    }
    if cfg.capture() {
        capture::of_tc(ctx, d, in_ifindex, len);
    }
}

/// For the XDP program.
#[inline(always)]
pub fn xdp(ctx: &XdpContext, cfg: &Config, d: &Decision, in_ifindex: u32, len: u32) {
    if cfg.log() && d.action != NOT_PORT {
        log::decision(ctx, in_ifindex, len, d);
    }
    if cfg.events() {
        events::of_decision(d, in_ifindex, len, ctx.data(), ctx.data_end());
    }
    if cfg.capture() {
        capture::of_xdp(ctx, d, in_ifindex, len);
    }
}
