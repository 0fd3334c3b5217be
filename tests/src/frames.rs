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

/// Counts the frames that reach `eth0` inside a namespace and begin with one frame's bytes,
/// from `start` until `count`: whether that frame was delivered, whatever else the namespace
/// receives meanwhile (a neighbour probe from the host, a broadcast), which a port's counters
/// cannot tell apart from it.
pub struct Sniffer(crate::Reaped);

const SNIFF: &str = r#"
import select, socket, sys
want = bytes.fromhex(sys.argv[1])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)); s.bind(("eth0", 0))
print("ready", flush=True)
n, done = 0, False
while True:
    r, _, _ = select.select([s] + ([] if done else [sys.stdin]), [], [], 0 if done else None)
    if not r: break
    if s in r:
        f, addr = s.recvfrom(65535)
        n += addr[2] != socket.PACKET_OUTGOING and f.startswith(want)
    if sys.stdin in r: done = not sys.stdin.readline()
print(n, flush=True)
"#;

impl Sniffer {
    pub fn start(ns: &str, frame_hex: &str) -> Self {
        let args = ["ns", "exec", ns, "--", "python3", "-c", SNIFF, frame_hex];
        let mut cmd = std::process::Command::new(crate::switch_bin());
        cmd.args(args).stdin(std::process::Stdio::piped());
        Self(crate::spawn_until(&mut cmd, "ready"))
    }

    /// Stops it (after what it waits for had its time to arrive); how many arrived.
    pub fn count(self) -> usize {
        let mut child = self.0.take();
        drop(child.stdin.take());
        let out = child.wait_with_output().expect("the sniffer");
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim().parse().unwrap_or_else(|_| panic!("sniffer said {text:?}"))
    }
}
