//! Flooding a frame: a copy to every other port, and one per peer of the tunnel port.
use aya_ebpf::{bindings::TC_ACT_SHOT, programs::TcContext};
use switch_common::{MAX_PORTS, PORT_F_TUNNEL};

use super::{maps::PORTS, redirect, stats, tunnel};

/// Sends a copy of the frame to every port of the switch except the one it came in on.
///
/// ```text
///   ingress port 0         ports 1..n-1 (slot order)
///   ──frame──►  clone ──► port 1 egress
///               clone ──► port 2 egress
///               ...
///               redirect (the original, no copy) ──► last port egress
/// ```
///
/// The last eligible port gets the original skb through `bpf_redirect`, so a switch with two
/// ports floods without copying at all. Flooded copies go to the host end's egress (not the
/// peer's ingress) so the namespace side classifies broadcast and multicast itself. The
/// tunnel port is not one copy but one per peer (`tunnel::replicate`), each with its key.
#[inline(always)]
pub fn flood(ctx: &TcContext, in_ifindex: u32, slot_limit: u32, len: u64) -> i32 {
    // Port of the previous iteration, sent a clone once we know another port follows it.
    // Plain integers with 0 meaning "none" rather than an Option: LLVM leaves the payload of
    // a None undefined and may spill that undefined register, which the verifier rejects
    // ("!read_ok").
    let mut pending_ifindex: u32 = 0;
    let mut pending_slot: u32 = 0;
    // The constant bound lets the verifier prove termination; slot_limit ends it early.
    for slot in 0..MAX_PORTS {
        if slot >= slot_limit {
            break;
        }
        let Some(port) = PORTS.get(slot) else { break };
        let ifindex = port.ifindex;
        if ifindex == 0 || ifindex == in_ifindex || port.flags & PORT_F_TUNNEL != 0 {
            continue;
        }
        if pending_ifindex != 0 {
            send_clone(ctx, pending_ifindex, pending_slot, len);
        }
        pending_ifindex = ifindex;
        pending_slot = port.slot;
    }
    tunnel::replicate(ctx, in_ifindex, len);
    if pending_ifindex == 0 {
        // Only local port of its switch: nowhere (else) to flood to.
        return TC_ACT_SHOT;
    }
    redirect::unicast(ctx, pending_ifindex, pending_slot, len, false)
}

#[inline(always)]
fn send_clone(ctx: &TcContext, ifindex: u32, slot: u32, len: u64) {
    match ctx.clone_redirect(ifindex, 0) {
        Ok(()) => stats::tx(slot, len),
        Err(_) => stats::tx_error(slot),
    }
}
