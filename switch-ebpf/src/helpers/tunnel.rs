//! The tunnel port: the switch's collect-metadata VXLAN device, which carries frames to the
//! switches of other hosts (its peers) and brings theirs in.
//!
//! ```text
//!  local port ──► [switch_ingress] decide
//!                   known dst behind the tunnel: set the key (VNI, peer) ── redirect ──► vxlan
//!                   flood: every local port, and one copy per peer (head-end replication)
//!  underlay ──UDP 4789──► vxlan (the kernel decapsulates: VNI filter) ──► [tunnel_ingress]
//!                   key's VNI the segment's and its source a peer? else drop (`admit`)
//!                   decide, learning the source at that peer; known dst: redirect to its
//!                   port; flood: local ports only (split horizon: never back into the tunnel)
//! ```
//! The kernel's VXLAN device does the encapsulation (and GSO), its VNI filter already drops
//! other VNIs; the checks here make the segment's boundary the switch's own, whatever the
//! device is told.
use aya_ebpf::{
    bindings::{TC_ACT_SHOT, bpf_tunnel_key},
    helpers::generated::{bpf_skb_get_tunnel_key, bpf_skb_set_tunnel_key},
    programs::TcContext,
};
use switch_common::{MAX_PEERS, TunnelConfig};

use super::{
    fdb, forward,
    maps::{PEER_SLOTS, PEERS, TUNNEL},
    stats,
};

/// TTL of the outer IPv4 header.
const OUTER_TTL: u8 = 64;

/// The tunnel port's settings (all zero without a tunnel).
#[inline(always)]
fn config() -> TunnelConfig {
    TUNNEL.get(0).copied().unwrap_or_default()
}

/// Where a frame that came out of the VXLAN device `in_ifindex` came from: the peer's
/// address (network order), if the frame is the segment's (its VNI) and the peer is known.
/// Anything else is dropped and counted on the tunnel port: the underlay is not trusted.
#[inline(always)]
pub fn admit(ctx: &TcContext, in_ifindex: u32) -> Option<u32> {
    let tun = config();
    if tun.ifindex != in_ifindex {
        // Not the switch's tunnel (a device being made or removed): nothing enters.
        return None;
    }
    // SAFETY: all-zero is a valid key; the helper fills it from the skb's tunnel metadata.
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    // SAFETY: helper with the program's own skb and a key of the size passed.
    let r = unsafe { bpf_skb_get_tunnel_key(ctx.skb.skb, &mut key, core::mem::size_of::<bpf_tunnel_key>() as u32, 0) };
    // SAFETY: remote_ipv4 is the member an IPv4 tunnel fills (host order).
    let remote = u32::to_be(unsafe { key.__bindgen_anon_1.remote_ipv4 });
    // SAFETY: hash lookup, value not kept.
    if r != 0 || key.tunnel_id != tun.vni || remote == 0 || unsafe { PEER_SLOTS.get(&remote) }.is_none() {
        stats::dropped(tun.slot);
        return None;
    }
    Some(remote)
}

/// Gives the frame the tunnel key of peer `remote` (network order): the VXLAN device sends
/// it there with the segment's VNI, from the local VTEP address.
#[inline(always)]
fn set_key(ctx: &TcContext, tun: &TunnelConfig, remote: u32) -> bool {
    // SAFETY: all-zero is a valid key.
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    key.tunnel_id = tun.vni;
    key.__bindgen_anon_1.remote_ipv4 = u32::from_be(remote);
    key.__bindgen_anon_3.local_ipv4 = u32::from_be(tun.local);
    key.tunnel_ttl = OUTER_TTL;
    // SAFETY: helper with the program's own skb and a key of the size passed.
    unsafe { bpf_skb_set_tunnel_key(ctx.skb.skb, &mut key, core::mem::size_of::<bpf_tunnel_key>() as u32, 0) == 0 }
}

/// Known unicast to a station behind the tunnel port (`out_ifindex`, slot `out_slot`): to the
/// peer the FDB has it at.
#[inline(always)]
pub fn to_peer(ctx: &TcContext, out_ifindex: u32, out_slot: u32, len: u64) -> i32 {
    let tun = config();
    let remote = match ctx.load::<[u8; 6]>(0) {
        Ok(dst) => fdb::remote_of(dst),
        Err(_) => 0,
    };
    if remote == 0 || !set_key(ctx, &tun, remote) {
        stats::tx_error(out_slot);
        return TC_ACT_SHOT;
    }
    forward::unicast(ctx, out_ifindex, out_slot, len, false)
}

/// Head-end replication of a flooded frame: one copy to every peer, unless the frame came
/// from the tunnel (split horizon: each host floods what its own ports send, so a frame from
/// a peer has reached every other peer already). Copies are sent at once (`bpf_clone_redirect`
/// transmits before it returns), so each carries the key set just before it.
#[inline(always)]
pub fn replicate(ctx: &TcContext, in_ifindex: u32, len: u64) {
    let tun = config();
    if tun.ifindex == 0 || tun.ifindex == in_ifindex {
        return;
    }
    let limit = if tun.peer_limit > MAX_PEERS { MAX_PEERS } else { tun.peer_limit };
    // The constant bound lets the verifier prove termination; `limit` ends it early.
    for i in 0..MAX_PEERS {
        if i >= limit {
            break;
        }
        let Some(p) = PEERS.get(i) else { break };
        let addr = p.addr;
        if addr == 0 {
            continue;
        }
        if set_key(ctx, &tun, addr) && ctx.clone_redirect(tun.ifindex, 0).is_ok() {
            stats::tx(tun.slot, len);
        } else {
            stats::tx_error(tun.slot);
        }
    }
}
