//! TC/TCX ingress program on the host end of every port's veth pair.
//!
//! ```text
//!  namespace red                 host                          namespace blue
//!  ┌──────────┐          ┌──────────────────────────┐          ┌──────────┐
//!  │   eth0   │──veth──► │ h-red-…  [switch_ingress]│          │   eth0   │
//!  └──────────┘          │   1. port? (PORT_SLOTS)  │          └──────────┘
//!                        │   2. parse Ethernet      │               ▲
//!                        │   3. learn src -> port   │  known dst    │
//!                        │   4. dst known? ─────────┼─redirect_peer─┘
//!                        │   5. else flood to every │
//!                        │      other port (PORTS)  │──► h-blue-… egress ──► eth0 …
//!                        └──────────────────────────┘
//! ```
//!
//! The frame never reaches the host's IP stack or netfilter, and no Linux bridge exists.
use aya_ebpf::{
    bindings::TC_ACT_SHOT,
    helpers::generated::bpf_ktime_get_coarse_ns,
    macros::classifier,
    programs::TcContext,
};
use switch_common::{is_group, is_valid_source};

use crate::helpers::{config::Config, eth, fdb, forward, log, maps::PORT_SLOTS, stats};

/// Lets the next TCX program (or the stack) have the frame: this interface is not a port.
const TC_ACT_UNSPEC: i32 = -1;

#[classifier]
pub fn switch_ingress(ctx: TcContext) -> i32 {
    ingress(&ctx)
}

#[inline(always)]
fn ingress(ctx: &TcContext) -> i32 {
    // SAFETY: reading a field of the context the kernel passed in.
    let in_ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // 1. Only frames of this switch's ports are switched. Anything else (a port being added
    //    or removed right now) goes on as if the program were not there.
    let Some(&in_slot) = (unsafe { PORT_SLOTS.get(&in_ifindex) }) else {
        return TC_ACT_UNSPEC;
    };
    let cfg = Config::load();
    let len = ctx.len() as u64;
    stats::rx(in_slot, len);

    // 2. A frame that is not even an Ethernet header is never forwarded half-parsed.
    let Some(eth) = eth::parse(ctx) else {
        stats::malformed(in_slot);
        if cfg.log() {
            log::runt(ctx, in_ifindex, len as u32);
        }
        return TC_ACT_SHOT as i32;
    };
    if !is_valid_source(&eth.src) {
        // Multicast or zero source: the Linux bridge drops these too, and learning them would
        // poison the table.
        stats::dropped(in_slot);
        if cfg.log() {
            log::bad_source(ctx, in_ifindex);
        }
        return TC_ACT_SHOT as i32;
    }

    // 3. Learn. The coarse clock is enough for ageing in seconds and cheaper than ktime.
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    fdb::learn(eth.src, in_ifindex, now);

    // 4. Known unicast goes straight to its port.
    if !is_group(&eth.dst) {
        if let Some(out_ifindex) = fdb::lookup(eth.dst, now, cfg.ageing_ns) {
            if out_ifindex == in_ifindex {
                // Destination is on the port the frame came from: nothing to do (the Linux
                // bridge without hairpin mode drops these too).
                stats::dropped(in_slot);
                return TC_ACT_SHOT as i32;
            }
            match unsafe { PORT_SLOTS.get(&out_ifindex) } {
                Some(&out_slot) => {
                    if cfg.log() {
                        log::unicast(ctx, in_ifindex, out_ifindex);
                    }
                    return forward::unicast(out_ifindex, out_slot, len, cfg.redirect_peer());
                }
                // The entry points at a port that was removed: forget it and flood.
                None => fdb::forget(eth.dst),
            }
        }
    }

    // 5. Broadcast, multicast and unknown unicast: every other port gets a copy.
    if cfg.log() {
        log::flood(ctx, in_ifindex);
    }
    forward::flood(ctx, in_ifindex, in_slot, cfg.slot_limit, len)
}
