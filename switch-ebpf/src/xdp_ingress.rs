//! XDP program on the host end of every port's veth pair (the `xdp` datapath).
//!
//! ```text
//!  namespace red            host                                   namespace blue
//!  eth0 ──veth──► sred-… [switch_xdp]  decide (as TC)
//!                   known dst:  bpf_redirect_map(PORT_DEVMAP, dst port) ──► sblue-… ──► eth0
//!                   flood:      bpf_redirect_map(.., BPF_F_BROADCAST|EXCLUDE_INGRESS) ──► all
//! ```
//!
//! Frames are switched before an skb exists, which saves the skb allocation per frame but loses
//! GSO super-frames and the veth's checksum state: the controller turns tx checksumming (and
//! with it TSO) off and GRO on for the namespace ends, which is what makes this datapath slower
//! than TC for TCP and faster for small frames.
use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use switch_common::PORT_F_HOST;

use crate::helpers::{
    config::Config,
    ctx::{now_coarse_ns, xdp_ingress_ifindex},
    decide::{FLOOD, NOT_PORT, UNICAST, decide},
    eth, forward_xdp, host_flows, observe,
};

#[xdp]
pub fn switch_xdp(ctx: XdpContext) -> u32 {
    let in_ifindex = xdp_ingress_ifindex(&ctx);
    let cfg = Config::load();
    let len = (ctx.data_end() - ctx.data()) as u64;
    let (data, data_end) = (ctx.data(), ctx.data_end());
    let d = decide(
        in_ifindex,
        eth::parse_bounds(data, data_end),
        |port| eth::l3_src_bounds(data, data_end, port),
        len,
        &cfg,
        now_coarse_ns(),
    );
    observe::xdp(&ctx, &cfg, &d, in_ifindex, len as u32);
    match d.action {
        NOT_PORT => xdp_action::XDP_PASS,
        UNICAST => {
            // As `switch_ingress`: the host's packets into the segment teach which flows it
            // translated, and the answers of those go back through it.
            if d.in_flags & PORT_F_HOST != 0 {
                host_flows::note_xdp(data, data_end, d.in_slot);
            } else if let Some(verdict) = host_flows::divert_xdp(data, data_end, &cfg, d.out_slot, len) {
                return verdict;
            }
            forward_xdp::unicast(d.out_ifindex, d.out_slot, len)
        }
        FLOOD => forward_xdp::flood(in_ifindex, cfg.slot_limit, len),
        _ => xdp_action::XDP_DROP,
    }
}
