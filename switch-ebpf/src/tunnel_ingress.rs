//! TC ingress program of the switch's VXLAN device, its tunnel port: frames from the
//! switches of other hosts (see `helpers/tunnel.rs` for the whole path).
//!
//! ```text
//!  underlay ──► vxlan (decapsulated) ──► [tunnel_ingress]
//!                 1. admit: the segment's VNI, from a peer? (else drop, counted)
//!                 2. decide: learn src at that peer, find dst (as switch_ingress)
//!                 3. known dst on a local port: redirect (peer) ──► namespace
//!                    dst behind the tunnel too: drop (split horizon)
//!                 4. else flood to the local ports only
//! ```
use aya_ebpf::{bindings::TC_ACT_SHOT, macros::classifier, programs::TcContext};
use switch_common::PORT_F_HOST;

use crate::helpers::{
    config::Config,
    ctx::{now_coarse_ns, skb_ifindex},
    decide::{FLOOD, UNICAST, decide_at},
    eth, events, forward, host_flows,
    maps::PORTS,
    observe, redirect, tunnel,
};

#[classifier]
pub fn tunnel_ingress(ctx: TcContext) -> i32 {
    let in_ifindex = skb_ifindex(&ctx);
    let Some(remote) = tunnel::admit(&ctx, in_ifindex) else {
        if Config::load().events() {
            events::not_peer(&ctx, in_ifindex);
        }
        return TC_ACT_SHOT;
    };
    let cfg = Config::load();
    let len = ctx.len() as u64;
    let d = decide_at(in_ifindex, remote, eth::parse(&ctx), |port| eth::l3_src(&ctx, port), len, &cfg, now_coarse_ns());
    // As on the other ports: a capture shows the frame as it arrived (decapsulated).
    observe::tc(&ctx, &cfg, &d, in_ifindex, len as u32);
    match d.action {
        UNICAST => {
            // The gateway's peer is the host's own: out of redirect_peer's reach.
            let to_host = PORTS.get(d.out_slot).is_some_and(|p| p.flags & PORT_F_HOST != 0);
            // The answer of a flow this host translated, from a station behind a peer.
            if !to_host && let Some(verdict) = host_flows::divert_tc(&ctx, &cfg, len) {
                return verdict;
            }
            redirect::unicast(&ctx, d.out_ifindex, d.out_slot, len, cfg.redirect_peer() && !to_host)
        }
        FLOOD => forward::flood(&ctx, in_ifindex, cfg.slot_limit, len),
        // Not a port (the tunnel being made or removed), malformed, invalid source, or a
        // destination behind the tunnel itself (never sent back into it).
        _ => TC_ACT_SHOT,
    }
}
