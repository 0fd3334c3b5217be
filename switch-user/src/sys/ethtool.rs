//! The two ethtool switches the XDP datapath needs on the namespace end of a port, set with
//! the SIOCETHTOOL ioctl (what `ethtool -K` does). Like netlink sockets, the ioctl socket
//! belongs to the namespace of the thread that opens it, so call this on a namespace thread.
use std::{ffi::CString, io, os::fd::AsRawFd as _};

use crate::error::{Context as _, Result};

const ETHTOOL_STXCSUM: u32 = 0x17;
const ETHTOOL_SGRO: u32 = 0x2c;

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

fn set(ifname: &str, cmd: u32, on: bool, what: &str) -> Result<()> {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").context("opening an ioctl socket")?;
    let mut value = EthtoolValue { cmd, data: u32::from(on) };
    let mut req = IfReq { name: [0; libc::IFNAMSIZ], data: (&raw mut value).cast(), _pad: [0; 16] };
    let c =
        CString::new(ifname).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e)).context("interface name")?;
    for (d, s) in req.name.iter_mut().zip(c.as_bytes_with_nul()) {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCETHTOOL with a valid ifreq whose data points at a live ethtool_value.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &raw mut req) } != 0 {
        return Err(io::Error::last_os_error()).context(format!("setting {what} on {ifname}"));
    }
    Ok(())
}

/// Prepares the namespace end of an XDP port: tx checksum offload off (native XDP drops the
/// veth's partial-checksum state, so TCP would carry wrong checksums; TSO goes with it) and GRO
/// on (a veth only accepts XDP-redirected frames when its peer has GRO or an XDP program).
pub fn prepare_for_xdp(ifname: &str) -> Result<()> {
    set(ifname, ETHTOOL_STXCSUM, false, "tx checksum offload")?;
    set(ifname, ETHTOOL_SGRO, true, "GRO")
}
