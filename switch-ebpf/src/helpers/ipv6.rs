//! IPv6 as port security reads it: the sender's address, and what neighbour discovery claims.
//!
//! ```text
//!   eth | ipv6 (40) | ext header ... (≤ MAX_EXT_HEADERS) | ICMPv6 type | ND body | options
//!                    ^ walked, each bounds-checked       ^ RA/redirect: router
//!                                                                      NS/NA/RS: target and
//!                                                                      link-layer option
//! ```
//! A secured port's frame is judged on what its receiver would act on, so whatever could hide
//! the upper layer is refused rather than passed: a header chain that does not end within
//! `MAX_EXT_HEADERS` or `WINDOW` bytes, and neighbour discovery in a fragment (RFC 6980:
//! receivers drop those too). A non-first fragment carries no upper-layer header: only its
//! source is checked.
use switch_common::{
    MacKey, Port,
    ipv6::{
        self, HLEN, MAX_ND_OPTIONS, NEIGH_ADVERT, NEIGH_SOLICIT, NH_AUTH, NH_FRAGMENT, NH_ICMPV6, OPT_SOURCE_LL,
        OPT_TARGET_LL, REDIRECT, ROUTER_ADVERT, ROUTER_SOLICIT, WINDOW, is_extension,
    },
};

use super::{
    maps::{BOUND, BOUND_IP6, IPV6_SCRATCH, PORT_ADDRS6},
    stats::{SPOOFED_IP, SPOOFED_ND, SPOOFED_ROUTER, SPOOFED_UNPARSED},
};

/// What the packet is, as far as port security is concerned.
const PLAIN: u32 = 0;
/// Neighbour discovery: RS, NS or NA.
const ND: u32 = 1;
/// A router advertisement or redirect.
const ROUTER: u32 = 2;
/// The upper layer could not be found within the bounds.
const UNPARSED: u32 = 3;
/// Shorter than the fixed header: its receiver drops it, it claims nothing.
const RUNT: u32 = 4;

/// What an IPv6 packet says about its sender (filled in place by `sender`, in `IPV6_SCRATCH`).
#[repr(C)]
pub struct Sender {
    /// `PLAIN`, `ND`, `ROUTER`, `UNPARSED` or `RUNT`.
    kind: u32,
    /// The ICMPv6 type (0 for other upper layers).
    icmp: u8,
    /// Neighbour discovery: the message carries the link-layer address option it is judged by.
    has_ll: bool,
    /// That option's address.
    ll: [u8; 6],
    /// The source address.
    src: [u32; 4],
    /// Neighbour discovery: the target address (solicitations and advertisements).
    target: [u32; 4],
}

/// Port security of the IPv6 packet at `[l3, end)` from bound `port`: 0 if it may pass, else
/// the `stats::SPOOFED_*` reason. Sent from one of the port's addresses (or from `::`, as
/// duplicate address detection and early multicast listener reports are), neighbour
/// discovery claiming only its own addresses with its own MAC, no router advertisement or
/// redirect (RA guard), nothing the parser could not see through.
///
/// A subprogram of its own (`inline(never)`): its locals (two addresses, the option) get their
/// own stack frame instead of adding to the entry program's, which the 512-byte limit on the
/// whole call chain would not allow. Static, so the verifier checks it with the caller's
/// packet pointers.
#[inline(never)]
pub fn check(l3: usize, end: usize, port: &Port) -> u32 {
    // The parse's state lives in a per-CPU map value, not on the stack: the entry program's
    // frame leaves about 140 bytes for a subprogram's.
    let Some(s) = IPV6_SCRATCH.get_ptr_mut(0) else { return SPOOFED_UNPARSED };
    // SAFETY: this CPU's own entry, used by nothing else while the program runs (programs do
    // not preempt each other on one CPU).
    let s = unsafe { &mut *s };
    *s = Sender { kind: RUNT, icmp: 0, has_ll: false, ll: [0; 6], src: [0; 4], target: [0; 4] };
    sender(l3, end, s);
    match s.kind {
        RUNT => return 0,
        UNPARSED => return SPOOFED_UNPARSED,
        ROUTER => return SPOOFED_ROUTER,
        _ => {}
    }
    // A bound port always has an entry (all zero without IPv6 addresses: nothing is its own).
    let Some(own) = PORT_ADDRS6.get(port.slot) else { return SPOOFED_IP };
    let unspecified = ipv6::is_unspecified(&s.src);
    if unspecified {
        let early = match s.kind {
            ND => s.icmp == NEIGH_SOLICIT,
            _ => s.icmp == ipv6::MLD_REPORT || s.icmp == ipv6::MLD2_REPORT,
        };
        if !early {
            return SPOOFED_IP;
        }
    } else if !own.owns(&s.src) {
        return SPOOFED_IP;
    }
    if s.kind != ND {
        return 0;
    }
    // An advertisement speaks for its target; so does a solicitation from `::` (duplicate
    // address detection: another station's probe would make it give up its address). An
    // ordinary solicitation's target is the station asked about.
    let target_claimed = s.icmp == NEIGH_ADVERT || unspecified;
    if (target_claimed && !own.owns(&s.target)) || (s.has_ll && s.ll != port.mac) {
        return SPOOFED_ND;
    }
    0
}

/// The byte at `at`, if inside the packet. The verifier accepts the read only after this
/// exact comparison against `end` (data_end).
#[inline(always)]
fn byte(at: usize, end: usize) -> Option<u8> {
    if at + 1 > end {
        return None;
    }
    // SAFETY: `at` is inside [data, data_end), checked just above.
    Some(unsafe { *(at as *const u8) })
}

/// The 16-byte address at `at` as four words, if inside the packet.
#[inline(always)]
fn addr(at: usize, end: usize) -> Option<[u32; 4]> {
    if at + 16 > end {
        return None;
    }
    // SAFETY: the 16 bytes are inside [data, data_end), checked just above; unaligned reads
    // of packet data are fine for the verifier and the JIT.
    Some(unsafe { core::ptr::read_unaligned(at as *const [u32; 4]) })
}

/// The six bytes at `at`, if inside the packet.
#[inline(always)]
fn mac(at: usize, end: usize) -> Option<[u8; 6]> {
    if at + 6 > end {
        return None;
    }
    // SAFETY: as in `addr`.
    Some(unsafe { core::ptr::read_unaligned(at as *const [u8; 6]) })
}

/// Port security towards the tunnel for the IPv6 packet at `[l3, end)` from a peer: 0 if it
/// may pass, else the `stats::SPOOFED_*` reason. A peer may not speak for this host's bound
/// ports (`BOUND_IP6`, `BOUND`): no IPv6 from their addresses, no advertisement (or duplicate
/// address detection) for them, no link-layer option with their MACs. What it cannot parse is
/// dropped as from a secured port; router advertisements pass (another host's gateway may
/// send them). A subprogram of its own for the same reason as `check`.
#[inline(never)]
pub fn check_peer(l3: usize, end: usize) -> u32 {
    let Some(s) = IPV6_SCRATCH.get_ptr_mut(0) else { return SPOOFED_UNPARSED };
    // SAFETY: as in `check`.
    let s = unsafe { &mut *s };
    *s = Sender { kind: RUNT, icmp: 0, has_ll: false, ll: [0; 6], src: [0; 4], target: [0; 4] };
    sender(l3, end, s);
    // SAFETY (the lookups below): presence checks of hash maps, values not read.
    let bound = |a: &[u32; 4]| unsafe { BOUND_IP6.get(a) }.is_some();
    match s.kind {
        RUNT | ROUTER => 0,
        UNPARSED => SPOOFED_UNPARSED,
        _ if bound(&s.src) => SPOOFED_IP,
        ND => {
            let target_claimed = s.icmp == NEIGH_ADVERT || ipv6::is_unspecified(&s.src);
            let mac_claimed = s.has_ll && unsafe { BOUND.get(&MacKey::new(s.ll)) }.is_some();
            if (target_claimed && bound(&s.target)) || mac_claimed { SPOOFED_ND } else { 0 }
        }
        _ => 0,
    }
}

/// Fills `out` (`RUNT` on entry) from the IPv6 packet whose header starts at `l3`, the packet
/// ending at `end`. Written in place: copies would not fit the stack.
#[inline(always)]
fn sender(l3: usize, end: usize, out: &mut Sender) {
    let (Some(src), Some(first)) = (addr(l3 + 8, end), byte(l3 + 6, end)) else { return };
    out.src = src;
    out.kind = match upper(l3, end, first) {
        Upper::Icmp(off) => icmp(l3, off, end, false, out),
        Upper::FragmentIcmp(off) => icmp(l3, off, end, true, out),
        Upper::Other => PLAIN,
        Upper::Hidden => UNPARSED,
    };
}

/// Where the header chain of an IPv6 packet ends.
enum Upper {
    /// ICMPv6 at this offset from the IPv6 header.
    Icmp(usize),
    /// ICMPv6 at this offset, in the first fragment of a fragmented packet.
    FragmentIcmp(usize),
    /// Another upper layer, or none here (a later fragment).
    Other,
    /// Not found within `MAX_EXT_HEADERS` or `WINDOW`.
    Hidden,
}

/// Walks the extension headers after the fixed header (next header `first`).
#[inline(always)]
fn upper(l3: usize, end: usize, first: u8) -> Upper {
    let (mut nh, mut off, mut fragmented) = (first, HLEN, false);
    for _ in 0..switch_common::ipv6::MAX_EXT_HEADERS {
        if !is_extension(nh) {
            break;
        }
        // Every extension header is at least 8 bytes; `off` stays below WINDOW, which is
        // what keeps it a bounded scalar for the verifier.
        if off + 8 > WINDOW {
            return Upper::Hidden;
        }
        let (Some(next), Some(len)) = (byte(l3 + off, end), byte(l3 + off + 1, end)) else { return Upper::Hidden };
        match nh {
            NH_FRAGMENT => {
                let (Some(hi), Some(lo)) = (byte(l3 + off + 2, end), byte(l3 + off + 3, end)) else {
                    return Upper::Hidden;
                };
                if u16::from_be_bytes([hi, lo]) & 0xfff8 != 0 {
                    // Not the first fragment: no upper-layer header here.
                    return Upper::Other;
                }
                fragmented = true;
                off += 8;
            }
            NH_AUTH => off += (len as usize + 2) * 4,
            _ => off += (len as usize + 1) * 8,
        }
        nh = next;
    }
    match nh {
        _ if is_extension(nh) => Upper::Hidden,
        NH_ICMPV6 if fragmented => Upper::FragmentIcmp(off),
        NH_ICMPV6 => Upper::Icmp(off),
        _ => Upper::Other,
    }
}

/// The kind of the ICMPv6 message at `l3 + off`, its type and what it claims put in `out`.
#[inline(always)]
fn icmp(l3: usize, off: usize, end: usize, fragmented: bool, out: &mut Sender) -> u32 {
    if off + 4 > WINDOW {
        return UNPARSED;
    }
    // Shorter than an ICMPv6 header: no message its receiver would act on.
    let Some(kind) = byte(l3 + off, end) else { return PLAIN };
    out.icmp = kind;
    match kind {
        ROUTER_ADVERT | REDIRECT => ROUTER,
        ROUTER_SOLICIT | NEIGH_SOLICIT | NEIGH_ADVERT if fragmented => UNPARSED,
        ROUTER_SOLICIT | NEIGH_SOLICIT | NEIGH_ADVERT => nd(l3, off, end, out),
        _ => PLAIN,
    }
}

/// Neighbour discovery (`out.icmp`: RS, NS or NA) at `l3 + off`: the target (NS, NA) and the
/// link-layer address option the receiver uses: the first source option of a solicitation,
/// the first target option of an advertisement (Linux keeps the first of each kind and
/// ignores the other kind, so a decoy of the other kind first must not hide it).
#[inline(always)]
fn nd(l3: usize, off: usize, end: usize, out: &mut Sender) -> u32 {
    // Type, code, checksum, 4 reserved/flag bytes, then the target (not in an RS).
    let body = if out.icmp == ROUTER_SOLICIT { 8 } else { 24 };
    if off + body > WINDOW {
        return UNPARSED;
    }
    if out.icmp != ROUTER_SOLICIT {
        // A truncated message: its receiver drops it, so it claims nothing.
        let Some(target) = addr(l3 + off + 8, end) else { return PLAIN };
        out.target = target;
    }
    let wanted = if out.icmp == NEIGH_ADVERT { OPT_TARGET_LL } else { OPT_SOURCE_LL };
    let mut opt = off + body;
    for _ in 0..MAX_ND_OPTIONS {
        if opt + 8 > WINDOW {
            return UNPARSED;
        }
        let (Some(kind), Some(units)) = (byte(l3 + opt, end), byte(l3 + opt + 1, end)) else {
            // No more options.
            return ND;
        };
        if units == 0 {
            // Receivers discard the message (RFC 4861 4.6); so does port security.
            return UNPARSED;
        }
        if kind == wanted {
            let Some(ll) = mac(l3 + opt + 2, end) else { return UNPARSED };
            out.ll = ll;
            out.has_ll = true;
            return ND;
        }
        opt += units as usize * 8;
    }
    // Options left unread after MAX_ND_OPTIONS: one of them could be the address.
    if byte(l3 + opt, end).is_some() { UNPARSED } else { ND }
}
