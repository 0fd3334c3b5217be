//! Ethernet header access, and the layer-3 source fields port security checks.
use aya_ebpf::programs::TcContext;
use switch_common::{
    ETH_HLEN, Port,
    ipv6::{ETH_P_IPV6, HLEN as IPV6_HLEN, NH_TCP, NH_UDP, WINDOW as IPV6_WINDOW},
};

use super::{ctx::skb_vlan_present, ipv6, stats::SPOOFED_UNPARSED};

/// EtherType of IPv4.
const ETH_P_IP: u16 = 0x0800;
/// EtherType of ARP.
const ETH_P_ARP: u16 = 0x0806;

/// What a frame says about its sender above layer 2, for port security.
#[derive(Clone, Copy)]
pub struct L3Src {
    /// `L3_*`.
    pub kind: u32,
    /// IPv4 source address, or ARP sender address (network order).
    pub ip: u32,
    /// ARP sender MAC.
    pub sha: [u8; 6],
    /// IPv6: the port-security verdict (`ipv6::check`, or `ipv6::check_peer` for a tunnel
    /// peer's frame: 0, or the `stats::SPOOFED_*` reason).
    pub v6: u32,
}

/// Neither IPv4 nor a whole ARP packet: nothing to check above layer 2.
pub const L3_NONE: u32 = 0;
/// IPv4: `ip` is the source address.
pub const L3_IPV4: u32 = 1;
/// ARP (Ethernet/IPv4): `ip` and `sha` are the sender's.
pub const L3_ARP: u32 = 2;
/// IPv6, judged against the port it came from: `v6` is the verdict.
pub const L3_IPV6: u32 = 3;

impl L3Src {
    pub const NONE: Self = Self { kind: L3_NONE, ip: 0, sha: [0; 6], v6: 0 };
}

/// `L3Src` of the packet at `[data, data_end)` (XDP: direct access, each read bounds-checked
/// against data_end as the verifier requires). A frame too short for its EtherType's fields
/// is `L3_NONE`: IPv4 that short is no IPv4 to the receiving stack either. IPv6 is judged
/// right away (its addresses are too big to carry around on the stack): against `port`, or,
/// from no port (a tunnel peer's frame), against this host's bound ports.
#[inline(always)]
pub fn l3_src_bounds(data: usize, data_end: usize, port: Option<&Port>) -> L3Src {
    // ARP's sender fields end at 14 + 18 bytes: 32 covers IPv4's source (ends at 30) too.
    if data + ETH_HLEN + 18 > data_end {
        return L3Src::NONE;
    }
    // SAFETY: the 32 bytes read here are inside [data, data_end), checked just above.
    unsafe {
        let proto = u16::from_be(*((data + 12) as *const u16));
        match proto {
            ETH_P_IP => L3Src { kind: L3_IPV4, ip: *((data + 26) as *const u32), ..L3Src::NONE },
            ETH_P_ARP => L3Src {
                kind: L3_ARP,
                ip: *((data + 28) as *const u32),
                sha: *((data + 22) as *const [u8; 6]),
                ..L3Src::NONE
            },
            ETH_P_IPV6 => {
                let l3 = data + ETH_HLEN;
                let v6 = match port {
                    Some(port) => ipv6::check(l3, data_end, port),
                    None => ipv6::check_peer(l3, data_end),
                };
                L3Src { kind: L3_IPV6, v6, ..L3Src::NONE }
            }
            _ => L3Src::NONE,
        }
    }
}

/// `L3Src` for a TC program: the same reads as `l3_src_bounds` (one parser for both
/// programs). The 32 bytes are almost always in the skb's linear part at TC ingress; if not,
/// they are pulled in once, so a sender cannot slip a spoofed address past the check by
/// putting it in a fragment (only ports with port security pay for this).
#[inline(always)]
pub fn l3_src(ctx: &TcContext, port: Option<&Port>) -> L3Src {
    if !linear(ctx, ETH_HLEN + 18) {
        return L3Src::NONE;
    }
    if ethertype(ctx) == Some(ETH_P_IPV6) && !ipv6_linear(ctx) {
        return L3Src { kind: L3_IPV6, v6: SPOOFED_UNPARSED, ..L3Src::NONE };
    }
    l3_src_bounds(ctx.data(), ctx.data_end(), port)
}

/// Makes the first `want` bytes of the skb (all of it if shorter) direct-readable, pulling
/// them into the linear part if they are not there yet. False only if the pull failed.
#[inline(always)]
fn linear(ctx: &TcContext, want: usize) -> bool {
    let want = want.min(ctx.len() as usize);
    ctx.data() + want <= ctx.data_end() || ctx.pull_data(want as u32).is_ok()
}

/// The frame's EtherType, if its header is in the linear part.
#[inline(always)]
fn ethertype(ctx: &TcContext) -> Option<u16> {
    let data = ctx.data();
    if data + ETH_HLEN > ctx.data_end() {
        return None;
    }
    // SAFETY: the header is inside [data, data_end), checked just above.
    Some(u16::from_be(unsafe { *((data + 12) as *const u16) }))
}

/// Makes as much of an IPv6 packet direct-readable as `ipv6::sender` looks at: the fixed
/// header, and for anything but plain TCP or UDP (extension headers, ICMPv6: rare, so the
/// stream of a TCP connection never pays for a pull) up to `IPV6_WINDOW` bytes of it.
#[inline(always)]
fn ipv6_linear(ctx: &TcContext) -> bool {
    if !linear(ctx, ETH_HLEN + IPV6_HLEN) {
        return false;
    }
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + ETH_HLEN + IPV6_HLEN > end {
        // Shorter than the fixed header: `sender` sees that itself.
        return true;
    }
    // SAFETY: the next-header byte is inside the fixed header, checked just above.
    let nh = unsafe { *((data + ETH_HLEN + 6) as *const u8) };
    nh == NH_TCP || nh == NH_UDP || linear(ctx, ETH_HLEN + IPV6_WINDOW)
}

/// The two addresses the switch decides on, and whether the frame carries a VLAN tag.
#[derive(Clone, Copy)]
pub struct EthAddrs {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    /// A VLAN tag, in the bytes (`is_vlan_tpid` EtherType) or, at TC, already moved into the
    /// skb's metadata by the kernel. Port security drops these: a Linux receiver strips a
    /// priority tag (VID 0) and takes the inner frame, whose ARP or IPv4 the checks would not
    /// have looked at.
    pub tagged: bool,
}

/// Whether `ethertype` is a VLAN tag protocol identifier: 802.1Q, 802.1ad (QinQ), and the
/// pre-standard QinQ values 0x9100, 0x9200 and 0x9300 that Linux and switches still accept.
#[inline(always)]
pub const fn is_vlan_tpid(ethertype: u16) -> bool {
    matches!(ethertype, 0x8100 | 0x88a8 | 0x9100 | 0x9200 | 0x9300)
}

/// Reads destination and source MAC from the packet at `[data, data_end)`, or `None` if it is
/// shorter than an Ethernet header. Past the addresses only the EtherType is looked at (for
/// a tag): the switch forwards at layer 2, so an IPv6, VLAN-tagged or odd EtherType frame is
/// switched like any other.
#[inline(always)]
pub fn parse_bounds(data: usize, data_end: usize) -> Option<EthAddrs> {
    // The verifier only allows reads after this exact comparison against data_end.
    if data + ETH_HLEN > data_end {
        return None;
    }
    let p = data as *const [u8; 6];
    // SAFETY: the 14-byte header is inside [data, data_end), checked just above.
    unsafe {
        let ethertype = u16::from_be(*((data + 12) as *const u16));
        Some(EthAddrs { dst: *p, src: *p.add(1), tagged: is_vlan_tpid(ethertype) })
    }
}

/// `parse_bounds` for a TC program. The kernel's receive path has already taken the outer tag
/// of a tagged frame out of the bytes into the skb (`vlan_present`) by the time TC runs, so a
/// frame counts as tagged with a tag in either place.
#[inline(always)]
pub fn parse(ctx: &TcContext) -> Option<EthAddrs> {
    if (ctx.len() as usize) < ETH_HLEN {
        return None;
    }
    // Direct packet access needs the header in the linear part of the skb. It almost always
    // is at TC ingress; if not, pull it in once (this invalidates earlier packet pointers, so
    // data/data_end are read again after it).
    if ctx.data() + ETH_HLEN > ctx.data_end() && ctx.pull_data(ETH_HLEN as u32).is_err() {
        return None;
    }
    let mut eth = parse_bounds(ctx.data(), ctx.data_end())?;
    eth.tagged |= skb_vlan_present(ctx);
    Some(eth)
}
