//! Raw frames put on the wire from inside a namespace (a packet socket in python3), for tests
//! that need frames no program would send: bad sources, spoofed addresses, odd EtherTypes.

use crate::exec;

/// Sends one raw Ethernet frame (hex) out of `eth0` inside `ns`.
pub fn send_raw(ns: &str, frame_hex: &str) {
    let script = format!(
        "import socket; s=socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind(('eth0', 0)); s.send(bytes.fromhex('{frame_hex}'))"
    );
    let r = exec(ns, &["python3", "-c", &script]);
    assert_eq!(r.code, 0, "sending a raw frame: {r:?}");
}

/// An IPv4/UDP frame from `src_ip:5000` to `dst_ip:53` (checksums zero: only the switch
/// looks at it).
pub fn udp_frame(dst_mac: &str, src_mac: &str, src_ip: [u8; 4], dst_ip: [u8; 4]) -> String {
    let ip = |a: [u8; 4]| a.iter().map(|o| format!("{o:02x}")).collect::<String>();
    format!(
        "{}{}0800450000200000400040110000{}{}138800350000000000000000",
        dst_mac.replace(':', ""),
        src_mac.replace(':', ""),
        ip(src_ip),
        ip(dst_ip)
    )
}

/// `frame` (hex) with `tags` (hex: TPID and TCI of each tag, outermost first) put between its
/// MACs and its EtherType.
pub fn tagged(frame: &str, tags: &str) -> String {
    format!("{}{tags}{}", &frame[..24], &frame[24..])
}

/// A frame of the local experimental EtherType 0x88b5 (not IP: nothing else parses it),
/// 60 bytes long.
pub fn experimental_frame(dst_mac: &str, src_mac: &str) -> String {
    format!("{}{}88b5{}", dst_mac.replace(':', ""), src_mac.replace(':', ""), "00".repeat(46))
}
