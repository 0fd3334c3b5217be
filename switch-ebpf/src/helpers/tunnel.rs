//! The tunnel port: the switch's collect-metadata VXLAN device, which carries frames to the
//! switches of other hosts (its peers) and brings theirs in.
//!
//! ```text
//!  local port ──► [switch_ingress] decide
//!                   known dst behind the tunnel, IPv4, peer's next hop known to the FIB:
//!                     push outer IPv4/UDP/VXLAN headers here (`encap`) ── redirect ──► underlay
//!                   otherwise: set the key (VNI, peer) ── redirect ──► vxlan (the kernel's)
//!                   flood: every local port, and one copy per peer (head-end replication)
//!  underlay ──UDP 4789──► vxlan (the kernel decapsulates: VNI filter) ──► [tunnel_ingress]
//!                   key's VNI the segment's and its source a peer? else drop (`admit`)
//!                   decide, learning the source at that peer; known dst: redirect to its
//!                   port; flood: local ports only (split horizon: never back into the tunnel)
//! ```
//! The kernel's VXLAN device decapsulates (its VNI filter already drops other VNIs; the
//! checks here make the segment's boundary the switch's own, whatever the device is told)
//! and encapsulates floods, ARP and whatever the fast path leaves to it.
use aya_ebpf::{
    bindings::{
        BPF_F_ADJ_ROOM_ENCAP_L2_ETH, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L4_UDP,
        BPF_F_ADJ_ROOM_FIXED_GSO, BPF_FIB_LKUP_RET_SUCCESS, TC_ACT_REDIRECT, TC_ACT_SHOT,
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, bpf_fib_lookup, bpf_tunnel_key,
    },
    helpers::generated::{
        bpf_fib_lookup as fib_lookup, bpf_get_hash_recalc, bpf_redirect, bpf_skb_get_tunnel_key, bpf_skb_set_tunnel_key,
    },
    programs::TcContext,
};
use switch_common::{MAX_PEERS, MacKey, Port, TunnelConfig};

use super::{
    eth::{L3_ARP, L3_IPV4, L3_IPV6, L3Src},
    fdb,
    maps::{BOUND, BOUND_IP, PEER_SLOTS, PEERS, TUNNEL},
    redirect,
    stats::{self, SPOOFED_ARP, SPOOFED_IP},
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

/// Port security towards the tunnel: whether a frame from a peer claims what this host's own
/// ports are bound to, and how. ARP whose sender address is a local port's bound address, or
/// whose sender MAC is a bound MAC, is `SPOOFED_ARP`; IPv4 from a bound address `SPOOFED_IP`;
/// IPv6 as `ipv6::check_peer` judges it.
/// The tunnel port itself is bound to nothing (it carries every remote station), so this is
/// the rule it gets instead; a bound MAC as the frame's source is refused by learning
/// (`fdb::BOUND_ELSEWHERE`), as from any port. `l3` reads the frame's layer-3 sender.
#[inline(always)]
pub fn claims_local(l3: impl FnOnce(Option<&Port>) -> L3Src) -> Option<u32> {
    // No port: IPv6 is judged against this host's bound ports (`ipv6::check_peer`).
    let l3 = l3(None);
    // 0.0.0.0 (a DHCP client, an ARP probe) is no claim, and never bound.
    // SAFETY: hash lookups, values not kept.
    let bound_ip = l3.ip != 0 && unsafe { BOUND_IP.get(&l3.ip) }.is_some();
    match l3.kind {
        L3_IPV4 if bound_ip => Some(SPOOFED_IP),
        // SAFETY: as above.
        L3_ARP if bound_ip || unsafe { BOUND.get(&MacKey::new(l3.sha)) }.is_some() => Some(SPOOFED_ARP),
        L3_IPV6 if l3.v6 != 0 => Some(l3.v6),
        _ => None,
    }
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
/// peer the FDB has it at. IPv4 frames whose peer the FIB can reach right now are
/// encapsulated here and sent straight out of the underlay (`encap`); the rest (ARP, a peer
/// whose neighbour is not resolved yet, a frame too big for the underlay) go through the
/// VXLAN device, which also resolves the neighbour for the next ones.
#[inline(always)]
pub fn to_peer(ctx: &TcContext, out_ifindex: u32, out_slot: u32, len: u64) -> i32 {
    let tun = config();
    let remote = match ctx.load::<[u8; 6]>(0) {
        Ok(dst) => fdb::remote_of(dst),
        Err(_) => 0,
    };
    if remote == 0 {
        stats::tx_error(out_slot);
        return TC_ACT_SHOT;
    }
    match encap(ctx, &tun, remote) {
        Encap::Sent => {
            stats::tx(out_slot, len);
            return TC_ACT_REDIRECT;
        }
        Encap::Broken => {
            stats::tx_error(out_slot);
            return TC_ACT_SHOT;
        }
        Encap::Device => {}
    }
    if !set_key(ctx, &tun, remote) {
        stats::tx_error(out_slot);
        return TC_ACT_SHOT;
    }
    redirect::unicast(ctx, out_ifindex, out_slot, len, false)
}

/// What `encap` did.
enum Encap {
    /// Encapsulated and redirected to the underlay.
    Sent,
    /// Not touched: the VXLAN device is to send it.
    Device,
    /// Changed half-way by a helper that failed: it must be dropped.
    Broken,
}

/// The outer headers and the inner Ethernet header: IPv4 (20), UDP (8), VXLAN (8), Ethernet.
const ENCAP_LEN: usize = 20 + 8 + 8 + 14;
/// EtherType of IPv4, in network order as `__sk_buff.protocol` holds it.
const ETH_P_IP_BE: u32 = 0x0008;

/// Encapsulates the frame in VXLAN for peer `remote` (network order) and redirects it to the
/// underlay, as the VXLAN device would but without its route lookup (a metadata tunnel key is
/// never cached), the host's IP output path and the device's transmit: `bpf_skb_adjust_room`
/// makes room behind the Ethernet header (marking the skb as UDP-tunnel encapsulated, so GSO
/// frames are segmented right), the FIB gives the next hop's MACs. The outer UDP checksum is
/// zero, as RFC 7348 allows over IPv4; DF is set (the namespaces' MTU leaves room for the
/// headers, and a frame that would not fit is left to the device).
#[inline(always)]
fn encap(ctx: &TcContext, tun: &TunnelConfig, remote: u32) -> Encap {
    // SAFETY: fields of the program's own `__sk_buff`.
    let (protocol, gso_size) = unsafe { ((*ctx.skb.skb).protocol, (*ctx.skb.skb).gso_size) };
    // adjust_room refuses anything but IP; ARP goes through the device.
    if tun.underlay == 0 || tun.port == 0 || protocol != ETH_P_IP_BE {
        return Encap::Device;
    }
    // The outer IPv4 packet: the headers and the whole inner frame.
    let outer_len = ctx.len() as usize - 14 + ENCAP_LEN;
    // SAFETY: all-zero is a valid bpf_fib_lookup (the kernel fills the outputs).
    let mut p: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    p.family = 2; // AF_INET
    p.l4_protocol = 17;
    // As if the packet arrived on the VXLAN device (forwarding is on there, and nothing it
    // receives reaches the stack): an output lookup would need forwarding on the underlay.
    p.ifindex = tun.ifindex;
    // A whole frame is checked against the egress MTU once encapsulated; a GSO frame's
    // segments are (the namespaces' MTU is the underlay's less the headers).
    if gso_size == 0 {
        p.__bindgen_anon_1.tot_len = outer_len as u16;
    }
    p.__bindgen_anon_3.ipv4_src = tun.local;
    p.__bindgen_anon_4.ipv4_dst = remote;
    // SAFETY: helper with the program's context and a parameter block of the right size.
    let r = unsafe { fib_lookup(ctx.skb.skb.cast(), &mut p, core::mem::size_of::<bpf_fib_lookup>() as i32, 0) };
    // Only out of the underlay (a route elsewhere is the device's business).
    if r != BPF_FIB_LKUP_RET_SUCCESS as i64 || p.ifindex != tun.underlay {
        return Encap::Device;
    }
    let Ok(inner) = ctx.load::<[u8; 14]>(0) else { return Encap::Device };
    // SAFETY: helper on the program's own skb.
    let hash = unsafe { bpf_get_hash_recalc(ctx.skb.skb) };
    // The inner Ethernet header is the encapsulation's "L2": the inner MAC header offset then
    // points at it, as the kernel's VXLAN sets it, and GSO cuts UDP + VXLAN as the tunnel
    // header (counting the VXLAN header into the L2 makes software segmentation read the
    // VXLAN header as the inner Ethernet and drop every segment).
    let l2 = 14u64;
    let flags = (BPF_F_ADJ_ROOM_FIXED_GSO
        | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4
        | BPF_F_ADJ_ROOM_ENCAP_L4_UDP
        | BPF_F_ADJ_ROOM_ENCAP_L2_ETH) as u64
        | (l2 << 56);
    if ctx.adjust_room(ENCAP_LEN as i32, BPF_ADJ_ROOM_MAC, flags).is_err() {
        return Encap::Device;
    }
    let h = headers(tun, remote, outer_len as u32, hash, &inner);
    let eth = outer_eth(&p.dmac, &p.smac);
    if ctx.store(14, &h, 0).is_err() || ctx.store(0, &eth, 0).is_err() {
        return Encap::Broken;
    }
    // SAFETY: helper with scalar arguments.
    if unsafe { bpf_redirect(p.ifindex, 0) } != TC_ACT_REDIRECT as i64 {
        return Encap::Broken;
    }
    Encap::Sent
}

/// The outer Ethernet header: to the next hop, from the underlay, IPv4.
#[inline(always)]
fn outer_eth(dmac: &[u8; 6], smac: &[u8; 6]) -> [u8; 14] {
    let mut e = [0u8; 14];
    e[..6].copy_from_slice(dmac);
    e[6..12].copy_from_slice(smac);
    e[12] = 0x08;
    e
}

/// Outer IPv4, UDP and VXLAN headers and the inner Ethernet header of a frame whose outer IP
/// packet is `ip_len` bytes (more for a GSO frame: segmentation writes each segment's).
#[inline(always)]
fn headers(tun: &TunnelConfig, remote: u32, ip_len: u32, hash: u32, inner: &[u8; 14]) -> [u8; ENCAP_LEN] {
    let mut h = [0u8; ENCAP_LEN];
    let tot = if ip_len > 0xffff { 0xffff } else { ip_len } as u16;
    h[0] = 0x45;
    h[2..4].copy_from_slice(&tot.to_be_bytes());
    h[6] = 0x40; // DF
    h[8] = OUTER_TTL;
    h[9] = 17;
    h[12..16].copy_from_slice(&tun.local.to_ne_bytes());
    h[16..20].copy_from_slice(&remote.to_ne_bytes());
    let csum = ip_checksum(&h);
    h[10..12].copy_from_slice(&csum.to_be_bytes());
    // UDP: a source port from the inner flow's hash, so the underlay spreads flows (as the
    // kernel's VXLAN does); checksum zero.
    let sport = 49152 | ((hash ^ (hash >> 16)) & 0x3fff) as u16;
    h[20..22].copy_from_slice(&sport.to_be_bytes());
    h[22..24].copy_from_slice(&tun.port.to_be_bytes());
    h[24..26].copy_from_slice(&(tot.wrapping_sub(20)).to_be_bytes());
    // VXLAN: the I flag and the VNI.
    h[28] = 0x08;
    h[32] = (tun.vni >> 16) as u8;
    h[33] = (tun.vni >> 8) as u8;
    h[34] = tun.vni as u8;
    h[36..50].copy_from_slice(inner);
    h
}

/// The IPv4 header checksum of the first 20 bytes of `h` (its checksum field zero).
#[inline(always)]
fn ip_checksum(h: &[u8; ENCAP_LEN]) -> u16 {
    let mut sum: u32 = 0;
    for i in 0..10 {
        sum += u32::from(u16::from_be_bytes([h[2 * i], h[2 * i + 1]]));
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
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
