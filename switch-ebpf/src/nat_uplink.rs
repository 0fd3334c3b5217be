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
//!     [nat_egress]   src UPLINK_ADDR:61234 (a free port of the source's share of the
//!                    masquerade range), both directions recorded
//!     [nat_ingress]  the answer finds its entry: dst back to 192.168.15.2:5000
//! ```
//!
//! Only the first packet of a connection looks at FORWARDS; the rest follow CONNTRACK, so
//! removing a rule stops new connections at once and lets existing ones finish.
//!
//! The uplink is also where the segment is kept apart from the uplink's network: a packet
//! from outside that is neither for a forwarded port nor an answer of a connection in
//! CONNTRACK never reaches a namespace, even from a neighbour with a route to the segment via
//! the host. With `--no-masquerade` the segment's outbound connections are still recorded
//! (entries that translate nothing) so that their answers are known; a `--routable` segment
//! takes anything, and records inbound connections so their replies are not masqueraded.
//!
//! Several switches may have these programs on one uplink, each after the other in TCX's
//! chain: a program ends the chain (`TC_ACT_OK`, a redirect, a drop) only for a packet of its
//! own switch (one it translated, refused or tracked) and passes everything else on with
//! `TC_NEXT`, so the next switch's program gets to refuse or masquerade what is its own.
use aya_ebpf::{
    bindings::TC_ACT_OK,
    helpers::generated::{bpf_redirect, bpf_redirect_peer},
    macros::classifier,
    programs::TcContext,
};
use switch_common::{
    CtEntry, FwdKey, MacKey, NAT_F_MASQUERADE,
    events::{DROP_ICMP_FOREIGN, DROP_MASQ_SHARE, DROP_NAT_REFUSED, DROP_UNSOLICITED, NAT_FORWARD, NAT_MASQUERADE},
    nat::{CT_HALF_OPEN, CT_UDP, MASQ_BLOCKS, MASQ_SHARE_BLOCKS, MASQUERADE_RULE, PROTO_ICMP, PROTO_TCP},
};

use crate::helpers::{
    config::Config,
    ctx::{now_coarse_ns, skb_ifindex, skb_ingress_ifindex},
    events,
    icmp::{self, Outcome},
    ipv4::{self, TCP_ACK, TCP_SYN},
    maps::{FDB, FORWARDS, NAT_CONFIG, PORT_SLOTS, UPLINK_ADDRS, UPLINK_BY_IFINDEX},
    nat::{self, CT_DNAT, CT_SNAT, count, ct_key, ct_reverse_key},
    route,
    verdict::TC_NEXT,
};

#[classifier]
pub fn nat_ingress(ctx: TcContext) -> i32 {
    let Some(f) = ipv4::parse(&ctx) else { return ingress_other(&ctx) };
    match ingress(&ctx, &f) {
        Ok(Some(dst)) => fast_path(&ctx, &f, dst),
        Ok(None) => untranslated(&ctx, Some(f.daddr), Some(&f)),
        // A helper failed while rewriting: the stack has the last word.
        Err(_) => TC_ACT_OK,
    }
}

/// A packet from outside that is not a flow NAT tracks: an ICMP error about a translated
/// connection is translated back (and then routed by the stack) if it goes where that
/// connection's errors go, and dropped if it does not; the rest is checked like an
/// untranslated flow.
#[inline(always)]
fn ingress_other(ctx: &TcContext) -> i32 {
    let Some(q) = icmp::parse_error(ctx) else { return untranslated(ctx, ipv4::addrs(ctx).map(|(_, d)| d), None) };
    match icmp::translate_error(ctx, &q, CT_DNAT, now_coarse_ns(), false) {
        Ok(Outcome::Unknown) => untranslated(ctx, Some(q.outer_daddr), None),
        Ok(Outcome::Foreign) => nat::refuse(ctx, DROP_ICMP_FOREIGN),
        _ => TC_ACT_OK,
    }
}

/// A packet from outside that nothing translated, to `daddr` (`f`: it is a flow NAT could
/// track). Not routed to the segment (the host's own traffic on the uplink, another switch's,
/// not IPv4): passed on untouched to the next program. Routed to it: dropped and counted,
/// unless the segment is routable; then a new connection to a masqueraded segment is recorded
/// (as an entry that translates nothing) so that its replies leave as they are instead of
/// being masqueraded as new outbound connections.
#[inline(always)]
fn untranslated(ctx: &TcContext, daddr: Option<u32>, f: Option<&ipv4::Flow>) -> i32 {
    let (Some(daddr), Some(cfg)) = (daddr, NAT_CONFIG.get(0)) else { return TC_NEXT };
    if !cfg.in_segment(daddr) {
        return TC_NEXT;
    }
    if !Config::load().routable() {
        return nat::refuse(ctx, DROP_UNSOLICITED);
    }
    if let Some(f) = f
        && cfg.flags & NAT_F_MASQUERADE != 0
    {
        // Best effort: a full table only means this connection's replies get masqueraded.
        let _ = track(f, CT_DNAT, now_coarse_ns());
    }
    TC_ACT_OK
}

/// Records `f`'s connection with entries that translate nothing: both hold the segment side's
/// address and port (`f`'s destination for a connection from outside, `CT_DNAT`, its source
/// for one from the segment, `CT_SNAT`), so a rewrite to them changes no byte.
#[inline(always)]
fn track(f: &ipv4::Flow, nat: u16, now: u64) -> Result<(), i64> {
    let (addr, port) = if nat == CT_DNAT { (f.daddr, f.dport) } else { (f.saddr, f.sport) };
    let state = if f.proto == PROTO_TCP { CT_HALF_OPEN } else { CT_UDP };
    let mine = CtEntry { addr, port, rule: MASQUERADE_RULE, state, nat, last_seen_ns: now, ..Default::default() };
    let answer = CtEntry { nat: if nat == CT_DNAT { CT_SNAT } else { CT_DNAT }, ..mine };
    nat::ct_new(&ct_reverse_key(f, nat, addr, port), &answer, &ct_key(f), &mine)
}

/// Sends a packet just translated to `dst` straight on: into the target's namespace when the
/// switch knows the target's port (`bpf_redirect_peer`), else out of the interface the FIB
/// names. Anything the FIB cannot answer yet goes through the host stack instead.
#[inline(always)]
fn fast_path(ctx: &TcContext, f: &ipv4::Flow, dst: u32) -> i32 {
    let Some((out, smac, dmac)) = route::next_hop(ctx, f, f.saddr, dst, skb_ifindex(ctx)) else {
        return TC_ACT_OK;
    };
    if route::as_router(ctx, &smac, &dmac).is_err() {
        return TC_ACT_OK;
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
    let now = now_coarse_ns();
    // A packet of a known connection (the client's side of a forward, an answer to a
    // masqueraded one); an expired entry is a new connection on the same addresses and ports.
    if let Some(found) = nat::ct_lookup(f, now)
        && let Some(dst) = nat::ct_translate(ctx, f, found, CT_DNAT, now, |e| Some(e.addr))?
    {
        return Ok(Some(dst));
    }
    // A new connection: to an uplink address, on a forwarded port, and for TCP a bare SYN.
    // SAFETY: presence check, the value is not read.
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
    let first = CtEntry {
        addr: t.addr,
        port: t.port,
        rule: t.rule,
        state,
        nat: CT_DNAT,
        last_seen_ns: now,
        ..Default::default()
    };
    let reply_key = ct_reverse_key(f, CT_DNAT, t.addr, t.port);
    let reply = CtEntry { addr: f.daddr, port: f.dport, nat: CT_SNAT, ..first };
    nat::ct_new(&reply_key, &reply, &ct_key(f), &first)?;
    events::nat_connection(ctx, NAT_FORWARD, t.addr, t.port);
    count(t.rule, ctx.len() as u64, true);
    nat::rewrite_dst(ctx, f, t.addr, t.port)?;
    Ok(Some(t.addr))
}

#[classifier]
pub fn nat_egress(ctx: TcContext) -> i32 {
    let Some(f) = ipv4::parse(&ctx) else { return egress_other(&ctx) };
    egress(&ctx, &f)
}

/// A packet leaving an uplink that is not a flow NAT tracks: an ICMP error about a connection
/// that came in translated is translated back if it is that connection's own (from the
/// namespace that received the quoted packet, or the host's), and dropped if it is not.
/// Anything else from the segment (an error about nothing known, a fragment, another
/// protocol) cannot be masqueraded, so with masquerade on it is dropped and counted rather
/// than sent with a private source; so is an error that would quote a private address
/// untranslated (the host's, about a connection whose entries are gone).
#[inline(always)]
fn egress_other(ctx: &TcContext) -> i32 {
    let Some(cfg) = NAT_CONFIG.get(0) else { return TC_NEXT };
    let masquerade = cfg.flags & NAT_F_MASQUERADE != 0;
    let private = |addr: u32| masquerade && cfg.in_segment(addr);
    let (saddr, daddr) = match icmp::parse_error(ctx) {
        Some(q) => {
            // Made by the host itself (no interface it came in on), not routed from the
            // segment, and from an address that may leave.
            let host_error = skb_ingress_ifindex(ctx) == 0 && !private(q.outer_saddr);
            match icmp::translate_error(ctx, &q, CT_SNAT, now_coarse_ns(), host_error) {
                Ok(Outcome::Unknown) => {
                    let leaks = (private(q.saddr) || private(q.daddr)) && !Config::load().routable();
                    if leaks && !private(q.outer_saddr) && !cfg.in_segment(q.outer_daddr) {
                        return nat::refuse(ctx, DROP_ICMP_FOREIGN);
                    }
                    (q.outer_saddr, q.outer_daddr)
                }
                Ok(Outcome::Foreign) => return nat::refuse(ctx, DROP_ICMP_FOREIGN),
                _ => return TC_ACT_OK,
            }
        }
        None => match ipv4::addrs(ctx) {
            Some(a) => a,
            None => return TC_NEXT,
        },
    };
    if !private(saddr) || cfg.in_segment(daddr) {
        // Not from this switch's masqueraded segment: the next program's, or the stack's.
        return TC_NEXT;
    }
    nat::refuse(ctx, DROP_NAT_REFUSED)
}

/// A packet leaving an uplink: translated back if its connection is known and live, else
/// masqueraded as a new connection. An expired entry is made anew rather than bypassed: a
/// packet from the segment never leaves with its private source while masquerade is on.
#[inline(always)]
fn egress(ctx: &TcContext, f: &ipv4::Flow) -> i32 {
    let now = now_coarse_ns();
    let Some(found) = nat::ct_lookup(f, now) else { return masquerade(ctx, f, now) };
    let kind = found.e.nat;
    match nat::ct_translate(ctx, f, found, CT_SNAT, now, |_| Some(())) {
        Ok(Some(())) => TC_ACT_OK,
        Ok(None) if kind == CT_SNAT => masquerade(ctx, f, now),
        // An entry of the other direction's kind (a packet to a forwarded port's client seen
        // on its way in): untouched, for the next program.
        Ok(None) => TC_NEXT,
        // A rewrite that failed: as it came, and no other program should try again.
        Err(_) => TC_ACT_OK,
    }
}

/// Source ports tried for a masqueraded connection before giving up, all of them in the
/// source's share of the range (`masq_port`).
const MASQ_TRIES: u32 = 8;

/// A new outbound TCP/UDP connection from the switch's segment: source NAT to the uplink's
/// address, with a source port from the masquerade range (which the host's own sockets never
/// pick, so replies meant for a host connection are never taken) that no other connection to
/// the same remote uses. If no port is free, or the entries cannot be written, the packet is
/// dropped and counted: it never leaves with the private source. When every port tried was
/// held by the source's own connections to that remote, the source has used up its share:
/// counted as such (`DROP_MASQ_SHARE`).
#[inline(always)]
fn masquerade(ctx: &TcContext, f: &ipv4::Flow, now: u64) -> i32 {
    let Some(cfg) = NAT_CONFIG.get(0) else { return TC_NEXT };
    if !cfg.in_segment(f.saddr) || cfg.in_segment(f.daddr) {
        // Not from this switch's segment (the host's, another switch's): not ours.
        return TC_NEXT;
    }
    if cfg.flags & NAT_F_MASQUERADE == 0 {
        // Leaves with its own address; recorded so that its answers may come back in (a
        // routable segment takes anything, nothing to record).
        if !Config::load().routable() && track(f, CT_SNAT, now).is_err() {
            return nat::refuse(ctx, DROP_NAT_REFUSED);
        }
        return TC_ACT_OK;
    }
    // SAFETY: value copied out at once.
    let Some(uplink) = (unsafe { UPLINK_BY_IFINDEX.get(&skb_ifindex(ctx)) }).copied() else { return TC_NEXT };
    if f.proto == PROTO_ICMP && f.sport == 0 {
        // An echo reply with no entry answers a request routed in from outside; it has no
        // identifier of its own to translate, and it must not leave with a private source.
        return nat::refuse(ctx, DROP_NAT_REFUSED);
    }
    let state = if f.proto == PROTO_TCP { CT_HALF_OPEN } else { CT_UDP };
    let mut others = false;
    for i in 0..MASQ_TRIES {
        let port = masq_port(cfg.masq_first, cfg.masq_count.max(1), f, i);
        let back = ct_reverse_key(f, CT_SNAT, uplink, port);
        if let Some(held) = nat::ct_get(&back, now) {
            // The answer entry of the holder translates back to the holder's own address.
            others |= held.addr != f.saddr;
            continue;
        }
        let outbound = CtEntry {
            addr: uplink,
            port,
            rule: MASQUERADE_RULE,
            state,
            nat: CT_SNAT,
            last_seen_ns: now,
            ..Default::default()
        };
        let inbound = CtEntry { addr: f.saddr, port: f.sport, nat: CT_DNAT, ..outbound };
        let made = nat::ct_new(&back, &inbound, &ct_key(f), &outbound).and_then(|()| {
            events::nat_connection(ctx, NAT_MASQUERADE, uplink, port);
            nat::rewrite_src(ctx, f, uplink, port)
        });
        if made.is_err() {
            return nat::refuse(ctx, DROP_NAT_REFUSED);
        }
        count(MASQUERADE_RULE, ctx.len() as u64, true);
        return TC_ACT_OK;
    }
    nat::refuse(ctx, if others { DROP_NAT_REFUSED } else { DROP_MASQ_SHARE })
}

/// Try `i` of a port for `f` in the masquerade range (`first`, `count` ports). The range is
/// cut into `MASQ_BLOCKS` blocks; a source may use `MASQ_SHARE_BLOCKS` of them (fewer when
/// two picks coincide), picked by hashes of its address, so towards one remote it can hold at
/// most that share of the range whatever it sends, and two sources have about one block in
/// common (rarely more than three). The namespace's own source port plays no part beyond the
/// hash: choosing ports in the range claims nothing. A hash of the connection, not of the
/// clock: the same connection made again (after its entries expired) gets the same port, and
/// runs are reproducible.
#[inline(always)]
fn masq_port(first: u16, count: u16, f: &ipv4::Flow, i: u32) -> u16 {
    let (count, blocks) = (u32::from(count), MASQ_BLOCKS);
    let mix = |x: u32| (x ^ (x >> 15)).wrapping_mul(2_654_435_761);
    let flow = mix(f.saddr ^ f.daddr.rotate_left(16) ^ (u32::from(f.sport) << 16 | u32::from(f.dport)));
    let h = mix(flow.wrapping_add(i.wrapping_mul(7919)));
    let pick = (h >> 8) % MASQ_SHARE_BLOCKS;
    let block = (mix(mix(f.saddr).wrapping_add(pick.wrapping_mul(0x9e37_79b9))) >> 16) % blocks;
    let size = count.div_ceil(blocks);
    let index = (block * size + (h >> 16) % size) % count;
    first.wrapping_add(index as u16)
}
