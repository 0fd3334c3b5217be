//! Port security, as the eBPF datapath has it (`switch-ebpf/src/helpers/decide.rs`): a port
//! bound to a MAC accepts only frames from it; bound to an address, only IPv4 from it
//! (0.0.0.0 allowed, for DHCP) and ARP claiming nothing else. MACs reserved for ports (bound
//! ones and the gateway's) are never taken by another port.
use serde::{Deserialize, Serialize};
use switch_common::{PORT_F_BIND_IP, PORT_F_BIND_MAC, ipv6::ETH_P_IPV6};

use super::ipv6::{self, Sender};

/// What a port is bound to; the default binds nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guard {
    /// `PORT_F_BIND_*` flags.
    pub flags: u32,
    /// The MAC reserved for the port (all zero: none).
    pub mac: [u8; 6],
    /// The bound address (network order); the gateway's address for the gateway port.
    pub ip: u32,
    /// The gateway port's: prefix length of its address (the segment), else 0 (and then not
    /// sent: the other ports' requests read as they did before it existed).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub prefix: u8,
    /// The bound IPv6 address (all zero: none; not sent then, as `prefix`).
    #[serde(default, skip_serializing_if = "is_unset")]
    pub ip6: [u8; 16],
    /// The port's IPv6 link-local address (`switch_common::ipv6::link_local` of its MAC).
    #[serde(default, skip_serializing_if = "is_unset")]
    pub link_local: [u8; 16],
}

/// Why port security dropped a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Spoof {
    /// Another station's MAC.
    Mac,
    /// IPv4 from another address.
    Ip,
    /// ARP claiming another MAC or address.
    Arp,
    /// A VLAN-tagged frame: the tag hides the EtherType the checks look at, and the receiver
    /// strips it (a priority tag, VID 0) and takes the inner frame.
    Tagged,
    /// IPv6 neighbour discovery claiming another MAC or address.
    Nd,
    /// An IPv6 router advertisement or redirect (RA guard).
    Router,
    /// IPv6 whose upper layer the parser could not find (counted as malformed).
    Unparsed,
}

/// Whether `ethertype` (the two bytes after the MACs) is a VLAN tag protocol identifier:
/// 802.1Q, 802.1ad, and the pre-standard QinQ values 0x9100..0x9300 (as the eBPF datapath's
/// `eth::is_vlan_tpid`).
fn is_vlan_tpid(ethertype: [u8; 2]) -> bool {
    matches!(u16::from_be_bytes(ethertype), 0x8100 | 0x88a8 | 0x9100 | 0x9200 | 0x9300)
}

fn is_zero(v: &u8) -> bool {
    *v == 0
}

fn is_unset(v: &[u8; 16]) -> bool {
    *v == [0; 16]
}

impl Guard {
    /// Whether the port is bound to anything: it then sends no tagged frame.
    pub(super) fn secured(&self) -> bool {
        self.flags & (PORT_F_BIND_MAC | PORT_F_BIND_IP) != 0
    }

    /// `None` if `frame` (at least an Ethernet header, source `src`) may pass, else why not.
    /// A tag the kernel already took out of the bytes (the ring's `TP_STATUS_VLAN_VALID`) is
    /// checked by the caller, with `secured`.
    pub(super) fn check(&self, frame: &[u8], src: &[u8; 6]) -> Option<Spoof> {
        if self.secured() && frame.get(12..14).is_some_and(|t| is_vlan_tpid([t[0], t[1]])) {
            return Some(Spoof::Tagged);
        }
        if self.flags & PORT_F_BIND_MAC != 0 && *src != self.mac {
            return Some(Spoof::Mac);
        }
        if self.flags & PORT_F_BIND_IP == 0 {
            return None;
        }
        let word = |at: usize| frame.get(at..at + 4).map(|b| u32::from_ne_bytes(b.try_into().expect("4 bytes")));
        // 0.0.0.0 is a DHCP client's source and an ARP probe's sender: not a claim on anything.
        let claims_other = |ip: u32| ip != 0 && ip != self.ip;
        match frame.get(12..14) {
            Some([0x08, 0x00]) => word(26).filter(|&ip| claims_other(ip)).map(|_| Spoof::Ip),
            Some([0x08, 0x06]) => match (frame.get(22..28), word(28)) {
                (Some(sha), Some(ip)) if claims_other(ip) || sha != self.mac => Some(Spoof::Arp),
                _ => None,
            },
            Some(t) if u16::from_be_bytes([t[0], t[1]]) == ETH_P_IPV6 => self.check6(&frame[14..]),
            _ => None,
        }
    }

    /// Whether `addr` is one of the port's IPv6 addresses (never `::`).
    fn owns6(&self, addr: &[u8; 16]) -> bool {
        *addr != [0; 16] && (*addr == self.ip6 || *addr == self.link_local)
    }

    /// The IPv6 rule of `check` for packet `p` (the eBPF datapath's `decide::spoofed6`).
    fn check6(&self, p: &[u8]) -> Option<Spoof> {
        use switch_common::ipv6::{MLD_REPORT, MLD2_REPORT, NEIGH_ADVERT, NEIGH_SOLICIT};
        let (src, icmp, nd) = match ipv6::sender(p) {
            Sender::Runt => return None,
            Sender::Router => return Some(Spoof::Router),
            Sender::Hidden => return Some(Spoof::Unparsed),
            Sender::Plain { src, icmp } => (src, icmp, None),
            Sender::Nd { src, icmp, target, ll } => (src, icmp, Some((target, ll))),
        };
        let unspecified = src == [0; 16];
        if unspecified {
            // Duplicate address detection, and listener reports sent before a link-local
            // address exists.
            let early = if nd.is_some() { icmp == NEIGH_SOLICIT } else { icmp == MLD_REPORT || icmp == MLD2_REPORT };
            if !early {
                return Some(Spoof::Ip);
            }
        } else if !self.owns6(&src) {
            return Some(Spoof::Ip);
        }
        let (target, ll) = nd?;
        let target_claimed = icmp == NEIGH_ADVERT || unspecified;
        if (target_claimed && !self.owns6(&target)) || ll.is_some_and(|ll| ll != self.mac) {
            return Some(Spoof::Nd);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const OTHER: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const IP: [u8; 4] = [10, 0, 0, 1];

    fn frame(src: [u8; 6], ethertype: [u8; 2], body: &[(usize, &[u8])]) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[6..12].copy_from_slice(&src);
        f[12..14].copy_from_slice(&ethertype);
        for (at, b) in body {
            f[*at..*at + b.len()].copy_from_slice(b);
        }
        f
    }

    #[test]
    fn a_bound_port_sends_only_as_itself() {
        let g =
            Guard { flags: PORT_F_BIND_MAC | PORT_F_BIND_IP, mac: OWN, ip: u32::from_ne_bytes(IP), ..Guard::default() };
        let ipv4 = |src: [u8; 6], ip: [u8; 4]| frame(src, [8, 0], &[(26, &ip)]);
        let arp = |src: [u8; 6], sha: [u8; 6], ip: [u8; 4]| frame(src, [8, 6], &[(22, &sha), (28, &ip)]);
        assert_eq!(g.check(&ipv4(OWN, IP), &OWN), None);
        assert_eq!(g.check(&ipv4(OWN, [0; 4]), &OWN), None, "DHCP");
        assert_eq!(g.check(&ipv4(OTHER, IP), &OTHER), Some(Spoof::Mac));
        assert_eq!(g.check(&ipv4(OWN, [10, 0, 0, 9]), &OWN), Some(Spoof::Ip));
        assert_eq!(g.check(&arp(OWN, OWN, IP), &OWN), None);
        assert_eq!(g.check(&arp(OWN, OWN, [0; 4]), &OWN), None, "probe");
        assert_eq!(g.check(&arp(OWN, OTHER, IP), &OWN), Some(Spoof::Arp));
        assert_eq!(g.check(&arp(OWN, OWN, [10, 0, 0, 9]), &OWN), Some(Spoof::Arp));
        assert_eq!(g.check(&frame(OWN, [0x88, 0xb5], &[]), &OWN), None, "other protocols: MAC only");
        // Tagged, any VID (0 too: a priority tag), one tag or two, whatever the inner frame.
        for tpid in [[0x81, 0x00], [0x88, 0xa8], [0x91, 0x00], [0x92, 0x00], [0x93, 0x00]] {
            let inner_arp = frame(OWN, tpid, &[(16, &[8, 6])]);
            assert_eq!(g.check(&inner_arp, &OWN), Some(Spoof::Tagged), "{tpid:x?}");
        }
        let mac_only = Guard { flags: PORT_F_BIND_MAC, ..g };
        assert_eq!(mac_only.check(&frame(OWN, [0x81, 0x00], &[]), &OWN), Some(Spoof::Tagged));
        // Unbound: anything goes, tags too.
        assert_eq!(Guard::default().check(&ipv4(OTHER, [10, 0, 0, 9]), &OTHER), None);
        assert_eq!(Guard::default().check(&frame(OTHER, [0x81, 0x00], &[]), &OTHER), None);
    }

    /// An IPv6 frame from OWN: `nh` after the fixed header, `rest` (headers and payload).
    fn ipv6(src: [u8; 16], nh: u8, rest: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[6..12].copy_from_slice(&OWN);
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        f.extend_from_slice(&[0x60, 0, 0, 0, 0, rest.len() as u8, nh, 255]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        f.extend_from_slice(rest);
        f
    }

    /// ICMPv6 of `kind` (checksum not filled: the guard does not look at it): 4 bytes of
    /// flags, `target`, then `options`.
    fn nd(kind: u8, target: [u8; 16], options: &[u8]) -> Vec<u8> {
        let mut m = vec![kind, 0, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&target);
        m.extend_from_slice(options);
        m
    }

    #[test]
    fn ipv6_is_sent_only_from_the_ports_addresses_and_claims_nothing_else() {
        use switch_common::ipv6::link_local;
        let own: [u8; 16] = "fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets();
        let other: [u8; 16] = "fd00::2".parse::<std::net::Ipv6Addr>().unwrap().octets();
        let g = Guard {
            flags: PORT_F_BIND_MAC | PORT_F_BIND_IP,
            mac: OWN,
            ip6: own,
            link_local: link_local(OWN),
            ..Guard::default()
        };
        let udp = [0u8; 8];
        let ll = |kind: u8, mac: [u8; 6]| [&[kind, 1][..], &mac[..]].concat();
        assert_eq!(g.check(&ipv6(own, 17, &udp), &OWN), None);
        assert_eq!(g.check(&ipv6(link_local(OWN), 17, &udp), &OWN), None);
        assert_eq!(g.check(&ipv6(other, 17, &udp), &OWN), Some(Spoof::Ip));
        assert_eq!(g.check(&ipv6(link_local(OTHER), 17, &udp), &OWN), Some(Spoof::Ip));
        assert_eq!(g.check(&ipv6([0; 16], 17, &udp), &OWN), Some(Spoof::Ip), "`::` is only for DAD");
        assert_eq!(g.check(&ipv6([0; 16], 58, &nd(135, own, &[])), &OWN), None, "own DAD");
        assert_eq!(g.check(&ipv6([0; 16], 58, &nd(135, other, &[])), &OWN), Some(Spoof::Nd), "DAD for another");
        assert_eq!(g.check(&ipv6([0; 16], 58, &[143, 0, 0, 0, 0, 0, 0, 0]), &OWN), None, "MLDv2 report");
        assert_eq!(g.check(&ipv6(own, 58, &nd(135, other, &ll(1, OWN))), &OWN), None, "asking about another");
        assert_eq!(g.check(&ipv6(own, 58, &nd(135, other, &ll(1, OTHER))), &OWN), Some(Spoof::Nd));
        let decoy = [ll(2, OWN), ll(1, OTHER)].concat();
        assert_eq!(g.check(&ipv6(own, 58, &nd(135, other, &decoy)), &OWN), Some(Spoof::Nd), "decoy option first");
        assert_eq!(g.check(&ipv6(own, 58, &nd(136, own, &ll(2, OWN))), &OWN), None);
        assert_eq!(g.check(&ipv6(own, 58, &nd(136, other, &ll(2, OWN))), &OWN), Some(Spoof::Nd));
        assert_eq!(g.check(&ipv6(own, 58, &nd(136, own, &ll(2, OTHER))), &OWN), Some(Spoof::Nd));
        assert_eq!(g.check(&ipv6(own, 58, &nd(136, own, &[1, 0, 0, 0, 0, 0, 0, 0])), &OWN), Some(Spoof::Unparsed));
        assert_eq!(g.check(&ipv6(link_local(OWN), 58, &[134; 16]), &OWN), Some(Spoof::Router), "RA");
        assert_eq!(g.check(&ipv6(link_local(OWN), 58, &[137; 40]), &OWN), Some(Spoof::Router), "redirect");
        // An RA behind two option headers; one behind seven is not looked for.
        let hidden = [&[60, 0, 1, 4, 0, 0, 0, 0][..], &[58, 0, 1, 4, 0, 0, 0, 0], &[134; 16]].concat();
        assert_eq!(g.check(&ipv6(link_local(OWN), 0, &hidden), &OWN), Some(Spoof::Router));
        let long: Vec<u8> = (0..7).flat_map(|_| [60u8, 0, 1, 4, 0, 0, 0, 0]).chain(udp).collect();
        assert_eq!(g.check(&ipv6(own, 60, &long), &OWN), Some(Spoof::Unparsed));
        // Neighbour discovery in a first fragment; a later fragment is checked by source only.
        let first = [&[58, 0, 0, 1, 0, 0, 0, 1][..], &nd(136, own, &[])].concat();
        assert_eq!(g.check(&ipv6(own, 44, &first), &OWN), Some(Spoof::Unparsed));
        let later = [&[58, 0, 0, 8, 0, 0, 0, 1][..], &[0; 16]].concat();
        assert_eq!(g.check(&ipv6(own, 44, &later), &OWN), None);
        assert_eq!(g.check(&ipv6(other, 44, &later), &OWN), Some(Spoof::Ip));
        // Shorter than the fixed header: its receiver drops it.
        assert_eq!(g.check(&ipv6(own, 17, &udp)[..40], &OWN), None);
    }
}
