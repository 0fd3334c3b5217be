//! Replies of forwarded (and masqueraded) connections leaving the switch towards the uplinks:
//! translated back and sent straight out of the uplink, without a trip through the host's IP
//! stack.
//!
//! ```text
//!  server ns ──► port's host end [switch_ingress]
//!                   dst is the gateway port and CONNTRACK knows the reply
//!                   ──► src back to UPLINK_ADDR:port, TTL-1, MACs from the FIB ──► uplink
//!                   (otherwise: on to the gateway port as any frame)
//!  host end of the gateway [nat_gateway] does the same for what still arrives there (XDP
//!  datapath, frames flooded before the FDB knew the gateway)
//! ```
use aya_ebpf::{bindings::TC_ACT_OK, helpers::generated::bpf_redirect, programs::TcContext};

use super::{
    ctx::now_coarse_ns,
    ipv4,
    nat::{self, CT_SNAT},
    route,
};

/// Translates and redirects a reply to the uplink. `fib_ifindex` is the interface the FIB
/// lookup acts as if the packet arrived on (it needs IPv4 forwarding on). `Ok(TC_ACT_OK)`
/// when the packet is not such a reply or the FIB cannot route it yet: the caller goes on.
#[inline(always)]
pub fn to_uplink(ctx: &TcContext, fib_ifindex: u32) -> Result<i32, i64> {
    let Some(f) = ipv4::parse(ctx) else { return Ok(TC_ACT_OK) };
    let now = now_coarse_ns();
    let Some(found) = nat::ct_lookup(&f, now) else { return Ok(TC_ACT_OK) };
    // The same translation step as nat_egress's, with the router's part first: a packet the
    // FIB cannot route yet, or whose TTL is about to expire, goes on untouched (not half
    // translated) through the gateway to the stack, which resolves the neighbour or sends the
    // ICMP error.
    let routed = nat::ct_translate(ctx, &f, found, CT_SNAT, now, |e| {
        let (out, smac, dmac) = route::next_hop(ctx, &f, e.addr, f.daddr, fib_ifindex)?;
        route::as_router(ctx, &smac, &dmac).ok()?;
        Some(out)
    })?;
    match routed {
        // SAFETY: helper with scalar arguments.
        Some(out) => Ok(unsafe { bpf_redirect(out, 0) } as i32),
        None => Ok(TC_ACT_OK),
    }
}
