//! TC programs on the uplinks: port forwarding (DNAT) without iptables or a proxy process.
//!
//! ```text
//!  client 203.0.113.7:40000 ──► uplink (UPLINK_ADDR:8080)
//!     [nat_ingress]  FORWARDS tcp/8080 -> 192.168.15.2:80
//!                    dst 192.168.15.2:80, both directions recorded in CONNTRACK
//!     host routing ──► gateway port ──► switch ──► namespace (sees the real client address)
//!  namespace reply 192.168.15.2:80 -> 203.0.113.7:40000 ──► gateway ──► host routing
//!     [nat_egress]   CONNTRACK reply entry: src back to UPLINK_ADDR:8080 ──► client
//!
//!  namespace 192.168.15.2:5000 -> 198.51.100.1:443 (outbound, masquerade)
//!     [nat_egress]   src UPLINK_ADDR:5000 (or another free port), both directions recorded
//!     [nat_ingress]  the answer finds its CONNTRACK entry: dst back to 192.168.15.2:5000
//! ```
//!
//! Only the first packet of a connection looks at FORWARDS; the rest follow CONNTRACK, so
//! removing a rule stops new connections at once and lets existing ones finish.
use aya_ebpf::{
    bindings::TC_ACT_OK,
    helpers::generated::{bpf_ktime_get_coarse_ns, bpf_redirect, bpf_redirect_peer},
    macros::classifier,
    programs::TcContext,
};
use switch_common::{
    CtEntry, CtKey, FwdKey, MacKey, NAT_F_MASQUERADE,
    nat::{CT_HALF_OPEN, CT_UDP, MASQUERADE_RULE, PROTO_TCP},
};

use crate::helpers::{
    ipv4::{self, TCP_ACK, TCP_SYN},
    maps::{CONNTRACK, FDB, FORWARDS, NAT_CONFIG, PORT_SLOTS, UPLINK_ADDRS, UPLINK_BY_IFINDEX},
    nat::{self, count, key_of, touch},
    reply, route,
};

#[classifier]
pub fn nat_ingress(ctx: TcContext) -> i32 {
    // Anything that is not a translatable packet goes on untouched.
    let Some(f) = ipv4::parse(&ctx) else { return TC_ACT_OK as i32 };
    match ingress(&ctx, &f) {
        Ok(Some(dst)) => fast_path(&ctx, &f, dst),
        _ => TC_ACT_OK as i32,
    }
}

/// Sends a packet just translated to `dst` straight on: into the target's namespace when the
/// switch knows the target's port (`bpf_redirect_peer`), else out of the interface the FIB
/// names. Anything the FIB cannot answer yet goes through the host stack instead.
#[inline(always)]
fn fast_path(ctx: &TcContext, f: &ipv4::Flow, dst: u32) -> i32 {
    // SAFETY: reading a field of the context the kernel passed in.
    let in_ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let Some((out, smac, dmac)) = route::next_hop(ctx, f.saddr, dst, f.proto, in_ifindex) else {
        return TC_ACT_OK as i32;
    };
    if route::as_router(ctx, &smac, &dmac).is_err() {
        return TC_ACT_OK as i32;
    }
    // SAFETY: map lookups and helpers with scalar arguments.
    unsafe {
        match FDB.get(&MacKey::new(dmac)) {
            Some(e) if PORT_SLOTS.get(&e.ifindex).is_some() => bpf_redirect_peer(e.ifindex, 0) as i32,
            _ => bpf_redirect(out, 0) as i32,
        }
    }
}

/// Translates a packet from outside; `Some(new destination)` when it did.
#[inline(always)]
fn ingress(ctx: &TcContext, f: &ipv4::Flow) -> Result<Option<u32>, i64> {
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let len = ctx.len() as u64;
    let key = key_of(f);
    if let Some(e) = CONNTRACK.get_ptr_mut(&key) {
        // SAFETY: map value, valid for the program run.
        let e = unsafe { &mut *e };
        if e.original == 1 && !e.is_expired(now) {
            let reply = CtKey { src: e.addr, dst: f.saddr, sport: e.port, dport: f.sport, proto: f.proto, pad: [0; 3] };
            touch(e, &reply, f, now);
            count(e.rule, len, false);
            let addr = e.addr;
            nat::rewrite_dst(ctx, f, addr, e.port)?;
            return Ok(Some(addr));
        }
    }
    // A new connection: to an uplink address, on a forwarded port, and for TCP a bare SYN.
    if unsafe { UPLINK_ADDRS.get(&f.daddr) }.is_none() {
        return Ok(None);
    }
    // SAFETY: value copied out at once.
    let Some(t) = (unsafe { FORWARDS.get(&FwdKey { port: f.dport, proto: f.proto, pad: 0 }) }).copied() else {
        return Ok(None);
    };
    if f.proto == PROTO_TCP && (f.tcp_flags & TCP_SYN == 0 || f.tcp_flags & TCP_ACK != 0) {
        return Ok(None);
    }
    let state = if f.proto == PROTO_TCP { CT_HALF_OPEN } else { CT_UDP };
    let original = CtEntry { addr: t.addr, port: t.port, rule: t.rule, state, original: 1, last_seen_ns: now };
    let reply_key = CtKey { src: t.addr, dst: f.saddr, sport: t.port, dport: f.sport, proto: f.proto, pad: [0; 3] };
    let reply = CtEntry { addr: f.daddr, port: f.dport, rule: t.rule, state, original: 0, last_seen_ns: now };
    // Reply entry first: once the original exists, a retransmitted SYN takes the fast path
    // above and its answer must already find its way back.
    nat::ct_put(&reply_key, &reply)?;
    nat::ct_put(&key, &original)?;
    count(t.rule, len, true);
    nat::rewrite_dst(ctx, f, t.addr, t.port)?;
    Ok(Some(t.addr))
}

#[classifier]
pub fn nat_egress(ctx: TcContext) -> i32 {
    if let Some(f) = ipv4::parse(&ctx) {
        let _ = egress(&ctx, &f);
    }
    TC_ACT_OK as i32
}

#[inline(always)]
fn egress(ctx: &TcContext, f: &ipv4::Flow) -> Result<(), i64> {
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let Some(e) = CONNTRACK.get_ptr_mut(&key_of(f)) else { return masquerade(ctx, f, now) };
    // SAFETY: map value, valid for the program run.
    let e = unsafe { &mut *e };
    if e.original != 0 || e.is_expired(now) {
        return Ok(());
    }
    let original = CtKey { src: f.daddr, dst: e.addr, sport: f.dport, dport: e.port, proto: f.proto, pad: [0; 3] };
    touch(e, &original, f, now);
    count(e.rule, ctx.len() as u64, false);
    nat::rewrite_src(ctx, f, e.addr, e.port)
}

/// Source ports tried for a masqueraded connection before giving up: the namespace's own
/// port first (most connections keep it), then pseudo-random ones.
const MASQ_TRIES: u16 = 8;

/// A new outbound TCP/UDP connection from the switch's segment: source NAT to the uplink's
/// address, with a source port no other connection to the same remote uses.
#[inline(always)]
fn masquerade(ctx: &TcContext, f: &ipv4::Flow, now: u64) -> Result<(), i64> {
    let Some(cfg) = NAT_CONFIG.get(0) else { return Ok(()) };
    let mask = cfg.segment_mask;
    if cfg.flags & NAT_F_MASQUERADE == 0 || f.saddr & mask != cfg.segment || f.daddr & mask == cfg.segment {
        return Ok(());
    }
    // SAFETY: reading a field of the context the kernel passed in.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: value copied out at once.
    let Some(uplink) = (unsafe { UPLINK_BY_IFINDEX.get(&ifindex) }).copied() else { return Ok(()) };
    let state = if f.proto == PROTO_TCP { CT_HALF_OPEN } else { CT_UDP };
    for i in 0..MASQ_TRIES {
        let port = if i == 0 {
            f.sport
        } else {
            let h = (u32::from(f.sport) ^ (now as u32)).wrapping_mul(2_654_435_761).wrapping_add(u32::from(i) * 7919);
            1024 + (h % 64_512) as u16
        };
        let back = CtKey { src: f.daddr, dst: uplink, sport: f.dport, dport: port, proto: f.proto, pad: [0; 3] };
        if let Some(taken) = CONNTRACK.get_ptr(&back) {
            // SAFETY: map value, valid for the program run.
            if !unsafe { &*taken }.is_expired(now) {
                continue;
            }
        }
        let inbound =
            CtEntry { addr: f.saddr, port: f.sport, rule: MASQUERADE_RULE, state, original: 1, last_seen_ns: now };
        let outbound = CtEntry { addr: uplink, port, rule: MASQUERADE_RULE, state, original: 0, last_seen_ns: now };
        nat::ct_put(&back, &inbound)?;
        nat::ct_put(&key_of(f), &outbound)?;
        count(MASQUERADE_RULE, ctx.len() as u64, true);
        return nat::rewrite_src(ctx, f, uplink, port);
    }
    Ok(())
}

/// TC ingress of the gateway's host end: replies of forwarded (and masqueraded) connections
/// coming from the switch are translated here and sent straight out of the uplink, without a
/// trip through the host's IP stack. Everything else (host-local traffic, first packets of
/// masqueraded connections) goes on to the stack.
#[classifier]
pub fn nat_gateway(ctx: TcContext) -> i32 {
    // SAFETY: reading a field of the context the kernel passed in.
    let in_ifindex = unsafe { (*ctx.skb.skb).ifindex };
    reply::to_uplink(&ctx, in_ifindex).unwrap_or(TC_ACT_OK as i32)
}
