//! IPv6 as port security reads it, over a frame's bytes: the same walk as the eBPF
//! datapath's (`switch-ebpf/src/helpers/ipv6.rs`), with the same bounds (`switch_common::ipv6`),
//! so a frame gets the same verdict on every datapath.
use switch_common::ipv6::{
    HLEN, MAX_ND_OPTIONS, NEIGH_ADVERT, NEIGH_SOLICIT, NH_AUTH, NH_FRAGMENT, NH_ICMPV6, OPT_SOURCE_LL, OPT_TARGET_LL,
    REDIRECT, ROUTER_ADVERT, ROUTER_SOLICIT, WINDOW, is_extension,
};

/// What an IPv6 packet says about its sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Sender {
    /// Shorter than the fixed header: its receiver drops it, it claims nothing.
    Runt,
    /// Any other packet from `src`; `icmp` is its ICMPv6 type (0 for other upper layers).
    Plain { src: [u8; 16], icmp: u8 },
    /// Neighbour discovery (RS, NS, NA) from `src`: its target (none in an RS) and the
    /// link-layer address option its receiver uses (`ipv6::nd`'s rule).
    Nd { src: [u8; 16], icmp: u8, target: [u8; 16], ll: Option<[u8; 6]> },
    /// A router advertisement or redirect.
    Router,
    /// The upper layer is not found within the bounds, or neighbour discovery is fragmented.
    Hidden,
}

/// The byte at `at` of `p`.
fn byte(p: &[u8], at: usize) -> Option<u8> {
    p.get(at).copied()
}

/// `Sender` of the IPv6 packet `p` (from its fixed header on).
pub(super) fn sender(p: &[u8]) -> Sender {
    let (Some(first), Some(src)) = (byte(p, 6), p.get(8..24)) else { return Sender::Runt };
    let src: [u8; 16] = src.try_into().expect("16 bytes");
    let plain = Sender::Plain { src, icmp: 0 };
    let (mut nh, mut off, mut fragmented) = (first, HLEN, false);
    for _ in 0..switch_common::ipv6::MAX_EXT_HEADERS {
        if !is_extension(nh) {
            break;
        }
        if off + 8 > WINDOW {
            return Sender::Hidden;
        }
        let (Some(next), Some(len)) = (byte(p, off), byte(p, off + 1)) else { return Sender::Hidden };
        match nh {
            NH_FRAGMENT => {
                let Some(&[hi, lo]) = p.get(off + 2..off + 4).map(|b| <&[u8; 2]>::try_from(b).expect("2 bytes")) else {
                    return Sender::Hidden;
                };
                if u16::from_be_bytes([hi, lo]) & 0xfff8 != 0 {
                    return plain;
                }
                fragmented = true;
                off += 8;
            }
            NH_AUTH => off += (len as usize + 2) * 4,
            _ => off += (len as usize + 1) * 8,
        }
        nh = next;
    }
    if is_extension(nh) {
        return Sender::Hidden;
    }
    if nh != NH_ICMPV6 {
        return plain;
    }
    icmp(p, off, src, fragmented)
}

/// The ICMPv6 message at `off` of `p`, from `src`.
fn icmp(p: &[u8], off: usize, src: [u8; 16], fragmented: bool) -> Sender {
    if off + 4 > WINDOW {
        return Sender::Hidden;
    }
    let Some(kind) = byte(p, off) else { return Sender::Plain { src, icmp: 0 } };
    match kind {
        ROUTER_ADVERT | REDIRECT => Sender::Router,
        ROUTER_SOLICIT | NEIGH_SOLICIT | NEIGH_ADVERT if fragmented => Sender::Hidden,
        ROUTER_SOLICIT | NEIGH_SOLICIT | NEIGH_ADVERT => nd(p, off, src, kind),
        _ => Sender::Plain { src, icmp: kind },
    }
}

/// Neighbour discovery of type `kind` at `off` of `p`.
fn nd(p: &[u8], off: usize, src: [u8; 16], kind: u8) -> Sender {
    let body = if kind == ROUTER_SOLICIT { 8 } else { 24 };
    if off + body > WINDOW {
        return Sender::Hidden;
    }
    let mut target = [0; 16];
    if kind != ROUTER_SOLICIT {
        let Some(t) = p.get(off + 8..off + 24) else { return Sender::Plain { src, icmp: kind } };
        target.copy_from_slice(t);
    }
    let wanted = if kind == NEIGH_ADVERT { OPT_TARGET_LL } else { OPT_SOURCE_LL };
    let nd = |ll| Sender::Nd { src, icmp: kind, target, ll };
    let mut opt = off + body;
    for _ in 0..MAX_ND_OPTIONS {
        if opt + 8 > WINDOW {
            return Sender::Hidden;
        }
        let (Some(t), Some(units)) = (byte(p, opt), byte(p, opt + 1)) else { return nd(None) };
        if units == 0 {
            return Sender::Hidden;
        }
        if t == wanted {
            return match p.get(opt + 2..opt + 8) {
                Some(ll) => nd(Some(ll.try_into().expect("6 bytes"))),
                None => Sender::Hidden,
            };
        }
        opt += units as usize * 8;
    }
    if byte(p, opt).is_some() { Sender::Hidden } else { nd(None) }
}
