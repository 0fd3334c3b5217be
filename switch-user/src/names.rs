//! Parsing and validation of what users type (names, CIDRs, MACs) and the derivation of
//! interface names, which the kernel limits to 15 bytes.
use std::{
    fmt,
    net::{Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;
/// Longest switch or namespace name accepted. Namespace names become file names under
/// /run/netns; switch names become bpffs directory names.
pub const NAME_MAX: usize = 64;
/// Name of the port's interface inside its namespace, as container runtimes do.
pub const NS_IFNAME: &str = "eth0";

/// Checks a switch or namespace name: 1..=64 of `[A-Za-z0-9_.-]`, not starting with `.` or `-`.
pub fn validate_name(what: &'static str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid(what, name, "must not be empty"));
    }
    if name.len() > NAME_MAX {
        return Err(Error::invalid(what, name, format!("longer than {NAME_MAX} characters")));
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err(Error::invalid(what, name, "must not start with '.' or '-'"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))) {
        return Err(Error::invalid(
            what,
            name,
            format!("character {c:?} not allowed (use letters, digits, '_', '.', '-')"),
        ));
    }
    Ok(())
}

/// Checks an interface name the user (or a container runtime) chose: 1-15 characters, none
/// of them '/', ':' or white space (what the kernel's `dev_valid_name` allows), not "." or "..".
pub fn validate_ifname(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > IFNAME_MAX {
        return Err(Error::invalid("interface name", name, format!("must be 1 to {IFNAME_MAX} characters")));
    }
    if name == "." || name == ".." || name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        return Err(Error::invalid("interface name", name, "not a valid interface name"));
    }
    Ok(())
}

/// An IPv4 interface address with prefix length, e.g. `192.168.15.1/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Cidr {
    /// The host address.
    pub addr: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub prefix: u8,
}

impl FromStr for Cidr {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: &str| Error::invalid("CIDR", s, reason);
        let (a, p) = s.split_once('/').ok_or_else(|| bad("expected ADDRESS/PREFIX, e.g. 192.168.15.1/24"))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = p.parse().map_err(|_| bad("prefix length is not a number"))?;
        if prefix > 32 {
            return Err(bad("prefix length is larger than 32"));
        }
        if addr.is_unspecified() || addr.is_multicast() || addr.is_broadcast() {
            return Err(bad("not a unicast host address"));
        }
        if prefix < 31 {
            let host_bits = u32::from(addr) & !mask(prefix);
            if host_bits == 0 {
                return Err(bad("is the network address of its subnet"));
            }
            if host_bits == !mask(prefix) {
                return Err(bad("is the broadcast address of its subnet"));
            }
        }
        Ok(Self { addr, prefix })
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) }
}

impl Cidr {
    /// Whether `other` is in the same subnet as `self`.
    pub fn contains(&self, other: Ipv4Addr) -> bool {
        let m = mask(self.prefix);
        u32::from(self.addr) & m == u32::from(other) & m
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> Self {
        c.to_string()
    }
}

impl TryFrom<String> for Cidr {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

/// An IPv6 interface address with prefix length, e.g. `fd00:15::1/64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Cidr6 {
    /// The host address.
    pub addr: Ipv6Addr,
    /// Prefix length, 0..=128.
    pub prefix: u8,
}

impl FromStr for Cidr6 {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: &str| Error::invalid("CIDR", s, reason);
        let (a, p) = s.split_once('/').ok_or_else(|| bad("expected ADDRESS/PREFIX, e.g. fd00:15::1/64"))?;
        let addr: Ipv6Addr = a.parse().map_err(|_| bad("not an IPv6 address"))?;
        let prefix: u8 = p.parse().map_err(|_| bad("prefix length is not a number"))?;
        if prefix > 128 {
            return Err(bad("prefix length is larger than 128"));
        }
        if addr.is_unspecified() || addr.is_loopback() || addr.is_multicast() || addr.to_ipv4_mapped().is_some() {
            return Err(bad("not a unicast host address"));
        }
        // Link-local addresses are the kernel's to give (from the MAC), one per interface.
        if addr.is_unicast_link_local() {
            return Err(bad("is link-local (each interface has its own already)"));
        }
        if prefix < 127 && u128::from(addr) & !mask6(prefix) == 0 {
            return Err(bad("is the subnet-router anycast address of its subnet"));
        }
        Ok(Self { addr, prefix })
    }
}

fn mask6(prefix: u8) -> u128 {
    if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) }
}

impl Cidr6 {
    /// Whether `other` is in the same subnet as `self`.
    pub fn contains(&self, other: Ipv6Addr) -> bool {
        let m = mask6(self.prefix);
        u128::from(self.addr) & m == u128::from(other) & m
    }
}

impl fmt::Display for Cidr6 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl From<Cidr6> for String {
    fn from(c: Cidr6) -> Self {
        c.to_string()
    }
}

impl TryFrom<String> for Cidr6 {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

/// An interface address of either family, as `--ip` and `--gateway` take them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpCidr {
    /// IPv4.
    V4(Cidr),
    /// IPv6.
    V6(Cidr6),
}

impl FromStr for IpCidr {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        if s.contains(':') { s.parse().map(Self::V6) } else { s.parse().map(Self::V4) }
    }
}

/// The addresses of one interface: one IPv4 address at most and one IPv6 address at most,
/// from `given` (`--ip` or `--gateway` repeated, named `option` in errors).
pub fn by_family(option: &str, given: &[IpCidr]) -> Result<(Option<Cidr>, Option<Cidr6>)> {
    let (mut v4, mut v6) = (None, None);
    for c in given {
        let twice = match c {
            IpCidr::V4(c) => v4.replace(*c).is_some(),
            IpCidr::V6(c) => v6.replace(*c).is_some(),
        };
        if twice {
            let family = if matches!(c, IpCidr::V4(_)) { "IPv4" } else { "IPv6" };
            return Err(Error::invalid(
                "option",
                format!("{option} {}", given.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(" ")),
                format!("one address per family: {family} given twice"),
            ));
        }
    }
    Ok((v4, v6))
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::V4(c) => c.fmt(f),
            Self::V6(c) => c.fmt(f),
        }
    }
}

/// A MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Mac(pub [u8; 6]);

impl FromStr for Mac {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: &str| Error::invalid("MAC address", s, reason);
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(bad("expected six hex octets, e.g. 02:00:00:00:00:01"));
        }
        let mut mac = [0u8; 6];
        for (o, p) in mac.iter_mut().zip(&parts) {
            if p.is_empty() || p.len() > 2 {
                return Err(bad("each octet is one or two hex digits"));
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| bad("not a hex number"))?;
        }
        Ok(Self(mac))
    }
}

impl Mac {
    /// A random locally administered unicast address (what the kernel picks for a veth end
    /// without one), chosen here so the port can be bound to it before the interface exists.
    pub fn random_station() -> Result<Self> {
        use std::io::Read as _;
        let mut b = [0u8; 6];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut b))
            .map_err(|e| Error::Io { context: "reading /dev/urandom".into(), source: e })?;
        b[0] = (b[0] & 0xfe) | 0x02;
        Ok(Self(b))
    }

    /// Checks that the address can be a station's own address (unicast, not zero).
    pub fn validate_station(self) -> Result<Self> {
        if !switch_common::is_valid_source(&self.0) {
            return Err(Error::invalid(
                "MAC address",
                self.to_string(),
                "must be a unicast, non-zero address (lowest bit of the first octet clear)",
            ));
        }
        Ok(self)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

impl From<Mac> for String {
    fn from(m: Mac) -> Self {
        m.to_string()
    }
}

impl TryFrom<String> for Mac {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

/// 32-bit FNV-1a; stable across releases (unlike std's hasher), so derived names are too.
fn fnv1a(parts: &[&str]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0xff;
            h = h.wrapping_mul(0x0100_0193);
        }
        for b in p.bytes() {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    h
}

/// Host-side interface name for `ns`'s port on `switch`: readable prefix plus a hash of both
/// names, e.g. `sred-3fa9c1`. `attempt` > 0 gives alternatives when a name is taken.
///
/// At most 15 bytes whatever the names are; two different (switch, ns) pairs only share a
/// name on a 24-bit hash collision, and the caller then tries the next `attempt`.
pub fn host_ifname(switch: &str, ns: &str, attempt: u32) -> String {
    let attempt_s = attempt.to_string();
    let h = fnv1a(&[switch, ns, &attempt_s]) & 0x00ff_ffff;
    let prefix: String = ns.chars().filter(char::is_ascii_alphanumeric).take(7).collect();
    let name = format!("s{prefix}-{h:06x}");
    debug_assert!(name.len() <= IFNAME_MAX);
    name
}

/// Name of the Linux bridge of switch `switch` (bridge datapath), e.g. `bsw0-1a2b3c`.
pub fn bridge_ifname(switch: &str) -> String {
    let h = fnv1a(&["bridge", switch]) & 0x00ff_ffff;
    let prefix: String = switch.chars().filter(char::is_ascii_alphanumeric).take(7).collect();
    format!("b{prefix}-{h:06x}")
}

/// Names of switch `switch`'s gateway veth pair: (host end carrying the address, switch end
/// plugged in as a port), e.g. `gsw0-1a2b3c` and `ssw0-1a2b3c`.
pub fn gateway_ifnames(switch: &str) -> (String, String) {
    let h = fnv1a(&["gateway", switch]) & 0x00ff_ffff;
    let prefix: String = switch.chars().filter(char::is_ascii_alphanumeric).take(7).collect();
    (format!("g{prefix}-{h:06x}"), format!("s{prefix}-{h:06x}"))
}

/// Name of switch `switch`'s VXLAN device (its tunnel port), e.g. `vsw0-1a2b3c`.
pub fn tunnel_ifname(switch: &str) -> String {
    let h = fnv1a(&["tunnel", switch]) & 0x00ff_ffff;
    let prefix: String = switch.chars().filter(char::is_ascii_alphanumeric).take(7).collect();
    format!("v{prefix}-{h:06x}")
}

/// Interface name, inside `ns`, of a direct link to `peer`: `veth-PEER` when that fits,
/// otherwise `veth-` and a hash of the peer's name.
pub fn link_ifname(peer: &str) -> String {
    let name = format!("veth-{peer}");
    if name.len() <= IFNAME_MAX { name } else { format!("veth-{:08x}", fnv1a(&[peer])) }
}

/// The port name (its record's key, its owner in listings) of CNI attachment (`container_id`,
/// `ifname`): the container ID itself when the interface is `eth0` and the ID is a valid name,
/// as most runtimes send; otherwise (another interface, as Multus' `net1`; an ID longer than
/// `NAME_MAX`, as nerdctl's `NAMESPACE-<64 hex>`) a prefix of both and a 64-bit hash of the
/// pair, e.g. `default-0123abcd.eth0-<16 hex>`: a valid name, distinct for distinct pairs but on a
/// hash collision, which the caller sees (the port's record names its attachment). The
/// container ID must start with a letter or digit, as the CNI spec wants.
pub fn cni_port_name(container_id: &str, ifname: &str) -> String {
    if ifname == NS_IFNAME && validate_name("", container_id).is_ok() {
        return container_id.to_owned();
    }
    let keep = |s: &str, n: usize| -> String {
        s.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-')).take(n).collect()
    };
    let h = (u64::from(fnv1a(&[container_id, ifname])) << 32) | u64::from(fnv1a(&["cni", container_id, ifname]));
    let iface = keep(ifname, IFNAME_MAX);
    let id = keep(container_id, NAME_MAX - 18 - iface.len());
    format!("{id}.{iface}-{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cni_port_names_are_valid_and_distinct() {
        assert_eq!(cni_port_name("abc123", "eth0"), "abc123");
        let hex = "0123456789abcdef".repeat(4);
        let long = [format!("default-{hex}"), format!("default-{hex}0"), format!("k8s.io-{hex}")];
        let mut seen = vec![];
        for id in &long {
            for ifname in ["eth0", "net1", "a-very-long-if1"] {
                let n = cni_port_name(id, ifname);
                assert!(validate_name("port name", &n).is_ok(), "{n}");
                assert!(!seen.contains(&n), "{n} twice");
                seen.push(n);
            }
        }
        assert_ne!(cni_port_name("abc123", "net1"), "abc123");
        assert!(cni_port_name(&long[0], "eth0").starts_with("default-0123"));
    }

    #[test]
    fn ipv6_cidrs_and_families() {
        let c: Cidr6 = "fd00:15::2/64".parse().unwrap();
        assert_eq!((c.to_string().as_str(), c.prefix), ("fd00:15::2/64", 64));
        assert!(c.contains("fd00:15::ffff".parse().unwrap()) && !c.contains("fd00:16::2".parse().unwrap()));
        for bad in
            ["fd00::/64", "::/0", "::1/128", "ff02::1/64", "fe80::1/64", "fd00::1/129", "fd00::1", "::ffff:10.0.0.1/96"]
        {
            assert!(bad.parse::<Cidr6>().is_err(), "{bad}");
        }
        assert!("fd00::1/128".parse::<Cidr6>().is_ok());
        let given: Vec<IpCidr> = ["10.0.0.2/24", "fd00::2/64"].iter().map(|s| s.parse().unwrap()).collect();
        let (v4, v6) = by_family("--ip", &given).unwrap();
        assert_eq!((v4.unwrap().to_string(), v6.unwrap().to_string()), ("10.0.0.2/24".into(), "fd00::2/64".into()));
        let twice: Vec<IpCidr> = ["fd00::2/64", "fd00::3/64"].iter().map(|s| s.parse().unwrap()).collect();
        let e = by_family("--ip", &twice).unwrap_err().to_string();
        assert!(e.contains("IPv6 given twice") && e.contains("--ip fd00::2/64 fd00::3/64"), "{e}");
    }

    #[test]
    fn names() {
        assert!(validate_name("namespace name", "red").is_ok());
        assert!(validate_name("namespace name", "a.b_c-1").is_ok());
        assert!(validate_name("namespace name", "").is_err());
        assert!(validate_name("namespace name", "-x").is_err());
        assert!(validate_name("namespace name", "..").is_err());
        assert!(validate_name("namespace name", "a/b").is_err());
        assert!(validate_name("namespace name", "a b").is_err());
        assert!(validate_name("namespace name", &"x".repeat(65)).is_err());
        assert!(validate_name("namespace name", &"x".repeat(64)).is_ok());
    }

    #[test]
    fn cidr_parsing() {
        let c: Cidr = "192.168.15.1/24".parse().unwrap();
        assert_eq!(c.addr, Ipv4Addr::new(192, 168, 15, 1));
        assert_eq!(c.prefix, 24);
        assert_eq!(c.to_string(), "192.168.15.1/24");
        assert!(c.contains(Ipv4Addr::new(192, 168, 15, 200)));
        assert!(!c.contains(Ipv4Addr::new(192, 168, 16, 1)));
        for bad in [
            "192.168.15.1",
            "192.168.15.1/33",
            "192.168.15.1/x",
            "300.1.1.1/24",
            "fe80::1/64",
            "192.168.15.0/24",
            "192.168.15.255/24",
            "0.0.0.0/0",
            "224.0.0.1/24",
            "",
            "/24",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad} accepted");
        }
        assert!("10.0.0.0/31".parse::<Cidr>().is_ok());
        assert!("10.0.0.7/32".parse::<Cidr>().is_ok());
    }

    #[test]
    fn mac_parsing() {
        let m: Mac = "02:AB:cd:0:1:ff".parse().unwrap();
        assert_eq!(m.0, [0x02, 0xab, 0xcd, 0, 1, 0xff]);
        assert_eq!(m.to_string(), "02:ab:cd:00:01:ff");
        assert_eq!("02-00-00-00-00-01".parse::<Mac>().unwrap().0, [2, 0, 0, 0, 0, 1]);
        for bad in ["", "02:00:00:00:00", "02:00:00:00:00:00:00", "02:00:00:00:00:zz", "020:00:00:00:00:01"] {
            assert!(bad.parse::<Mac>().is_err(), "{bad} accepted");
        }
        assert!("01:00:5e:00:00:01".parse::<Mac>().unwrap().validate_station().is_err());
        assert!("00:00:00:00:00:00".parse::<Mac>().unwrap().validate_station().is_err());
        assert!("02:00:00:00:00:01".parse::<Mac>().unwrap().validate_station().is_ok());
    }

    #[test]
    fn interface_names_fit_and_differ() {
        let long = "a-very-long-namespace-name-that-goes-on";
        let mut seen = std::collections::HashSet::new();
        for sw in ["sw0", "sw1", long] {
            for ns in ["red", "blue", long, "x", "red-1", "red.1"] {
                let n = host_ifname(sw, ns, 0);
                assert!(n.len() <= IFNAME_MAX, "{n} too long");
                assert!(seen.insert(n.clone()), "{n} repeated");
                assert_ne!(host_ifname(sw, ns, 1), n);
            }
        }
        // Stable across runs and releases.
        assert_eq!(host_ifname("sw0", "red", 0), host_ifname("sw0", "red", 0));
        assert_eq!(link_ifname("blue"), "veth-blue");
        assert!(bridge_ifname(long).len() <= IFNAME_MAX);
        assert_ne!(bridge_ifname("sw0"), bridge_ifname("sw1"));
        assert!(tunnel_ifname(long).len() <= IFNAME_MAX);
        assert_ne!(tunnel_ifname("sw0"), tunnel_ifname("sw1"));
        assert!(tunnel_ifname("sw0").starts_with("vsw0-"));
        assert!(link_ifname(long).len() <= IFNAME_MAX);
        assert_ne!(link_ifname(long), link_ifname("a-very-long-namespace-name-that-goes-off"));
    }
}
