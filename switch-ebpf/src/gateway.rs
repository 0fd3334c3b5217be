//! TC programs on the gateway's host end (`gNAME`, the interface with the host's address on
//! the segment): where the segment meets the host's routing.
//!
//! ```text
//!        uplink ── host routing ── other interfaces (eth0, other switches' gateways, ...)
//!                     │    ▲
//!   [gateway_egress]  ▼    │  [nat_gateway]
//!                  gNAME (host address on the segment)
//!                     │    ▲
//!                  sNAME: a port of the switch ── namespaces
//! ```
//! `nat_gateway` sends replies of forwarded and masqueraded connections straight out of the
//! uplink. `gateway_egress` keeps the segment isolated: what the host routes into it must have
//! come from the host itself, from the segment, or from an uplink (whose own program let
//! through only forwarded ports and replies); anything routed in from elsewhere (another
//! switch's segment, a host interface that is not an uplink) is dropped and counted, unless
//! the segment is routable (`switch up --routable`). The uplinks' programs judge IPv4 only
//! (IPv6 has no forwards or connection table yet), so IPv6 routed in from an uplink counts as
//! from elsewhere.
use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
use switch_common::events::DROP_UNSOLICITED;

use crate::helpers::{
    config::Config,
    ctx::{skb_ifindex, skb_ingress_ifindex, skb_is_ipv6},
    maps::UPLINK_BY_IFINDEX,
    nat, reply,
};

/// TC ingress of the gateway's host end: replies of forwarded (and masqueraded) connections
/// coming from the switch are translated here and sent straight out of the uplink, without a
/// trip through the host's IP stack. Everything else (host-local traffic, first packets of
/// masqueraded connections) goes on to the stack.
#[classifier]
pub fn nat_gateway(ctx: TcContext) -> i32 {
    reply::to_uplink(&ctx, skb_ifindex(&ctx)).unwrap_or(TC_ACT_OK)
}

/// TC egress of the gateway's host end: every packet the host sends into the segment.
#[classifier]
pub fn gateway_egress(ctx: TcContext) -> i32 {
    let from = skb_ingress_ifindex(&ctx);
    // The host's own packets (0), the segment's own traffic routed back (a namespace sending
    // through its gateway to a neighbour), and what an uplink's nat_ingress let through: one
    // compare and at most one lookup, before the packet is even parsed.
    if from == 0 || from == skb_ifindex(&ctx) {
        return TC_ACT_OK;
    }
    // SAFETY: presence check, the value is not read.
    if !skb_is_ipv6(&ctx) && unsafe { UPLINK_BY_IFINDEX.get(&from) }.is_some() {
        return TC_ACT_OK;
    }
    if Config::load().routable() {
        return TC_ACT_OK;
    }
    nat::refuse(&ctx, DROP_UNSOLICITED)
}
