//! IPv4 + TCP/UDP (and ICMP echo) header access for the NAT programs.
use aya_ebpf::programs::TcContext;
use switch_common::{
    ETH_HLEN,
    nat::{PROTO_ICMP, PROTO_TCP, PROTO_UDP},
};

/// ICMP echo request and reply types.
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_ECHO_REPLY: u8 = 0;

/// The fields NAT reads, and where they are. Addresses as on the wire (network order, read
/// raw), ports in host order. An ICMP echo's identifier stands for a port, on the side a
/// reply swaps it to: a request is `sport = id, dport = 0`, a reply `sport = 0, dport = id`,
/// so the reply's key is the request's with the ends swapped, as for TCP and UDP.
#[derive(Clone, Copy)]
pub struct Flow {
    pub l4_off: usize,
    pub proto: u8,
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// Offset of the IPv4 header: right after an untagged Ethernet header.
pub const IP_OFF: usize = ETH_HLEN;
/// Longest IPv4 header plus a TCP header: what must be linear for `parse`.
const HEADERS_MAX: u32 = (ETH_HLEN + 60 + 20) as u32;

/// Source and destination of an untagged IPv4 packet of any kind (as on the wire), for the
/// packets `parse` does not take (fragments, other protocols, ICMP errors).
#[inline(always)]
pub fn addrs(ctx: &TcContext) -> Option<(u32, u32)> {
    let ethertype: u16 = ctx.load(12).ok()?;
    if u16::from_be(ethertype) != 0x0800 {
        return None;
    }
    Some((ctx.load(IP_OFF + 12).ok()?, ctx.load(IP_OFF + 16).ok()?))
}

/// Parses an untagged IPv4 TCP or UDP packet, or an ICMP echo request or reply. `None` for
/// anything else, including fragments (only the first carries the ports, so NAT leaves all of
/// them alone).
#[inline(always)]
pub fn parse(ctx: &TcContext) -> Option<Flow> {
    if let Some(f) = parse_linear(ctx) {
        return Some(f);
    }
    // Headers not in the linear part (rare at TC): pull them in once and try again.
    let want = if ctx.len() < HEADERS_MAX { ctx.len() } else { HEADERS_MAX };
    if ctx.data_end() - ctx.data() >= want as usize || ctx.pull_data(want).is_err() {
        return None;
    }
    parse_linear(ctx)
}

#[inline(always)]
fn parse_linear(ctx: &TcContext) -> Option<Flow> {
    parse_bounds(ctx.data(), ctx.data_end(), ctx.len() as usize)
}

/// `parse` of the packet at `[data, end)` whose whole length is `len` (XDP: `end - data`;
/// TC: the skb's, of which `[data, end)` is the linear part).
#[inline(always)]
pub fn parse_bounds(data: usize, end: usize, len: usize) -> Option<Flow> {
    // Every read below comes after a comparison of its end against data_end: the verifier
    // rejects the program otherwise.
    if data + IP_OFF + 20 > end {
        return None;
    }
    // SAFETY: bounds checked just above for the 14 + 20 bytes read here.
    let (ethertype, ver_ihl, tot_len, frag, proto, saddr, daddr) = unsafe {
        (
            u16::from_be(*((data + 12) as *const u16)),
            *((data + IP_OFF) as *const u8),
            u16::from_be(*((data + IP_OFF + 2) as *const u16)) as usize,
            u16::from_be(*((data + IP_OFF + 6) as *const u16)),
            *((data + IP_OFF + 9) as *const u8),
            *((data + IP_OFF + 12) as *const u32),
            *((data + IP_OFF + 16) as *const u32),
        )
    };
    if ethertype != 0x0800 || ver_ihl >> 4 != 4 || frag & 0x3fff != 0 {
        return None;
    }
    let ihl = ((ver_ihl & 0x0f) as usize) * 4;
    if ihl < 20 || (proto != PROTO_TCP && proto != PROTO_UDP && proto != PROTO_ICMP) {
        return None;
    }
    let l4_off = IP_OFF + ihl;
    // 20 bytes cover the TCP header's flags; a UDP or ICMP echo header only needs 8.
    let need = if proto == PROTO_TCP { 20 } else { 8 };
    if data + l4_off + need > end {
        return None;
    }
    // A total length that lies (shorter than the headers, longer than the packet) marks a
    // packet the stack will drop: not worth a connection-table entry. Zero is BIG TCP's
    // "see the packet's length" for super-packets over 64 KiB.
    if tot_len != 0 && (tot_len < ihl + need || IP_OFF + tot_len > len) {
        return None;
    }
    let l4 = data + l4_off;
    if proto == PROTO_ICMP {
        // SAFETY: bounds checked just above (8 bytes: type, code, checksum, id, sequence).
        let (kind, code, id) =
            unsafe { (*(l4 as *const u8), *((l4 + 1) as *const u8), u16::from_be(*((l4 + 4) as *const u16))) };
        return match (kind, code) {
            (ICMP_ECHO_REQUEST, 0) => Some(Flow { l4_off, proto, saddr, daddr, sport: id, dport: 0, tcp_flags: 0 }),
            (ICMP_ECHO_REPLY, 0) => Some(Flow { l4_off, proto, saddr, daddr, sport: 0, dport: id, tcp_flags: 0 }),
            // Errors and everything else: not translated (yet).
            _ => None,
        };
    }
    // With three protocols the verifier no longer ties `need` to `proto` (it cannot hold
    // "proto is not 6" on the path where need became 8), so TCP's 20 bytes are proven again
    // right where the flags byte is read.
    let tcp_flags = if proto == PROTO_TCP {
        if l4 + 20 > end {
            return None;
        }
        // SAFETY: bounds checked just above.
        unsafe { *((l4 + 13) as *const u8) }
    } else {
        0
    };
    // SAFETY: bounds checked above (8 bytes at least).
    let (sport, dport) = unsafe { (u16::from_be(*(l4 as *const u16)), u16::from_be(*((l4 + 2) as *const u16))) };
    Some(Flow { l4_off, proto, saddr, daddr, sport, dport, tcp_flags })
}
