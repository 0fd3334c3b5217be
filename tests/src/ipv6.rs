//! IPv6 frames as a namespace could send them, built byte by byte for the port-security tests:
//! plain packets, neighbour discovery with its options, router advertisements, extension
//! header chains and fragments. ICMPv6 checksums are computed here (RFC 4443 pseudo-header),
//! so a frame the switch lets through is one its receiver would take.
use std::net::Ipv6Addr;

/// Next header values used here.
pub const HOP: u8 = 0;
pub const UDP: u8 = 17;
pub const FRAGMENT: u8 = 44;
pub const ICMPV6: u8 = 58;
pub const DSTOPTS: u8 = 60;

/// `aa:bb:cc:dd:ee:ff` as bytes.
pub fn mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s.split(':').map(|b| u8::from_str_radix(b, 16).unwrap()).collect();
    v.try_into().unwrap()
}

/// The kernel's link-local address of an interface with MAC `m` (modified EUI-64).
pub fn link_local(m: &str) -> Ipv6Addr {
    let m = mac(m);
    Ipv6Addr::from([0xfe, 0x80, 0, 0, 0, 0, 0, 0, m[0] ^ 2, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]])
}

/// The solicited-node multicast address of `a`, and its MAC.
pub fn solicited_node(a: Ipv6Addr) -> (Ipv6Addr, String) {
    let o = a.octets();
    let group = Ipv6Addr::from([0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15]]);
    (group, format!("33:33:ff:{:02x}:{:02x}:{:02x}", o[13], o[14], o[15]))
}

/// The all-nodes group's MAC (ff02::1).
pub const ALL_NODES_MAC: &str = "33:33:00:00:00:01";

/// A link-layer address option (`kind` 1: source, 2: target).
pub fn ll_option(kind: u8, m: &str) -> Vec<u8> {
    let mut o = vec![kind, 1];
    o.extend_from_slice(&mac(m));
    o
}

/// An ICMPv6 message of `kind` with `body` (after type, code, checksum), its checksum over
/// the pseudo-header of `src` -> `dst`.
pub fn icmp6(src: Ipv6Addr, dst: Ipv6Addr, kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![kind, 0, 0, 0];
    m.extend_from_slice(body);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&(m.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, ICMPV6]);
    pseudo.extend_from_slice(&m);
    let sum = checksum(&pseudo);
    m[2..4].copy_from_slice(&sum.to_be_bytes());
    m
}

/// The Internet checksum of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A neighbour solicitation for `target` with `options`.
pub fn ns(src: Ipv6Addr, dst: Ipv6Addr, target: Ipv6Addr, options: &[Vec<u8>]) -> Vec<u8> {
    let mut body = vec![0; 4];
    body.extend_from_slice(&target.octets());
    options.iter().for_each(|o| body.extend_from_slice(o));
    icmp6(src, dst, 135, &body)
}

/// A neighbour advertisement (solicited and override flags) for `target` with `options`.
pub fn na(src: Ipv6Addr, dst: Ipv6Addr, target: Ipv6Addr, options: &[Vec<u8>]) -> Vec<u8> {
    let mut body = vec![0x60, 0, 0, 0];
    body.extend_from_slice(&target.octets());
    options.iter().for_each(|o| body.extend_from_slice(o));
    icmp6(src, dst, 136, &body)
}

/// A router advertisement (lifetime 1800 s) with a source link-layer option of `m`.
pub fn ra(src: Ipv6Addr, dst: Ipv6Addr, m: &str) -> Vec<u8> {
    let mut body = vec![64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0];
    body.extend_from_slice(&ll_option(1, m));
    icmp6(src, dst, 134, &body)
}

/// An extension header (hop-by-hop or destination options) of 8 bytes, padded with PadN,
/// followed by `next`.
pub fn options_header(next: u8) -> Vec<u8> {
    vec![next, 0, 1, 4, 0, 0, 0, 0]
}

/// A fragment header: offset `offset` (in 8-byte units), more fragments `more`.
pub fn fragment_header(next: u8, offset: u16, more: bool) -> Vec<u8> {
    let off = (offset << 3) | u16::from(more);
    let mut h = vec![next, 0];
    h.extend_from_slice(&off.to_be_bytes());
    h.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    h
}

/// An IPv6 frame (hex) from `src_mac` to `dst_mac`: `headers` (extension headers, each
/// starting with its next-header byte) then `payload`; `first` is the fixed header's next
/// header. Hop limit 255, as neighbour discovery requires.
pub fn frame(
    dst_mac: &str,
    src_mac: &str,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    first: u8,
    headers: &[Vec<u8>],
    payload: &[u8],
) -> String {
    let rest: Vec<u8> = headers.iter().flatten().chain(payload).copied().collect();
    let mut f = Vec::new();
    f.extend_from_slice(&mac(dst_mac));
    f.extend_from_slice(&mac(src_mac));
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&(rest.len() as u16).to_be_bytes());
    f.extend_from_slice(&[first, 255]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&rest);
    f.iter().map(|b| format!("{b:02x}")).collect()
}

/// A UDP datagram (8-byte header, checksum zero: only the switch looks at it) with `len`
/// bytes of payload.
pub fn udp(len: usize) -> Vec<u8> {
    let mut u = vec![0xd4, 0x31, 0xd4, 0x31];
    u.extend_from_slice(&((8 + len) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend(std::iter::repeat_n(0u8, len));
    u
}
