//! Sending a frame on from XDP: one port (known unicast) or every other port (flood), both
//! through the switch's devmap of ports.
use aya_ebpf::bindings::{BPF_F_BROADCAST, BPF_F_EXCLUDE_INGRESS, xdp_action};
use switch_common::MAX_PORTS;

use super::{
    maps::{PORT_DEVMAP, PORTS},
    stats,
};

/// Redirects to the host-side veth `out_ifindex`; the veth hands the frame to its peer in the
/// namespace (which needs GRO or an XDP program to accept redirected frames: the controller
/// turns GRO on).
#[inline(always)]
pub fn unicast(out_ifindex: u32, out_slot: u32, len: u64) -> u32 {
    match PORT_DEVMAP.redirect(out_ifindex, 0) {
        Ok(action) => {
            stats::tx(out_slot, len);
            action
        }
        Err(_) => {
            stats::tx_error(out_slot);
            xdp_action::XDP_DROP
        }
    }
}

/// Broadcasts to every port in the devmap but the ingress one; the kernel makes the copies.
#[inline(always)]
pub fn flood(in_ifindex: u32, slot_limit: u32, len: u64) -> u32 {
    // The devmap does the copying, so the per-port tx counters are kept here, by a bounded
    // walk over the same port list.
    for slot in 0..MAX_PORTS {
        if slot >= slot_limit {
            break;
        }
        let Some(port) = PORTS.get(slot) else { break };
        if port.ifindex != 0 && port.ifindex != in_ifindex {
            stats::tx(port.slot, len);
        }
    }
    PORT_DEVMAP.redirect(0, (BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS) as u64).unwrap_or(xdp_action::XDP_DROP)
}
