//! Gratuitous ARP: a new port tells the segment which MAC its address now has.
//!
//! An address given to a new namespace (a container restarted, `ns del` then `ns add`) often
//! had another MAC before. The host and the other namespaces still hold the old one in their
//! neighbour tables and keep sending to it: the kernel re-checks a stale entry only after
//! about 5 s and then probes the old MAC three times, so the new holder is unreachable for
//! seconds (8 s per start measured under podman). An ARP request for its own address from
//! the new port (sender = target = the address) makes every neighbour table that has an entry
//! for the address take the new MAC at once; one that has none is not filled (the kernel's
//! default `arp_accept`). The Linux bridge CNI plugin does the same.
use std::{
    net::Ipv4Addr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use crate::{
    error::{Context as _, Result},
    names::Mac,
};

/// An Ethernet header and an ARP request for IPv4 over Ethernet.
const FRAME_LEN: usize = 42;

/// A packet socket on one interface and the announcement to send on it.
///
/// The socket belongs to the namespace it was opened in, whichever thread sends on it later:
/// it is opened on the namespace's thread while the port is made and used after the host end
/// is up (before that the veth has no carrier and would drop the frame).
pub struct Announcement {
    fd: OwnedFd,
    ifindex: i32,
    frame: [u8; FRAME_LEN],
}

impl Announcement {
    /// Prepares the announcement of `ip` at `mac` on interface `ifindex` of the calling
    /// thread's namespace.
    pub fn open(ifindex: u32, ip: Ipv4Addr, mac: Mac) -> Result<Self> {
        // Protocol 0: the socket only sends, so no frame is ever queued on it.
        // SAFETY: plain socket(2); the result is checked before it is wrapped.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error()).context("opening a packet socket");
        }
        // SAFETY: `raw` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // Straight to the driver, past the queueing discipline: a veth whose peer just came up
        // has its carrier at once, but its qdisc is activated later by the kernel's link
        // watcher, and until then frames sent through it are dropped.
        let on: libc::c_int = 1;
        // SAFETY: the option value is one int, whose size is passed along.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                (&raw const on).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error()).context("setting PACKET_QDISC_BYPASS");
        }
        // Interface indexes are positive ints in the kernel.
        Ok(Self { fd, ifindex: ifindex as i32, frame: frame(ip, mac) })
    }

    /// Sends the announcement once (a veth does not lose it).
    pub fn send(&self) -> Result<()> {
        // SAFETY: sockaddr_ll is plain data; zero is a valid value of every field.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_protocol = (libc::ETH_P_ARP as u16).to_be();
        to.sll_ifindex = self.ifindex;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        // SAFETY: the frame and the address outlive the call, their lengths are passed along.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                self.frame.as_ptr().cast(),
                self.frame.len(),
                0,
                (&raw const to).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if sent != FRAME_LEN as isize {
            return Err(std::io::Error::last_os_error()).context("sending a gratuitous ARP");
        }
        Ok(())
    }
}

/// Broadcast ARP request from `mac` for `ip` with `ip` as the sender (RFC 5227's announcement).
fn frame(ip: Ipv4Addr, mac: Mac) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac.0);
    f[12..14].copy_from_slice(&(libc::ETH_P_ARP as u16).to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    f[16..18].copy_from_slice(&(libc::ETH_P_IP as u16).to_be_bytes());
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&1u16.to_be_bytes()); // request
    f[22..28].copy_from_slice(&mac.0);
    f[28..32].copy_from_slice(&ip.octets());
    // Target hardware address unknown (zero); target protocol address: the same address.
    f[38..42].copy_from_slice(&ip.octets());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_announcement_asks_for_its_own_address() {
        let mac = Mac([0x02, 1, 2, 3, 4, 5]);
        let f = frame(Ipv4Addr::new(10, 1, 2, 3), mac);
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[6..12], &mac.0);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[14..22], &[0, 1, 0x08, 0, 6, 4, 0, 1]);
        assert_eq!(&f[22..28], &mac.0, "sender MAC");
        assert_eq!(&f[28..32], &[10, 1, 2, 3], "sender address");
        assert_eq!(&f[32..38], &[0; 6], "target MAC unknown");
        assert_eq!(&f[38..42], &[10, 1, 2, 3], "target address = sender address");
    }
}
