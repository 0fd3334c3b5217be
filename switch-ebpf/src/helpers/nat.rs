//! Address and port rewriting with incremental checksum updates, and the connection table.
use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, BPF_NOEXIST},
    programs::TcContext,
};
use switch_common::{
    CtEntry, CtKey, FwdStats,
    nat::{CT_CLOSING, CT_ESTABLISHED, CT_HALF_OPEN, PROTO_ICMP, PROTO_TCP, PROTO_UDP},
};

use super::{
    ipv4::{Flow, IP_OFF, TCP_FIN, TCP_RST},
    maps::{CONNTRACK, FWD_STATS},
    stats,
};

/// Checksum field offset and extra flags for the L4 protocol. UDP's zero checksum means "none"
/// and must stay zero (BPF_F_MARK_MANGLED_0 makes the kernel keep it, and write 0xffff for a
/// computed zero).
#[inline(always)]
fn l4_csum(f: &Flow) -> (usize, u64) {
    match f.proto {
        PROTO_UDP => (f.l4_off + 6, BPF_F_MARK_MANGLED_0 as u64),
        PROTO_ICMP => (f.l4_off + 2, 0),
        _ => (f.l4_off + 16, 0),
    }
}

/// Rewrites one address (offset 12: source, 16: destination) and its port (offset 0/2 in the
/// L4 header), fixing the IPv4 and the TCP/UDP checksums incrementally. Values are on-the-wire
/// (network order) words.
#[inline(always)]
fn rewrite(
    ctx: &TcContext,
    f: &Flow,
    addr_off: usize,
    port_off: usize,
    old: (u32, u16),
    new: (u32, u16),
) -> Result<(), i64> {
    if old == new {
        // An entry that only tracks a connection (no masquerade, a routable segment).
        return Ok(());
    }
    let (csum_off, extra) = l4_csum(f);
    let (old_port, new_port) = (old.1.to_be(), new.1.to_be());
    let icmp = f.proto == PROTO_ICMP;
    // The address is part of TCP/UDP's pseudo header, hence BPF_F_PSEUDO_HDR; the low bits
    // of the flags give the field size. ICMP's checksum covers no pseudo header.
    if !icmp {
        ctx.l4_csum_replace(csum_off, old.0 as u64, new.0 as u64, BPF_F_PSEUDO_HDR as u64 | extra | 4)?;
    }
    ctx.l4_csum_replace(csum_off, old_port as u64, new_port as u64, extra | 2)?;
    ctx.l3_csum_replace(IP_OFF + 10, old.0 as u64, new.0 as u64, 4)?;
    ctx.store(IP_OFF + addr_off, &new.0, 0)?;
    // An ICMP echo's identifier (the "port" of either end) sits at offset 4.
    ctx.store(f.l4_off + if icmp { 4 } else { port_off }, &new_port, 0)?;
    Ok(())
}

/// Destination NAT: the packet now goes to `addr:port`.
#[inline(always)]
pub fn rewrite_dst(ctx: &TcContext, f: &Flow, addr: u32, port: u16) -> Result<(), i64> {
    rewrite(ctx, f, 16, 2, (f.daddr, f.dport), (addr, port))
}

/// Source NAT: the packet now comes from `addr:port`.
#[inline(always)]
pub fn rewrite_src(ctx: &TcContext, f: &Flow, addr: u32, port: u16) -> Result<(), i64> {
    rewrite(ctx, f, 12, 0, (f.saddr, f.sport), (addr, port))
}

/// `CtEntry::original` of an entry whose packets get a new destination: inbound on an uplink
/// (the client's half of a forwarded connection, the answers of a masqueraded one).
pub const CT_DNAT: u32 = 1;
/// `CtEntry::original` of an entry whose packets get a new source: leaving through an uplink
/// (replies of a forwarded connection, a masqueraded connection's own packets).
pub const CT_SNAT: u32 = 0;

/// The key of the direction `f` travels in.
#[inline(always)]
pub fn ct_key(f: &Flow) -> CtKey {
    CtKey { src: f.saddr, dst: f.daddr, sport: f.sport, dport: f.dport, proto: f.proto, pad: [0; 3] }
}

/// The key of the other direction of `f`'s connection once NAT has rewritten `f` to
/// `addr:port`: its destination for `CT_DNAT`, its source for `CT_SNAT`. The answer to the
/// rewritten packet travels from its destination back to its source, so this is the rewritten
/// packet's key, ends swapped. The one place that builds a reverse key.
#[inline(always)]
pub fn ct_reverse_key(f: &Flow, nat: u32, addr: u32, port: u16) -> CtKey {
    let (src, sport, dst, dport) =
        if nat == CT_DNAT { (f.saddr, f.sport, addr, port) } else { (addr, port, f.daddr, f.dport) };
    CtKey { src: dst, dst: src, sport: dport, dport: sport, proto: f.proto, pad: [0; 3] }
}

/// The connection-table entry of the direction `f` travels in, live or not.
#[inline(always)]
pub fn ct_lookup(f: &Flow) -> Option<&'static mut CtEntry> {
    // SAFETY: a map value stays valid for the whole program run (RCU), and nothing else in
    // this run holds a reference to it.
    CONNTRACK.get_ptr_mut(&ct_key(f)).map(|e| unsafe { &mut *e })
}

/// The translation step of a packet of a known connection, shared by both directions and by
/// every program that translates: if `e` (the packet's entry, from `ct_lookup`) is of kind
/// `nat` and not expired, `ready` decides whether the packet goes on and returns what the
/// caller needs next (a route, say); only then is the packet recorded (state and last-seen
/// time on both entries, the rule's counters) and rewritten to the entry's address and port.
///
/// `Ok(None)`: the entry does not apply or `ready` said no, and the packet is untouched (a
/// `ready` that says no must not have changed it either), so the caller can hand it on as it
/// came. `Err`: a helper failed during the rewrite.
#[inline(always)]
pub fn ct_translate<T>(
    ctx: &TcContext,
    f: &Flow,
    e: &mut CtEntry,
    nat: u32,
    now: u64,
    ready: impl FnOnce(&CtEntry) -> Option<T>,
) -> Result<Option<T>, i64> {
    if e.original != nat || e.is_expired(now) {
        return Ok(None);
    }
    let Some(next) = ready(e) else { return Ok(None) };
    let (addr, port) = (e.addr, e.port);
    ct_touch(e, &ct_reverse_key(f, nat, addr, port), f, now);
    count(e.rule, ctx.len() as u64, false);
    if nat == CT_DNAT {
        rewrite_dst(ctx, f, addr, port)?;
    } else {
        rewrite_src(ctx, f, addr, port)?;
    }
    Ok(Some(next))
}

/// The state a TCP packet with `flags` moves a connection in `state` to. `reply` is true for
/// the server-to-client direction.
#[inline(always)]
pub fn next_state(state: u32, proto: u8, flags: u8, reply: bool) -> u32 {
    if proto != PROTO_TCP {
        return state;
    }
    if flags & (TCP_FIN | TCP_RST) != 0 {
        CT_CLOSING
    } else if state == CT_HALF_OPEN && reply {
        CT_ESTABLISHED
    } else {
        state
    }
}

/// How often a packet refreshes its entry's last-seen time.
const CT_REFRESH_NS: u64 = 1_000_000_000;

/// Records a packet of `f` on its entry `e` and on the other direction's entry at `other`: the
/// last-seen time, and the state when it changes.
#[inline(always)]
fn ct_touch(e: &mut CtEntry, other: &CtKey, f: &Flow, now: u64) {
    let state = next_state(e.state, f.proto, f.tcp_flags, e.original == 0);
    // At most one write a second while the state holds: timeouts are 10 s and more, and a
    // store per packet would keep the entry's cache line bouncing between CPUs.
    if now > e.last_seen_ns + CT_REFRESH_NS {
        e.last_seen_ns = now;
    }
    if state != e.state {
        e.state = state;
        e.last_seen_ns = now;
        if let Some(o) = CONNTRACK.get_ptr_mut(other) {
            // SAFETY: map value, valid for the program run.
            unsafe { (*o).state = state };
        }
    }
}

/// Records one direction of a connection. A new key is counted in `TABLE_STATS`; a key that is
/// still there (an expired connection with the same addresses and ports) is overwritten and
/// not counted again, so added - present stays the number of entries the LRU evicted.
#[inline(always)]
pub fn ct_put(key: &CtKey, entry: &CtEntry) -> Result<(), i64> {
    if CONNTRACK.insert(key, entry, BPF_NOEXIST as u64).is_ok() {
        stats::table(|t| t.ct_added += 1);
        return Ok(());
    }
    CONNTRACK.insert(key, entry, 0).map_err(|e| e as i64)
}

/// Counts a translated packet (and a new connection) for `rule`.
#[inline(always)]
pub fn count(rule: u16, len: u64, new_conn: bool) {
    if let Some(s) = FWD_STATS.get_ptr_mut(rule as u32) {
        // SAFETY: per-CPU value of this CPU.
        let s: &mut FwdStats = unsafe { &mut *s };
        s.packets += 1;
        s.bytes += len;
        if new_conn {
            s.connections += 1;
        }
    }
}
