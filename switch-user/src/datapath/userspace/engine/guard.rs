//! Port security, as the eBPF datapath has it (`switch-ebpf/src/helpers/decide.rs`): a port
//! bound to a MAC accepts only frames from it; bound to an address, only IPv4 from it
//! (0.0.0.0 allowed, for DHCP) and ARP claiming nothing else. MACs reserved for ports (bound
//! ones and the gateway's) are never taken by another port.
use serde::{Deserialize, Serialize};
use switch_common::{PORT_F_BIND_IP, PORT_F_BIND_MAC};

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
            _ => None,
        }
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
        let g = Guard { flags: PORT_F_BIND_MAC | PORT_F_BIND_IP, mac: OWN, ip: u32::from_ne_bytes(IP), prefix: 0 };
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
        assert_eq!(g.check(&frame(OWN, [0x86, 0xdd], &[]), &OWN), None, "other protocols: MAC only");
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
}
