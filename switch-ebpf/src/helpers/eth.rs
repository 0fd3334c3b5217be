//! Ethernet header access.
use aya_ebpf::programs::TcContext;
use switch_common::ETH_HLEN;

/// The two addresses the switch decides on.
#[derive(Clone, Copy)]
pub struct EthAddrs {
    pub dst: [u8; 6],
    pub src: [u8; 6],
}

/// Reads destination and source MAC from the packet at `[data, data_end)`, or `None` if it is
/// shorter than an Ethernet header. Nothing past the header is looked at: the switch forwards
/// at layer 2, so an IPv6, VLAN-tagged or odd EtherType frame is switched like any other.
#[inline(always)]
pub fn parse_bounds(data: usize, data_end: usize) -> Option<EthAddrs> {
    // The verifier only allows reads after this exact comparison against data_end.
    if data + ETH_HLEN > data_end {
        return None;
    }
    let p = data as *const [u8; 6];
    // SAFETY: the 14-byte header is inside [data, data_end), checked just above.
    unsafe { Some(EthAddrs { dst: *p, src: *p.add(1) }) }
}

/// `parse_bounds` for a TC program.
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
    parse_bounds(ctx.data(), ctx.data_end())
}
