//! Packet-in/packet-out tests of the port-forwarding programs through BPF_PROG_TEST_RUN: the
//! pinned `nat_ingress`/`nat_egress` run on crafted IPv4 frames "arriving" on a real uplink;
//! addresses, ports and checksums of the output are checked independently here.
use switch_tests::{
    bpf::{obj_get, run_tc},
    *,
};

/// Ones' complement sum of 16-bit words.
fn csum_add(mut sum: u32, data: &[u8]) -> u32 {
    for c in data.chunks(2) {
        let w = if c.len() == 2 { u16::from_be_bytes([c[0], c[1]]) } else { u16::from_be_bytes([c[0], 0]) };
        sum += u32::from(w);
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet + IPv4 + TCP/UDP frame with correct checksums (UDP: `udp_zero` leaves the
/// checksum 0, "none").
fn packet(proto: u8, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, tcp_flags: u8, udp_zero: bool) -> Vec<u8> {
    let payload = b"hello, forward";
    let l4_len = if proto == 6 { 20 } else { 8 } + payload.len();
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
    if proto == 6 {
        l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, tcp_flags, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        l4.extend_from_slice(&(l4_len as u16).to_be_bytes());
        l4.extend_from_slice(&[0, 0]);
    }
    l4.extend_from_slice(payload);
    if !(proto == 17 && udp_zero) {
        let off = if proto == 6 { 16 } else { 6 };
        let c = l4_checksum(&src, &dst, proto, &l4);
        l4[off..off + 2].copy_from_slice(&c.to_be_bytes());
    }
    f.extend(ip);
    f.extend(l4);
    f
}

/// TCP/UDP checksum over the pseudo header, with the checksum field taken as zero.
fn l4_checksum(src: &[u8], dst: &[u8], proto: u8, l4: &[u8]) -> u16 {
    let mut pseudo = vec![];
    pseudo.extend_from_slice(src);
    pseudo.extend_from_slice(dst);
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    let mut l4 = l4.to_vec();
    let off = if proto == 6 { 16 } else { 6 };
    l4[off] = 0;
    l4[off + 1] = 0;
    let c = fold(csum_add(csum_add(0, &pseudo), &l4));
    if proto == 17 && c == 0 { 0xffff } else { c }
}

/// The fields of an output frame, with both checksums checked.
struct Seen {
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    l4_csum: u16,
}

fn inspect(f: &[u8]) -> Seen {
    let ip = &f[14..34];
    assert_eq!(fold(csum_add(0, ip)), 0, "IPv4 header checksum is wrong: {:02x?}", ip);
    let proto = ip[9];
    let l4 = &f[34..];
    let off = if proto == 6 { 16 } else { 6 };
    let l4_csum = u16::from_be_bytes([l4[off], l4[off + 1]]);
    if !(proto == 17 && l4_csum == 0) {
        assert_eq!(l4_csum, l4_checksum(&ip[12..16], &ip[16..20], proto, l4), "L4 checksum is wrong");
    }
    Seen {
        src: ip[12..16].try_into().unwrap(),
        dst: ip[16..20].try_into().unwrap(),
        sport: u16::from_be_bytes([l4[0], l4[1]]),
        dport: u16::from_be_bytes([l4[2], l4[3]]),
        l4_csum,
    }
}

#[test]
fn dnat_and_reverse_translation_byte_for_byte() {
    let mut sb = Sandbox::new();
    let (ns_out, uplink) = (sb.name("out"), format!("u{}", sb.prefix));
    host("ip", &["netns", "add", &ns_out]);
    struct Cleanup(String, String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip").args(["link", "del", &self.0]).status();
            let _ = std::process::Command::new("ip").args(["netns", "del", &self.1]).status();
        }
    }
    let _cleanup = Cleanup(uplink.clone(), ns_out.clone());
    host("ip", &["link", "add", &uplink, "type", "veth", "peer", "name", "eth0", "netns", &ns_out]);
    host("ip", &["addr", "add", "172.31.110.1/24", "dev", &uplink]);
    host("ip", &["link", "set", &uplink, "up"]);
    let sw = sb.switch("sw", "tc", &["--gateway", "10.110.0.254/24", "--uplink", &uplink]);
    let web = sb.port(&sw, "web", "10.110.0.10/24", &[]);
    ok(&["forward", "add", "--proto", "tcp", "--host-port", "11080", "--to", &format!("{web}:80"), "--switch", &sw]);
    ok(&["forward", "add", "--proto", "udp", "--host-port", "11053", "--to", &format!("{web}:53"), "--switch", &sw]);
    let ifindex: u32 =
        std::fs::read_to_string(format!("/sys/class/net/{uplink}/ifindex")).unwrap().trim().parse().unwrap();
    let nat_in = obj_get(&format!("/sys/fs/bpf/switch/{sw}/prog_nat_in")).unwrap();
    let nat_out = obj_get(&format!("/sys/fs/bpf/switch/{sw}/prog_nat_out")).unwrap();
    let (client, uplink_ip, target) = ([172, 31, 110, 2], [172, 31, 110, 1], [10, 110, 0, 10]);

    // A SYN from outside to the forwarded port: destination rewritten, checksums right.
    let syn = packet(6, client, uplink_ip, 40000, 11080, 0x02, false);
    let out = run_tc(&nat_in, &syn, ifindex).unwrap();
    let s = inspect(&out.data);
    assert_eq!((s.src, s.dst, s.sport, s.dport), (client, target, 40000, 80), "SYN not translated");
    // The reply leaving through the uplink gets the uplink address and port back.
    let syn_ack = packet(6, target, client, 80, 40000, 0x12, false);
    let out = run_tc(&nat_out, &syn_ack, ifindex).unwrap();
    let s = inspect(&out.data);
    assert_eq!((s.src, s.dst, s.sport, s.dport), (uplink_ip, client, 11080, 40000), "reply not translated back");
    // The connection is in the table, and later packets of it follow the table.
    let rows = json(&["forward", "list", "--switch", &sw]);
    let tcp = rows.as_array().unwrap().iter().find(|r| r["proto"] == "tcp").unwrap().clone();
    assert_eq!((tcp["connections"].as_u64(), tcp["active"].as_u64()), (Some(1), Some(1)), "{tcp}");
    let ack = packet(6, client, uplink_ip, 40000, 11080, 0x10, false);
    assert_eq!(inspect(&run_tc(&nat_in, &ack, ifindex).unwrap().data).dst, target);

    // Not a new connection (an ACK without a table entry), another port, a fragment, or a
    // packet to an address that is not the uplink's: left exactly as they were.
    let stray_ack = packet(6, client, uplink_ip, 40001, 11080, 0x10, false);
    let other_port = packet(6, client, uplink_ip, 40002, 11081, 0x02, false);
    let mut fragment = packet(6, client, uplink_ip, 40003, 11080, 0x02, false);
    fragment[20] |= 0x20; // more fragments
    let other_addr = packet(6, client, [172, 31, 110, 9], 40004, 11080, 0x02, false);
    for f in [stray_ack, other_port, fragment, other_addr] {
        let out = run_tc(&nat_in, &f, ifindex).unwrap();
        assert_eq!(out.data, f, "an untranslatable packet was changed");
        assert_eq!(out.retval, 0, "TC_ACT_OK expected");
    }

    // UDP: with a checksum (updated) and with none (zero stays zero).
    for zero in [false, true] {
        let sport = if zero { 50001 } else { 50000 };
        let q = packet(17, client, uplink_ip, sport, 11053, 0, zero);
        let s = inspect(&run_tc(&nat_in, &q, ifindex).unwrap().data);
        assert_eq!((s.dst, s.dport), (target, 53));
        assert_eq!(s.l4_csum == 0, zero, "UDP checksum zero-ness changed");
        let a = packet(17, target, client, 53, sport, 0, zero);
        let s = inspect(&run_tc(&nat_out, &a, ifindex).unwrap().data);
        assert_eq!((s.src, s.sport), (uplink_ip, 11053));
        assert_eq!(s.l4_csum == 0, zero);
    }

    // A FIN moves the connection to closing: it drains after the closing timeout, not the
    // established one (checked here only as "still counted right after").
    let fin = packet(6, client, uplink_ip, 40000, 11080, 0x11, false);
    assert_eq!(inspect(&run_tc(&nat_in, &fin, ifindex).unwrap().data).dst, target);
    ok(&["down", "--name", &sw]);
}
