//! Redirecting a frame to one port: the last step of known unicast, of a flood (its last
//! port) and of a frame for the tunnel that the kernel's VXLAN device encapsulates. A leaf:
//! `forward` and `tunnel` both use it.
use aya_ebpf::{
    bindings::{TC_ACT_REDIRECT, TC_ACT_SHOT},
    helpers::generated::{bpf_redirect, bpf_redirect_peer},
    programs::TcContext,
};

use super::stats;

/// `PACKET_HOST` (linux/if_packet.h): the frame is for this host's stack.
const PACKET_HOST: u32 = 0;

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
