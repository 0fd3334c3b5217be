//! TC ingress program on the host end of every port's veth pair (the `tc` datapath), a
//! direct-action filter of the veth's clsact qdisc.
//!
//! ```text
//!  namespace red                 host                          namespace blue
//!  ┌──────────┐          ┌──────────────────────────┐          ┌──────────┐
//!  │   eth0   │──veth──► │ sred-…   [switch_ingress]│          │   eth0   │
//!  └──────────┘          │   1. port? (PORT_SLOTS)  │          └──────────┘
//!                        │   2. parse Ethernet      │               ▲
//!                        │   3. learn src -> port   │  known dst    │
//!                        │   4. dst known? ─────────┼─redirect_peer─┘
//!                        │   5. else flood to every │
//!                        │      other port (PORTS)  │──► sblue-… egress ──► eth0 …
//!                        └──────────────────────────┘
//! ```
//!
//! Steps 1-3 and the choice in 4/5 are `helpers::decide`; this file carries the decision out.
//! A reply of a forwarded connection on its way to the gateway port leaves for the uplink
//! from here (`helpers::reply`), one veth hop shorter than through the gateway.
//! The frame never reaches the host's IP stack or netfilter, and no Linux bridge exists.
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use switch_common::{PORT_F_HOST, PORT_F_TUNNEL};

use crate::helpers::{
    config::Config,
    ctx::{now_coarse_ns, skb_ifindex},
    decide::{FLOOD, NOT_PORT, UNICAST, decide},
    eth, forward, host_flows,
    maps::{NAT_CONFIG, PORTS},
    observe, redirect, reply, stats, tunnel,
    verdict::TC_NEXT,
};

#[classifier]
pub fn switch_ingress(ctx: TcContext) -> i32 {
    let in_ifindex = skb_ifindex(&ctx);
    let cfg = Config::load();
    let len = ctx.len() as u64;
    let d = decide(in_ifindex, eth::parse(&ctx), |port| eth::l3_src(&ctx, port), len, &cfg, now_coarse_ns());
    observe::tc(&ctx, &cfg, &d, in_ifindex, len as u32);
    match d.action {
        // A port being added or removed right now: go on as if the program were not there.
        NOT_PORT => TC_NEXT,
        UNICAST => {
            // One look at the port's flags: the gateway port's peer is out of
            // redirect_peer's reach, and a frame for it may be a reply leaving right here; a
            // station behind the tunnel port is reached through its peer.
            let flags = PORTS.get(d.out_slot).map_or(0, |p| p.flags);
            // The host's packets into the segment teach which flows it translated; the
            // answers of those go back through it (`helpers/host_flows.rs`).
            if d.in_flags & PORT_F_HOST != 0 {
                host_flows::note_tc(&ctx, d.in_slot);
            } else if flags & PORT_F_HOST == 0
                && let Some(verdict) = host_flows::divert_tc(&ctx, &cfg, len)
            {
                return verdict;
            }
            if flags & PORT_F_TUNNEL != 0 {
                return tunnel::to_peer(&ctx, d.out_ifindex, d.out_slot, len);
            }
            let to_host = flags & PORT_F_HOST != 0;
            if to_host && let Some(verdict) = reply_shortcut(&ctx) {
                stats::tx(d.out_slot, len);
                return verdict;
            }
            redirect::unicast(&ctx, d.out_ifindex, d.out_slot, len, cfg.redirect_peer() && !to_host)
        }
        FLOOD => forward::flood(&ctx, in_ifindex, cfg.slot_limit, len),
        // Malformed, invalid source, destination on the same port.
        _ => TC_ACT_SHOT,
    }
}

/// A frame for the gateway port that is the reply of a forwarded connection: translated and
/// sent out of the uplink right here. `None`: not such a frame, it goes to the gateway.
#[inline(always)]
fn reply_shortcut(ctx: &TcContext) -> Option<i32> {
    // Zero until port forwarding is set up on the switch.
    let fib_ifindex = NAT_CONFIG.get(0).map_or(0, |c| c.gateway_ifindex);
    if fib_ifindex == 0 {
        return None;
    }
    match reply::to_uplink(ctx, fib_ifindex) {
        Ok(v) if v != TC_ACT_OK => Some(v),
        _ => None,
    }
}
