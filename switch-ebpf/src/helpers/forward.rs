//! Sending a frame on: one port (known unicast) or every other port (flood).
use aya_ebpf::{
    bindings::{TC_ACT_REDIRECT, TC_ACT_SHOT},
    helpers::generated::{bpf_redirect, bpf_redirect_peer},
    programs::TcContext,
};
use switch_common::{MAX_PORTS, PORT_F_TUNNEL};

/// `PACKET_HOST` (linux/if_packet.h): the frame is for this host's stack.
const PACKET_HOST: u32 = 0;

use super::{maps::PORTS, stats, tunnel};

/// Redirects the frame to the port whose host-side veth is `ifindex`.
///
/// With `peer`, `bpf_redirect_peer` hands the frame straight to the ingress of the veth's
/// other end inside the namespace: no transmit on the host end and no trip through the
/// per-CPU backlog. It is only valid from TC ingress, which is where this program runs. The
/// frame was classified PACKET_OTHERHOST on the host end (it does not carry that end's MAC),
/// and the peer does not classify it again: kernels since 6.15 reset `pkt_type` to
/// PACKET_HOST on the way (`skb_scrub_packet`), older ones keep OTHERHOST and the namespace's
/// IP stack drops the frame. So it is set here, as the newer kernels do, and only unicast
/// takes this path. The gateway port's peer lives in the host namespace, out of its reach: the
/// caller passes `peer` false for it.
#[inline(always)]
pub fn unicast(ctx: &TcContext, out_ifindex: u32, out_slot: u32, len: u64, peer: bool) -> i32 {
    // Cannot fail from OTHERHOST or HOST (the only types a frame arriving on a veth has).
    if peer {
        let _ = ctx.change_type(PACKET_HOST);
    }
    // SAFETY: plain helper calls with scalar arguments.
    let ret = unsafe { if peer { bpf_redirect_peer(out_ifindex, 0) } else { bpf_redirect(out_ifindex, 0) } };
    if ret == TC_ACT_REDIRECT as i64 {
        stats::tx(out_slot, len);
        TC_ACT_REDIRECT
    } else {
        stats::tx_error(out_slot);
        TC_ACT_SHOT
    }
}

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
    unicast(ctx, pending_ifindex, pending_slot, len, false)
}

#[inline(always)]
fn send_clone(ctx: &TcContext, ifindex: u32, slot: u32, len: u64) {
    match ctx.clone_redirect(ifindex, 0) {
        Ok(()) => stats::tx(slot, len),
        Err(_) => stats::tx_error(slot),
    }
}
