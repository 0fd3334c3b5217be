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
use aya_ebpf::{bindings::TC_ACT_OK, helpers::generated::bpf_ktime_get_coarse_ns, programs::TcContext};
use switch_common::CtKey;

use super::{
    ipv4,
    maps::CONNTRACK,
    nat::{self, count, key_of, touch},
    route,
};

/// Translates and redirects a reply to the uplink. `fib_ifindex` is the interface the FIB
/// lookup acts as if the packet arrived on (it needs IPv4 forwarding on). `Ok(TC_ACT_OK)`
/// when the packet is not such a reply or the FIB cannot route it yet: the caller goes on.
#[inline(always)]
pub fn to_uplink(ctx: &TcContext, fib_ifindex: u32) -> Result<i32, i64> {
    let Some(f) = ipv4::parse(ctx) else { return Ok(TC_ACT_OK as i32) };
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let Some(e) = CONNTRACK.get_ptr_mut(&key_of(&f)) else { return Ok(TC_ACT_OK as i32) };
    // SAFETY: map value, valid for the program run.
    let e = unsafe { &mut *e };
    if e.original != 0 || e.is_expired(now) {
        return Ok(TC_ACT_OK as i32);
    }
    let Some((out, smac, dmac)) = route::next_hop(ctx, e.addr, f.daddr, f.proto, fib_ifindex) else {
        return Ok(TC_ACT_OK as i32);
    };
    let original = CtKey { src: f.daddr, dst: e.addr, sport: f.dport, dport: e.port, proto: f.proto, pad: [0; 3] };
    // The router's part first: a TTL about to expire leaves the packet untouched for the
    // stack (which sends the ICMP error) instead of half translated.
    if route::as_router(ctx, &smac, &dmac).is_err() {
        return Ok(TC_ACT_OK as i32);
    }
    touch(e, &original, &f, now);
    count(e.rule, ctx.len() as u64, false);
    let (addr, port) = (e.addr, e.port);
    nat::rewrite_src(ctx, &f, addr, port)?;
    // SAFETY: helper with scalar arguments.
    Ok(unsafe { aya_ebpf::helpers::generated::bpf_redirect(out, 0) } as i32)
}
