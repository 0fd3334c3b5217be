//! A port-forwarding bed for packet tests: a tc switch with a gateway, one target namespace
//! and a test veth as the uplink (its peer in an "outside" namespace), TCP and UDP forwards,
//! and the pinned NAT programs and connection table opened for BPF_PROG_TEST_RUN.
use aya::maps::{HashMap, Map, MapData};
use switch_common::{CtEntry, CtKey};

use crate::{
    Sandbox,
    bpf::{SchedClassifier, tc_program},
    host,
    ipv4::{SYN, TCP, packet},
    ok,
};

/// One bed. Every address depends on `net` so beds of parallel tests never collide.
pub struct NatBed {
    // Dropped first: the uplink and the outside namespace go before the sandbox's switch.
    _outside: Outside,
    /// The sandbox (switch, namespace).
    pub sb: Sandbox,
    /// Switch name.
    pub sw: String,
    /// Uplink interface index.
    pub ifindex: u32,
    /// `nat_ingress`, pinned by `switch up`.
    pub nat_in: SchedClassifier,
    /// `nat_egress`.
    pub nat_out: SchedClassifier,
    /// A client outside, the uplink's address and the forwards' target.
    pub client: [u8; 4],
    /// The uplink's address.
    pub uplink_ip: [u8; 4],
    /// The target namespace's address.
    pub target: [u8; 4],
    /// Forwarded host port for TCP (to port 80) and for UDP (to port 53).
    pub tcp_port: u16,
    /// Forwarded UDP host port.
    pub udp_port: u16,
}

struct Outside {
    uplink: String,
    ns: String,
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["link", "del", &self.uplink]).status();
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

impl NatBed {
    /// A bed on 172.31.`net`.0/24 (outside) and 10.`net`.0.0/24 (switch), forwarding host
    /// ports `tcp_port` and `tcp_port + 1` (UDP).
    pub fn new(net: u8, tcp_port: u16) -> Self {
        let mut sb = Sandbox::new();
        // Not named with the sandbox's prefix: it is the test's "internet", not something the
        // switch made, so snapshots of what the switch leaves behind do not list it.
        let outside = Outside { uplink: format!("u{}", sb.prefix), ns: format!("o{}", sb.prefix) };
        host("ip", &["netns", "add", &outside.ns]);
        host("ip", &["link", "add", &outside.uplink, "type", "veth", "peer", "name", "eth0", "netns", &outside.ns]);
        host("ip", &["addr", "add", &format!("172.31.{net}.1/24"), "dev", &outside.uplink]);
        host("ip", &["link", "set", &outside.uplink, "up"]);
        let sw = sb.switch("sw", "tc", &["--gateway", &format!("10.{net}.0.254/24"), "--uplink", &outside.uplink]);
        // Crafted frames on the target's port come from any station (a packet bed).
        let web = sb.port(&sw, "web", &format!("10.{net}.0.10/24"), &["--no-port-security"]);
        let udp_port = tcp_port + 1;
        for (proto, port, to) in [("tcp", tcp_port, 80), ("udp", udp_port, 53)] {
            let (port, to) = (port.to_string(), format!("{web}:{to}"));
            ok(&["forward", "add", "--proto", proto, "--host-port", &port, "--to", &to, "--switch", &sw]);
        }
        let ifindex = std::fs::read_to_string(format!("/sys/class/net/{}/ifindex", outside.uplink))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let nat_in = tc_program(&format!("/sys/fs/bpf/switch/{sw}/prog_nat_in")).unwrap();
        let nat_out = tc_program(&format!("/sys/fs/bpf/switch/{sw}/prog_nat_out")).unwrap();
        Self {
            _outside: outside,
            sb,
            sw,
            ifindex,
            nat_in,
            nat_out,
            client: [172, 31, net, 2],
            uplink_ip: [172, 31, net, 1],
            target: [10, net, 0, 10],
            tcp_port,
            udp_port,
        }
    }

    /// The switch's connection table (answered connections), opened from its pin.
    pub fn conntrack(&self) -> HashMap<MapData, CtKey, CtEntry> {
        self.map("CONNTRACK")
    }

    /// The connections waiting for their first answer.
    pub fn unreplied(&self) -> HashMap<MapData, CtKey, CtEntry> {
        self.map("CT_UNREPLIED")
    }

    fn map(&self, name: &str) -> HashMap<MapData, CtKey, CtEntry> {
        let data = MapData::from_pin(format!("/sys/fs/bpf/switch/{}/{name}", self.sw)).unwrap();
        HashMap::try_from(Map::from_map_data(data).unwrap()).unwrap()
    }

    /// A SYN from the client's port `sport` to the forwarded TCP port.
    pub fn syn(&self, sport: u16) -> Vec<u8> {
        self.from_client(sport, SYN)
    }

    /// A TCP segment with `flags` from the client's port `sport` to the forwarded TCP port.
    pub fn from_client(&self, sport: u16, flags: u8) -> Vec<u8> {
        packet(TCP, self.client, self.uplink_ip, sport, self.tcp_port, flags, false)
    }

    /// A TCP segment with `flags` from the target's port 80 back to the client's `sport`, as
    /// it leaves the target (not yet translated).
    pub fn from_server(&self, sport: u16, flags: u8) -> Vec<u8> {
        packet(TCP, self.target, self.client, 80, sport, flags, false)
    }

    /// Both connection-table keys of the forwarded TCP connection from the client's `sport`:
    /// (original direction, reply direction).
    pub fn keys(&self, sport: u16) -> [CtKey; 2] {
        [
            ct_key(TCP, self.client, self.uplink_ip, sport, self.tcp_port),
            ct_key(TCP, self.target, self.client, 80, sport),
        ]
    }

    /// Every class of frame the NAT programs must leave alone, each a SYN of the client made
    /// malformed, with what makes it so; client ports 41000 to 41009, in this order.
    pub fn malformed_syns(&self) -> Vec<(&'static str, Vec<u8>)> {
        let syn = |sport| self.syn(sport);
        let set_total = |f: &mut Vec<u8>, delta: i32| {
            let total = (i32::from(u16::from_be_bytes([f[16], f[17]])) + delta) as u16;
            f[16..18].copy_from_slice(&total.to_be_bytes());
        };
        let mut cases: Vec<(&str, Vec<u8>)> = vec![];
        let mut f = syn(41000);
        f[14] = 0x44; // IHL 4: shorter than an IPv4 header can be
        cases.push(("IHL < 5", f));
        let mut f = syn(41001);
        set_total(&mut f, 10);
        cases.push(("total length longer than the packet", f));
        let mut f = syn(41002);
        f[16..18].copy_from_slice(&30u16.to_be_bytes());
        cases.push(("total length shorter than the headers", f));
        let mut f = syn(41003);
        f[20] |= 0x20;
        cases.push(("first fragment", f));
        let mut f = syn(41004);
        f[20..22].copy_from_slice(&100u16.to_be_bytes());
        cases.push(("later fragment", f));
        let s = syn(41005);
        let mut f = s[..12].to_vec();
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
        f.extend_from_slice(&s[12..]);
        cases.push(("VLAN-tagged", f));
        let mut f = syn(41006);
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        cases.push(("IPv6 EtherType", f));
        let mut f = syn(41007);
        f[14] = 0x65; // version 6 behind an IPv4 EtherType
        cases.push(("IP version 6", f));
        let mut f = syn(41008)[..44].to_vec(); // 10 bytes of TCP header
        f[16..18].copy_from_slice(&30u16.to_be_bytes()); // the 30 bytes that are there
        cases.push(("truncated TCP header", f));
        let mut f = syn(41009);
        f[23] = 1; // ICMP
        cases.push(("not TCP or UDP", f));
        cases
    }
}

/// A connection-table key as the datapath builds it: addresses as on the wire, ports in host
/// order.
pub fn ct_key(proto: u8, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> CtKey {
    CtKey { src: u32::from_ne_bytes(src), dst: u32::from_ne_bytes(dst), sport, dport, proto, pad: [0; 3] }
}

/// CLOCK_MONOTONIC in ns: the clock the datapath stamps entries with.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
