//! ICMP errors (destination unreachable, including "fragmentation needed", and time
//! exceeded) that quote a packet of a translated connection. The error must be translated
//! back like the connection itself, or it reaches nobody: the client of a forward would get
//! "port unreachable" about a private address it never talked to, a namespace behind
//! masquerade would never learn the path MTU.
//!
//! ```text
//!  outer IPv4 │ ICMP type code csum (mtu) │ quoted IPv4 header │ 8 bytes of its TCP/UDP/echo
//!  (to the    │ checksum covers all that   │ (its own checksum) │ (ports, or the echo id)
//!   quoted source, from a router or the quoted destination)
//! ```
//! The quoted packet travelled the connection the other way round: its reverse is a packet
//! of the direction whose entry the error needs. Only fields change whose checksums are
//! kept right incrementally: the quoted address with the quoted header's checksum (the two
//! changes cancel in the ICMP checksum), the quoted port with the ICMP checksum, the outer
//! address with the outer header's checksum. The quoted TCP/UDP checksum is left as it was:
//! it covers a whole segment the error does not carry, and no receiver checks it.
//!
//! Everything is read with `bpf_skb_load_bytes`: two variable header lengths would make
//! direct packet access a verifier puzzle, and errors are rare.
use aya_ebpf::programs::TcContext;
use switch_common::{
    CtKey,
    nat::{PROTO_ICMP, PROTO_TCP, PROTO_UDP},
};

use super::{
    ipv4::IP_OFF,
    nat::{CT_DNAT, ct_get},
};

const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_ECHO_REPLY: u8 = 0;

/// An ICMP error and the packet it quotes. Addresses as on the wire, ports in host order; an
/// echo's identifier stands for a port as in `ipv4::Flow`.
pub struct Quoted {
    pub icmp_off: usize,
    pub inner_off: usize,
    pub inner_l4: usize,
    pub proto: u8,
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    /// The error's own source and destination.
    pub outer_saddr: u32,
    pub outer_daddr: u32,
}

/// Parses an untagged, unfragmented IPv4 ICMP error quoting a TCP, UDP or ICMP echo packet
/// (not a later fragment: it has no ports). `None` for anything else.
#[inline(always)]
pub fn parse_error(ctx: &TcContext) -> Option<Quoted> {
    let ethertype: u16 = ctx.load(12).ok()?;
    let ver_ihl: u8 = ctx.load(IP_OFF).ok()?;
    let frag: u16 = ctx.load(IP_OFF + 6).ok()?;
    let proto: u8 = ctx.load(IP_OFF + 9).ok()?;
    if u16::from_be(ethertype) != 0x0800 || ver_ihl >> 4 != 4 || u16::from_be(frag) & 0x3fff != 0 || proto != PROTO_ICMP
    {
        return None;
    }
    let icmp_off = IP_OFF + header_len(ver_ihl)?;
    let kind: u8 = ctx.load(icmp_off).ok()?;
    if kind != ICMP_DEST_UNREACH && kind != ICMP_TIME_EXCEEDED {
        return None;
    }
    let inner_off = icmp_off + 8;
    let inner_ver_ihl: u8 = ctx.load(inner_off).ok()?;
    let inner_frag: u16 = ctx.load(inner_off + 6).ok()?;
    let inner_proto: u8 = ctx.load(inner_off + 9).ok()?;
    if inner_ver_ihl >> 4 != 4 || u16::from_be(inner_frag) & 0x1fff != 0 {
        return None;
    }
    let inner_l4 = inner_off + header_len(inner_ver_ihl)?;
    let (sport, dport) = match inner_proto {
        PROTO_TCP | PROTO_UDP => {
            let (s, d): (u16, u16) = (ctx.load(inner_l4).ok()?, ctx.load(inner_l4 + 2).ok()?);
            (u16::from_be(s), u16::from_be(d))
        }
        PROTO_ICMP => {
            let (echo, id): (u8, u16) = (ctx.load(inner_l4).ok()?, ctx.load(inner_l4 + 4).ok()?);
            match echo {
                ICMP_ECHO_REQUEST => (u16::from_be(id), 0),
                ICMP_ECHO_REPLY => (0, u16::from_be(id)),
                _ => return None,
            }
        }
        _ => return None,
    };
    Some(Quoted {
        icmp_off,
        inner_off,
        inner_l4,
        proto: inner_proto,
        saddr: ctx.load(inner_off + 12).ok()?,
        daddr: ctx.load(inner_off + 16).ok()?,
        sport,
        dport,
        outer_saddr: ctx.load(IP_OFF + 12).ok()?,
        outer_daddr: ctx.load(IP_OFF + 16).ok()?,
    })
}

#[inline(always)]
fn header_len(ver_ihl: u8) -> Option<usize> {
    let len = usize::from(ver_ihl & 0x0f) * 4;
    (len >= 20).then_some(len)
}

/// What became of an ICMP error at an uplink.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It quotes no live connection whose entry of that kind applies: nothing changed.
    Unknown,
    /// It quotes a live connection but is not one of that connection's errors (see
    /// `translate_error`): nothing changed, the caller drops it (`DROP_ICMP_FOREIGN`).
    Foreign,
    /// Translated back.
    Translated,
}

/// Whether error `q`, quoting a packet of a live connection, is one of that connection's
/// own errors, as it must be to be translated:
/// - from outside (`CT_DNAT`), it goes to the quoted packet's source, as every real error
///   does (RFC 1122 3.2.2): the address the entry translates back. Aimed elsewhere (another
///   namespace's address routed to the segment, another uplink address), the translation
///   would hand a namespace an error about someone else's connection.
/// - from inside (`CT_SNAT`), it comes from the quoted packet's destination: the namespace
///   that received that packet. The only router between the uplink and a namespace is the
///   host, whose own errors (`host_error`: made by the host, from an address that may leave)
///   may come from anywhere on the path. Anything else is a namespace speaking for another
///   namespace's connection (a "port unreachable" or "fragmentation needed" to its peer).
#[inline(always)]
fn is_its_own(q: &Quoted, nat: u16, host_error: bool) -> bool {
    if nat == CT_DNAT { q.outer_daddr == q.saddr } else { q.outer_saddr == q.daddr || host_error }
}

/// Translates error `q` back if it quotes a packet of a live connection whose entry of kind
/// `nat` applies and is one of that connection's errors (`is_its_own`): at an uplink's
/// ingress (`CT_DNAT`) the error answers a packet that left translated, so the quoted source
/// and the error's destination become the namespace's again; at its egress (`CT_SNAT`) it
/// answers a packet that came in translated, so the quoted destination becomes the uplink's
/// address and port, and so does the error's source if the quoted destination sent it itself
/// (the host's keeps its address). Nothing changes unless it is `Translated`.
#[inline(always)]
pub fn translate_error(ctx: &TcContext, q: &Quoted, nat: u16, now: u64, host_error: bool) -> Result<Outcome, i64> {
    let key = CtKey { src: q.daddr, dst: q.saddr, sport: q.dport, dport: q.sport, proto: q.proto, pad: [0; 3] };
    let Some(e) = ct_get(&key, now) else { return Ok(Outcome::Unknown) };
    if e.nat != nat {
        return Ok(Outcome::Unknown);
    }
    if !is_its_own(q, nat, host_error) {
        return Ok(Outcome::Foreign);
    }
    let (addr_off, port_off, old_addr, old_port, outer_off, outer_old) = if nat == CT_DNAT {
        (12, 0, q.saddr, q.sport, 16, q.outer_daddr)
    } else {
        (16, 2, q.daddr, q.dport, 12, q.outer_saddr)
    };
    if old_addr != e.addr {
        ctx.l3_csum_replace(q.inner_off + 10, old_addr as u64, e.addr as u64, 4)?;
        ctx.store(q.inner_off + addr_off, &e.addr, 0)?;
        if outer_old == old_addr {
            ctx.l3_csum_replace(IP_OFF + 10, outer_old as u64, e.addr as u64, 4)?;
            ctx.store(IP_OFF + outer_off, &e.addr, 0)?;
        }
    }
    if old_port != e.port {
        let (old, new) = (old_port.to_be(), e.port.to_be());
        ctx.l4_csum_replace(q.icmp_off + 2, old as u64, new as u64, 2)?;
        // An echo's identifier, the same field for both ends, sits at offset 4.
        ctx.store(q.inner_l4 + if q.proto == PROTO_ICMP { 4 } else { port_off }, &new, 0)?;
    }
    Ok(Outcome::Translated)
}
