//! Flows the host translated back into the segment: a Service (kube-proxy's DNAT, or any
//! DNAT on the host) whose endpoint is a station of this switch, reached from another.
//!
//! ```text
//!  pod A ──(A → ClusterIP:80)──► switch ──► gateway: the host DNATs to B:8080 ──┐
//!                                                                              │
//!  [switch_ingress on the gateway port] ◄── (A → B:8080) ◄─────────────────────┘
//!      note(): from the host, from a station of the segment: B answers A through the host
//!  pod B ──(B:8080 → A)──► [switch_ingress] via_host() ──► the gateway (its MAC written in)
//!      the host un-DNATs: (ClusterIP:80 → A) ──► switch ──► pod A
//! ```
//!
//! Switched straight to A, B's answer would come from an address A never spoke to, and A
//! would reset it: the Linux bridge needs `br_netfilter` for the same reason. Nothing here
//! reads the host's rules or its connection tracking: the only sign used is where a packet
//! comes from, so iptables (legacy or nft), nftables and IPVS all work alike, and a switch on
//! which the host never translates anything pays one flag test per frame (`on`).
//!
//! What a station can do with it: make the host route its own packets back into the segment
//! (a packet to a neighbour sent to the gateway's MAC), so that its neighbour's answers to it
//! go through the host too. That only costs itself a detour; it cannot name another station
//! as the client (port security binds its address), and entries it makes age out of the LRU
//! table before active ones (each answer refreshes its entry).
use aya_ebpf::programs::TcContext;
use switch_common::{CtKey, HostFlow, Port};

use super::{
    config::Config,
    forward_xdp,
    ipv4::{self, Flow},
    maps::{HOST_FLOWS, HOST_FLOWS_ON, PORTS},
    redirect,
};

/// Whether the host has ever translated a flow into this segment. Off, the switched frames
/// pay this one array read (inlined by the verifier) and nothing else.
#[inline(always)]
pub fn on() -> bool {
    HOST_FLOWS_ON.get(0).is_some_and(|v| *v != 0)
}

/// A packet the host sent into the segment through the gateway port `gateway`: if it comes
/// from a station of the segment, the host routed that station's packet back in (and
/// translated it, or it would have been switched), so the flow's answers must go back through
/// the host. Writes only when the entry is new or names another client.
#[inline(always)]
pub fn note(gateway: &Port, f: &Flow) {
    if !gateway.is_station_addr(f.saddr) {
        return;
    }
    let key = CtKey::either_way(f.proto, f.saddr, f.sport, f.daddr, f.dport);
    let flow = HostFlow { client: f.saddr, client_port: f.sport, pad: 0 };
    // SAFETY: hash map lookup; the value is compared at once.
    if unsafe { HOST_FLOWS.get(&key) } == Some(&flow) {
        return;
    }
    // A full LRU table evicts its idlest entry; no other failure is possible.
    let _ = HOST_FLOWS.insert(&key, &flow, 0);
    if !on()
        && let Some(v) = HOST_FLOWS_ON.get_ptr_mut(0)
    {
        // SAFETY: the pointer is the map's own value, valid for the program's run.
        unsafe { *v = 1 };
    }
}

/// Whether a frame switched between two stations is the answer of a flow the host
/// translated, so it must go through the host. A frame from that flow's client straight to
/// the other end means the client now talks to it directly (the flow ended, its ports were
/// reused): the entry is stale and goes.
#[inline(always)]
pub fn via_host(f: &Flow) -> bool {
    let key = CtKey::either_way(f.proto, f.saddr, f.sport, f.daddr, f.dport);
    // SAFETY: hash map lookup; the value is copied out at once.
    let Some(flow) = (unsafe { HOST_FLOWS.get(&key) }).copied() else {
        return false;
    };
    if flow.client == f.daddr && flow.client_port == f.dport {
        return true;
    }
    let _ = HOST_FLOWS.remove(&key);
    false
}

/// `note` for TC: the frame came in on the gateway port `in_slot`.
#[inline(always)]
pub fn note_tc(ctx: &TcContext, in_slot: u32) {
    if let (Some(gateway), Some(f)) = (PORTS.get(in_slot), ipv4::parse(ctx)) {
        note(gateway, &f);
    }
}

/// TC: sends the frame to the gateway port instead of its station when it is the answer of a
/// translated flow (`via_host`), with the gateway's MAC as its destination so the host takes
/// it. `None`: not such a frame (or no gateway), switch it as decided.
#[inline(always)]
pub fn divert_tc(ctx: &TcContext, cfg: &Config, len: u64) -> Option<i32> {
    if cfg.gateway_slot == 0 || !on() {
        return None;
    }
    let f = ipv4::parse(ctx)?;
    if !via_host(&f) {
        return None;
    }
    let slot = cfg.gateway_slot - 1;
    let gateway = PORTS.get(slot)?;
    let (ifindex, mac) = (gateway.ifindex, gateway.mac);
    // The destination MAC is the frame's first 6 bytes; the store cannot fail for a frame
    // that `ipv4::parse` read past them.
    ctx.store(0, &mac, 0).ok()?;
    Some(redirect::unicast(ctx, ifindex, slot, len, false))
}

/// `note` for XDP: the frame at `[data, end)` came in on the gateway port `in_slot`.
#[inline(always)]
pub fn note_xdp(data: usize, end: usize, in_slot: u32) {
    if let (Some(gateway), Some(f)) = (PORTS.get(in_slot), ipv4::parse_bounds(data, end, end - data)) {
        note(gateway, &f);
    }
}

/// `divert_tc` for XDP: the frame at `[data, end)` decided for the port in `out_slot`.
#[inline(always)]
pub fn divert_xdp(data: usize, end: usize, cfg: &Config, out_slot: u32, len: u64) -> Option<u32> {
    if cfg.gateway_slot == 0 || cfg.gateway_slot - 1 == out_slot || !on() {
        return None;
    }
    let f = ipv4::parse_bounds(data, end, end - data)?;
    if !via_host(&f) {
        return None;
    }
    let slot = cfg.gateway_slot - 1;
    let gateway = PORTS.get(slot)?;
    let (ifindex, mac) = (gateway.ifindex, gateway.mac);
    // The verifier wants the bound proven right here, whatever `parse_bounds` checked.
    if data + 6 > end {
        return None;
    }
    // SAFETY: the 6 bytes written are inside [data, end), checked just above.
    unsafe { *(data as *mut [u8; 6]) = mac };
    Some(forward_xdp::unicast(ifindex, slot, len))
}
