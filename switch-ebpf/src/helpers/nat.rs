//! Address and port rewriting with incremental checksum updates, and the connection table.
//!
//! The connection table is two LRU maps with the same entries: `CT_UNREPLIED` for connections
//! not answered yet (a TCP handshake under way, a first datagram) and CONNTRACK for the rest.
//! A flood of new connections (spoofed SYNs) fills and evicts only the first; an answered
//! connection, idle or not, is evicted only by other answered ones. A TCP connection counts
//! as answered only once its opener acknowledges the answer (the handshake's third step): a
//! SYN-ACK alone proves nothing, since a spoofed SYN's SYN-ACK is routed to whoever owns the
//! forged address, who never acknowledges it. Unanswered entries live
//! `CT_TIMEOUT_UNREPLIED_NS` past their last packet. Each direction of a
//! connection is an entry of its own (a packet of either direction finds its entry by its own
//! addresses); the two are written together and made again from each other, so one never
//! outlives the other for long.
use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, BPF_NOEXIST, TC_ACT_SHOT},
    maps::LruHashMap,
    programs::TcContext,
};
pub use switch_common::nat::{CT_DNAT, CT_SNAT};
use switch_common::{
    CtEntry, CtKey, FwdStats,
    events::{DROP_ICMP_FOREIGN, DROP_MASQ_SHARE, DROP_UNSOLICITED},
    nat::{
        CT_ACK_WINDOW, CT_CLOSING, CT_ESTABLISHED, CT_F_ANSWER, CT_F_UNREPLIED, CT_HALF_OPEN, PROTO_ICMP, PROTO_TCP,
        PROTO_UDP,
    },
};

use super::{
    events,
    ipv4::{Flow, IP_OFF, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    maps::{CONNTRACK, CT_UNREPLIED, FWD_STATS},
    stats,
};

/// Drops a packet NAT refuses (`reason`: `DROP_NAT_REFUSED`, `DROP_UNSOLICITED`,
/// `DROP_ICMP_FOREIGN`, `DROP_MASQ_SHARE`): counted with the switch's drops (`switch
/// stats`) and, while a monitor runs, reported with its reason.
#[inline(always)]
pub fn refuse(ctx: &TcContext, reason: u16) -> i32 {
    stats::table(|t| match reason {
        DROP_UNSOLICITED => t.routed_refused += 1,
        DROP_ICMP_FOREIGN => t.icmp_refused += 1,
        DROP_MASQ_SHARE => t.masq_share_refused += 1,
        _ => t.ct_refused += 1,
    });
    events::nat_drop(ctx, reason);
    TC_ACT_SHOT
}

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
pub fn ct_reverse_key(f: &Flow, nat: u16, addr: u32, port: u16) -> CtKey {
    let (src, sport, dst, dport) =
        if nat == CT_DNAT { (f.saddr, f.sport, addr, port) } else { (addr, port, f.daddr, f.dport) };
    CtKey { src: dst, dst: src, sport: dport, dport: sport, proto: f.proto, pad: [0; 3] }
}

/// The entry of the other direction of `f`'s connection, made from `e` (the entry `f`
/// matched, `f` not rewritten yet): it restores what `e` changes, so its address and port are
/// `f`'s own on the side `e` rewrites, it answers if `e` does not, and it shares `e`'s rule
/// and state.
#[inline(always)]
fn other_half(e: &CtEntry, f: &Flow, now: u64) -> CtEntry {
    let (nat, addr, port) = if e.nat == CT_DNAT { (CT_SNAT, f.daddr, f.dport) } else { (CT_DNAT, f.saddr, f.sport) };
    CtEntry { addr, port, nat, flags: e.flags ^ CT_F_ANSWER, last_seen_ns: now, ..*e }
}

/// A connection-table entry found for a packet, and which table holds it.
pub struct Found {
    pub e: &'static mut CtEntry,
    /// In `CT_UNREPLIED`: the connection has not been answered yet.
    pub unreplied: bool,
}

/// The connection-table entry of the direction `f` travels in: a live answered one first
/// (nearly every packet is one of theirs), then one waiting for an answer, then an expired
/// answered one (the caller may make the connection anew). An expired answered entry stays
/// until the LRU needs its room or the connection is answered again and overwrites it, so a
/// new connection on the same addresses must be found before it.
#[inline(always)]
pub fn ct_lookup(f: &Flow, now: u64) -> Option<Found> {
    let key = ct_key(f);
    // SAFETY (all three): a map value stays valid for the whole program run (RCU), and
    // nothing else in this run holds a reference to it.
    let answered = CONNTRACK.get_ptr_mut(&key);
    if let Some(e) = answered
        && !unsafe { &*e }.is_expired(now)
    {
        return Some(Found { e: unsafe { &mut *e }, unreplied: false });
    }
    if let Some(e) = CT_UNREPLIED.get_ptr_mut(&key) {
        return Some(Found { e: unsafe { &mut *e }, unreplied: true });
    }
    answered.map(|e| Found { e: unsafe { &mut *e }, unreplied: false })
}

/// A copy of the live entry under `key` in either table.
#[inline(always)]
pub fn ct_get(key: &CtKey, now: u64) -> Option<CtEntry> {
    // SAFETY: values copied out at once.
    let live = |e: Option<&CtEntry>| e.copied().filter(|e| !e.is_expired(now));
    live(unsafe { CONNTRACK.get(key) }).or_else(|| live(unsafe { CT_UNREPLIED.get(key) }))
}

/// The translation step of a packet of a known connection, shared by both directions and by
/// every program that translates: if the packet's entry (from `ct_lookup`) is of kind `nat`
/// and not expired, `ready` decides whether the packet goes on and returns what the caller
/// needs next (a route, say); only then is the packet recorded (state and last-seen time on
/// both entries, the connection answered if this is its first answer, the rule's counters)
/// and rewritten to the entry's address and port.
///
/// `Ok(None)`: the entry does not apply or `ready` said no, and the packet is untouched (a
/// `ready` that says no must not have changed it either), so the caller can hand it on as it
/// came. `Err`: a helper failed during the rewrite.
#[inline(always)]
pub fn ct_translate<T>(
    ctx: &TcContext,
    f: &Flow,
    found: Found,
    nat: u16,
    now: u64,
    ready: impl FnOnce(&CtEntry) -> Option<T>,
) -> Result<Option<T>, i64> {
    let e = found.e;
    if e.nat != nat || e.is_expired(now) {
        return Ok(None);
    }
    let Some(next) = ready(e) else { return Ok(None) };
    let (addr, port, rule) = (e.addr, e.port, e.rule);
    let other = ct_reverse_key(f, nat, addr, port);
    if found.unreplied && answers(ctx, e, f) {
        ct_answered(e, &other, f, now);
    } else {
        if found.unreplied
            && let Some(ack) = expected_ack(ctx, e, f)
        {
            e.ack = ack;
        }
        ct_touch(e, &other, found.unreplied, f, now);
    }
    count(rule, ctx.len() as u64, false);
    if nat == CT_DNAT {
        rewrite_dst(ctx, f, addr, port)?;
    } else {
        rewrite_src(ctx, f, addr, port)?;
    }
    Ok(Some(next))
}

/// Whether `f`, a packet on entry `e` of a connection not answered yet, makes it answered.
/// UDP and ICMP: the first packet of the answering direction. TCP: the opener's
/// acknowledgement of the answer (a bare ACK, or one with data, after the answer was seen),
/// whose number must fall in `CT_ACK_WINDOW` past the answer's sequence number: proof that
/// the opener saw the answer, which a spoofer whose answers are routed elsewhere never does.
/// Read only here, on the rare packets of unanswered connections: the established path reads
/// no sequence number.
#[inline(always)]
fn answers(ctx: &TcContext, e: &CtEntry, f: &Flow) -> bool {
    if f.proto != PROTO_TCP {
        return e.flags & CT_F_ANSWER != 0;
    }
    if e.flags & CT_F_ANSWER != 0 || e.state != CT_ESTABLISHED || f.tcp_flags & (TCP_SYN | TCP_RST | TCP_ACK) != TCP_ACK
    {
        return false;
    }
    // bpf_skb_load_bytes: bounds-checked by the helper, so no proof for the verifier needed.
    let Ok(ack) = ctx.load::<u32>(f.l4_off + 8) else { return false };
    u32::from_be(ack).wrapping_sub(e.ack) < CT_ACK_WINDOW
}

/// The acknowledgement number that will complete `f`'s connection, when `f` is the first
/// answer of an unanswered TCP connection (on entry `e`, still half-open): the answer's
/// sequence number, plus one for its SYN. A connection picked up mid-stream (no SYN seen)
/// completes when the opener acknowledges what the answer carried.
#[inline(always)]
fn expected_ack(ctx: &TcContext, e: &CtEntry, f: &Flow) -> Option<u32> {
    if f.proto != PROTO_TCP || e.flags & CT_F_ANSWER == 0 || e.state != CT_HALF_OPEN {
        return None;
    }
    let seq = u32::from_be(ctx.load::<u32>(f.l4_off + 4).ok()?);
    Some(seq.wrapping_add(u32::from(f.tcp_flags & TCP_SYN != 0)))
}

/// The state a TCP packet with `flags` moves a connection in `state` to. `answer` is true for
/// the server-to-client direction.
#[inline(always)]
pub fn next_state(state: u32, proto: u8, flags: u8, answer: bool) -> u32 {
    if proto != PROTO_TCP {
        return state;
    }
    if flags & (TCP_FIN | TCP_RST) != 0 {
        CT_CLOSING
    } else if state == CT_HALF_OPEN && answer {
        CT_ESTABLISHED
    } else {
        state
    }
}

/// How often a packet refreshes its entry's last-seen time.
const CT_REFRESH_NS: u64 = 1_000_000_000;

/// Records a packet of `f` on its entry `e` (in `CT_UNREPLIED` if `unreplied`): the last-seen
/// time, and the state when it changes. The two directions of a connection live and die
/// together: whenever `e` is written, so is the other direction's entry at `other` (same time,
/// same state), and if the LRU took it, it is made again from `e`.
#[inline(always)]
fn ct_touch(e: &mut CtEntry, other: &CtKey, unreplied: bool, f: &Flow, now: u64) {
    let state = next_state(e.state, f.proto, f.tcp_flags, e.flags & CT_F_ANSWER != 0);
    // At most one write a second while the state holds: timeouts are 10 s and more, and a
    // store per packet would keep the entry's cache line bouncing between CPUs.
    if state == e.state && now <= e.last_seen_ns + CT_REFRESH_NS {
        return;
    }
    e.state = state;
    e.last_seen_ns = now;
    let table = if unreplied { &CT_UNREPLIED } else { &CONNTRACK };
    match table.get_ptr_mut(other) {
        Some(o) => {
            // SAFETY: map value, valid for the program run.
            let o = unsafe { &mut *o };
            o.state = state;
            o.last_seen_ns = now;
            o.ack = e.ack;
        }
        None => {
            let _ = ct_put(table, other, &other_half(e, f, now), !unreplied);
        }
    }
}

/// The packet that answers a connection (`answers`): both its entries move from
/// `CT_UNREPLIED` to CONNTRACK (the other direction's made again if the unreplied budget
/// evicted it meanwhile). If CONNTRACK refuses, they stay where they are and the next packet
/// tries again.
#[inline(always)]
fn ct_answered(e: &mut CtEntry, other: &CtKey, f: &Flow, now: u64) {
    let state = next_state(e.state, f.proto, f.tcp_flags, e.flags & CT_F_ANSWER != 0);
    let answered = |c: &CtEntry| CtEntry { state, last_seen_ns: now, flags: c.flags & !CT_F_UNREPLIED, ..*c };
    let mine = answered(e);
    // SAFETY: value copied out at once.
    let theirs = match unsafe { CT_UNREPLIED.get(other) } {
        Some(o) => answered(o),
        None => other_half(&mine, f, now),
    };
    let key = ct_key(f);
    if ct_put(&CONNTRACK, other, &theirs, true).is_ok() && ct_put(&CONNTRACK, &key, &mine, true).is_ok() {
        let moved = u64::from(CT_UNREPLIED.remove(&key).is_ok()) + u64::from(CT_UNREPLIED.remove(other).is_ok());
        stats::table(|t| t.unreplied_removed += moved);
    } else {
        e.state = state;
        e.last_seen_ns = now;
    }
}

/// Records a new connection: both directions, into `CT_UNREPLIED` until it is answered. The
/// answering direction's entry goes first: once the other exists, a retransmitted first
/// packet takes the fast path and its answer must already find its way back.
#[inline(always)]
pub fn ct_new(answer_key: &CtKey, answer: &CtEntry, first_key: &CtKey, first: &CtEntry) -> Result<(), i64> {
    let answer = CtEntry { flags: CT_F_ANSWER | CT_F_UNREPLIED, ack: 0, ..*answer };
    ct_put(&CT_UNREPLIED, answer_key, &answer, false)?;
    ct_put(&CT_UNREPLIED, first_key, &CtEntry { flags: CT_F_UNREPLIED, ack: 0, ..*first }, false)
}

/// Records one direction of a connection in `table` (`answered`: CONNTRACK). A new key is
/// counted in `TABLE_STATS`; a key that is still there (an expired connection with the same
/// addresses and ports) is overwritten and not counted again, so added - present stays the
/// number of entries the LRU evicted.
#[inline(always)]
fn ct_put(table: &LruHashMap<CtKey, CtEntry>, key: &CtKey, entry: &CtEntry, answered: bool) -> Result<(), i64> {
    if table.insert(key, entry, BPF_NOEXIST as u64).is_ok() {
        if answered {
            stats::table(|t| t.ct_added += 1);
        } else {
            stats::table(|t| t.unreplied_added += 1);
        }
        return Ok(());
    }
    table.insert(key, entry, 0).map_err(|e| e as i64)
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
