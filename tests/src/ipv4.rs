//! Ethernet + IPv4 + TCP/UDP frames for packet-in/packet-out tests, with checksums computed
//! and verified here, independently of the kernel.

/// TCP flags.
pub const SYN: u8 = 0x02;
/// TCP flags.
pub const ACK: u8 = 0x10;
/// TCP flags.
pub const FIN: u8 = 0x01;
/// TCP flags.
pub const RST: u8 = 0x04;
/// IP protocol numbers.
pub const TCP: u8 = 6;
/// IP protocol numbers.
pub const UDP: u8 = 17;

/// Ones' complement sum of 16-bit words (an odd last byte is padded with zero).
pub fn csum_add(mut sum: u32, data: &[u8]) -> u32 {
    for c in data.chunks(2) {
        let w = if c.len() == 2 { u16::from_be_bytes([c[0], c[1]]) } else { u16::from_be_bytes([c[0], 0]) };
        sum += u32::from(w);
    }
    sum
}

/// Folds a sum to 16 bits and complements it: the checksum of what was summed.
pub fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn l4_csum_offset(proto: u8) -> usize {
    if proto == TCP { 16 } else { 6 }
}

fn pseudo_header(src: &[u8], dst: &[u8], proto: u8, l4_len: usize) -> Vec<u8> {
    let mut pseudo = vec![];
    pseudo.extend_from_slice(src);
    pseudo.extend_from_slice(dst);
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&(l4_len as u16).to_be_bytes());
    pseudo
}

/// The TCP/UDP checksum over the pseudo header, with the checksum field taken as zero (UDP:
/// a computed zero is sent as 0xffff, zero meaning "no checksum").
pub fn l4_checksum(src: &[u8], dst: &[u8], proto: u8, l4: &[u8]) -> u16 {
    let mut l4 = l4.to_vec();
    let off = l4_csum_offset(proto);
    l4[off] = 0;
    l4[off + 1] = 0;
    let c = fold(csum_add(csum_add(0, &pseudo_header(src, dst, proto, l4.len())), &l4));
    if proto == UDP && c == 0 { 0xffff } else { c }
}

/// Whether the TCP/UDP checksum in `l4` is valid: everything, the field included, sums to
/// all ones. (0x0000 and 0xffff are the same number in ones' complement; a receiver accepts
/// either, so an incremental update may legitimately produce either.)
pub fn l4_checksum_valid(src: &[u8], dst: &[u8], proto: u8, l4: &[u8]) -> bool {
    fold(csum_add(csum_add(0, &pseudo_header(src, dst, proto, l4.len())), l4)) == 0
}

/// An Ethernet + IPv4 + TCP/UDP frame carrying `payload`, with correct checksums (UDP:
/// `udp_zero` leaves the checksum 0, "none").
#[allow(clippy::too_many_arguments)]
pub fn packet_with(
    proto: u8,
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    tcp_flags: u8,
    udp_zero: bool,
    payload: &[u8],
) -> Vec<u8> {
    let l4_len = if proto == TCP { 20 } else { 8 } + payload.len();
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    let total = (20 + l4_len) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, proto, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let c = fold(csum_add(0, &ip));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut l4 = vec![];
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    if proto == TCP {
        l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, tcp_flags, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        l4.extend_from_slice(&(l4_len as u16).to_be_bytes());
        l4.extend_from_slice(&[0, 0]);
    }
    l4.extend_from_slice(payload);
    if !(proto == UDP && udp_zero) {
        let off = l4_csum_offset(proto);
        let c = l4_checksum(&src, &dst, proto, &l4);
        l4[off..off + 2].copy_from_slice(&c.to_be_bytes());
    }
    f.extend(ip);
    f.extend(l4);
    f
}

/// ICMP's protocol number.
pub const ICMP: u8 = 1;
/// ICMP echo request and reply types.
pub const ECHO_REQUEST: u8 = 8;
/// ICMP echo reply.
pub const ECHO_REPLY: u8 = 0;

/// An Ethernet + IPv4 + ICMP echo (request or reply, `kind`) frame with correct checksums.
pub fn icmp_echo(kind: u8, src: [u8; 4], dst: [u8; 4], id: u16, seq: u16) -> Vec<u8> {
    let mut msg = vec![kind, 0, 0, 0];
    msg.extend_from_slice(&id.to_be_bytes());
    msg.extend_from_slice(&seq.to_be_bytes());
    msg.extend_from_slice(b"ping, masquerade");
    // An echo as a host sends it: don't-fragment set.
    icmp_frame(msg, [0, 0x12, 0x34, 0x40], src, dst)
}

/// An Ethernet + IPv4 frame carrying ICMP message `msg` (its checksum field zero, filled in
/// here), from `src` to `dst`; `tos_id_flags` are the header's TOS byte, identification and
/// the flags byte.
fn icmp_frame(mut msg: Vec<u8>, tos_id_flags: [u8; 4], src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let c = fold(csum_add(0, &msg));
    msg[2..4].copy_from_slice(&c.to_be_bytes());
    let [tos, id_hi, id_lo, flags] = tos_id_flags;
    let mut ip = vec![0x45, tos, 0, 0, id_hi, id_lo, flags, 0, 64, ICMP, 0, 0];
    ip[2..4].copy_from_slice(&((20 + msg.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let c = fold(csum_add(0, &ip));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    f.extend(ip);
    f.extend(msg);
    f
}

/// Source, destination and identifier of an ICMP echo frame, asserting both checksums.
pub fn inspect_icmp(f: &[u8]) -> ([u8; 4], [u8; 4], u16) {
    let l4 = 14 + usize::from(f[14] & 0x0f) * 4;
    assert_eq!(fold(csum_add(0, &f[14..l4])), 0, "IPv4 header checksum is wrong");
    assert_eq!(fold(csum_add(0, &f[l4..])), 0, "ICMP checksum is wrong");
    (f[26..30].try_into().unwrap(), f[30..34].try_into().unwrap(), u16::from_be_bytes([f[l4 + 4], f[l4 + 5]]))
}

/// A 16-byte payload whose last word makes the TCP/UDP checksum of a packet from `src:sport`
/// to `dst:dport` compute to exactly zero (all the words then sum to 0xffff): the edge a
/// translation must not turn into UDP's "no checksum".
pub fn zeroing_payload(proto: u8, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut payload = b"checksum-edge\0\0\0".to_vec();
    let f = packet_with(proto, src, dst, sport, dport, flags, false, &payload);
    let mut l4 = f[34..].to_vec();
    let off = l4_csum_offset(proto);
    l4[off..off + 2].copy_from_slice(&[0, 0]);
    let word = fold(csum_add(csum_add(0, &pseudo_header(&src, &dst, proto, l4.len())), &l4));
    payload[14..16].copy_from_slice(&word.to_be_bytes());
    payload
}

/// `packet_with` and a fixed 14-byte payload.
pub fn packet(proto: u8, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, tcp_flags: u8, udp_zero: bool) -> Vec<u8> {
    packet_with(proto, src, dst, sport, dport, tcp_flags, udp_zero, b"hello, forward")
}

/// The sequence number of every TCP segment `packet_with` builds.
pub const SEQ: u32 = 1;

/// TCP frame `f` (as `packet` builds it) with acknowledgement number `ack` and its checksum
/// made right again: `acking(f, SEQ + 1)` acknowledges a SYN-ACK of `packet`.
pub fn acking(mut f: Vec<u8>, ack: u32) -> Vec<u8> {
    f[42..46].copy_from_slice(&ack.to_be_bytes());
    let (src, dst): ([u8; 4], [u8; 4]) = (f[26..30].try_into().unwrap(), f[30..34].try_into().unwrap());
    let c = l4_checksum(&src, &dst, TCP, &f[34..]);
    f[50..52].copy_from_slice(&c.to_be_bytes());
    f
}

/// The fields of an output frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// Source address.
    pub src: [u8; 4],
    /// Destination address.
    pub dst: [u8; 4],
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// The TCP/UDP checksum field as it is.
    pub l4_csum: u16,
}

/// `f` with 4 bytes of IPv4 options (NOPs) after the header: IHL 6, lengths and the header
/// checksum fixed (the TCP/UDP checksum does not cover options).
pub fn with_ip_options(f: &[u8]) -> Vec<u8> {
    let mut g = f[..34].to_vec();
    g.extend_from_slice(&[1, 1, 1, 1]);
    g.extend_from_slice(&f[34..]);
    g[14] = 0x46;
    let total = u16::from_be_bytes([g[16], g[17]]) + 4;
    g[16..18].copy_from_slice(&total.to_be_bytes());
    g[24..26].copy_from_slice(&[0, 0]);
    let c = fold(csum_add(0, &g[14..38]));
    g[24..26].copy_from_slice(&c.to_be_bytes());
    g
}

/// Reads an output frame, asserting that its IPv4 header checksum and its TCP/UDP checksum
/// (unless UDP's "none") are valid.
pub fn inspect(f: &[u8]) -> Seen {
    let l4_off = 14 + usize::from(f[14] & 0x0f) * 4;
    let ip = &f[14..l4_off];
    assert_eq!(fold(csum_add(0, ip)), 0, "IPv4 header checksum is wrong: {ip:02x?}");
    let proto = ip[9];
    let l4 = &f[l4_off..];
    let off = l4_csum_offset(proto);
    let l4_csum = u16::from_be_bytes([l4[off], l4[off + 1]]);
    if !(proto == UDP && l4_csum == 0) {
        assert!(l4_checksum_valid(&ip[12..16], &ip[16..20], proto, l4), "L4 checksum {l4_csum:#06x} is wrong");
    }
    Seen {
        src: ip[12..16].try_into().unwrap(),
        dst: ip[16..20].try_into().unwrap(),
        sport: u16::from_be_bytes([l4[0], l4[1]]),
        dport: u16::from_be_bytes([l4[2], l4[3]]),
        l4_csum,
    }
}

/// An Ethernet + IPv4 + ICMP error frame (`kind`, `code`: 3/4 is "fragmentation needed",
/// with `mtu` in its second word) from `src` to `dst`, quoting `quoted` (an IPv4 packet, its
/// header and at least 8 bytes after it), with correct checksums.
pub fn icmp_error(kind: u8, code: u8, mtu: u16, src: [u8; 4], dst: [u8; 4], quoted: &[u8]) -> Vec<u8> {
    let mut msg = vec![kind, code, 0, 0, 0, 0];
    msg.extend_from_slice(&mtu.to_be_bytes());
    msg.extend_from_slice(quoted);
    // As Linux sends its errors: TOS 0xc0 (network control), fragmentable.
    icmp_frame(msg, [0xc0, 0x56, 0x78, 0], src, dst)
}

/// What an ICMP error frame says: (its source, its destination) and the quoted packet's
/// (source, destination, source port, destination port; an echo's identifier for both
/// ports), asserting the outer header's, the ICMP and the quoted header's checksums.
#[allow(clippy::type_complexity)]
pub fn inspect_error(f: &[u8]) -> (([u8; 4], [u8; 4]), ([u8; 4], [u8; 4], u16, u16)) {
    let icmp = 14 + usize::from(f[14] & 0x0f) * 4;
    assert_eq!(fold(csum_add(0, &f[14..icmp])), 0, "IPv4 header checksum is wrong");
    assert_eq!(fold(csum_add(0, &f[icmp..])), 0, "ICMP checksum is wrong");
    let inner = icmp + 8;
    let l4 = inner + usize::from(f[inner] & 0x0f) * 4;
    assert_eq!(fold(csum_add(0, &f[inner..l4])), 0, "quoted IPv4 header checksum is wrong");
    let word = |at: usize| u16::from_be_bytes([f[at], f[at + 1]]);
    let ports = if f[inner + 9] == ICMP { (word(l4 + 4), word(l4 + 4)) } else { (word(l4), word(l4 + 2)) };
    let addr = |at: usize| -> [u8; 4] { f[at..at + 4].try_into().unwrap() };
    ((addr(26), addr(30)), (addr(inner + 12), addr(inner + 16), ports.0, ports.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_frames_verify_and_a_flipped_bit_does_not() {
        for proto in [TCP, UDP] {
            let mut f = packet(proto, [10, 0, 0, 1], [10, 0, 0, 2], 1000, 2000, SYN, false);
            let s = inspect(&f);
            assert_eq!((s.sport, s.dport), (1000, 2000));
            let last = f.len() - 1;
            f[last] ^= 1;
            assert!(!l4_checksum_valid(&f[26..30], &f[30..34], proto, &f[34..]));
        }
    }
}
