//! The switching decision, shared by the TC and the XDP entry programs: which port a frame
//! came in on, whether it is valid, whether the port may send it (port security), what is
//! learned, and where it goes. The entry programs only differ in how they carry the decision
//! out (and in how they read the layer-3 sender: `eth::l3_src` or `eth::l3_src_bounds`).
use switch_common::{PORT_F_BIND_IP, PORT_F_BIND_MAC, Port, events, is_group, is_valid_source};

use super::{
    config::Config,
    eth::{EthAddrs, L3_ARP, L3_IPV4, L3_IPV6, L3Src},
    fdb,
    maps::{PORT_SLOTS, PORTS},
    stats::{self, SPOOFED_ARP, SPOOFED_IP, SPOOFED_MAC, SPOOFED_ND, SPOOFED_ROUTER, SPOOFED_TAGGED, SPOOFED_UNPARSED},
    tunnel,
};

/// The interface is not a port of this switch: leave the frame alone.
pub const NOT_PORT: u32 = 0;
/// Shorter than an Ethernet header.
pub const DROP_MALFORMED: u32 = 1;
/// Group or all-zero source MAC.
pub const DROP_SOURCE: u32 = 2;
/// Destination is behind the port the frame came from.
pub const DROP_SAME_PORT: u32 = 3;
/// Known unicast to `out_ifindex`.
pub const UNICAST: u32 = 4;
/// Broadcast, multicast or unknown unicast.
pub const FLOOD: u32 = 5;
/// Port security: a source MAC, address or ARP claim that is not the port's.
pub const DROP_SPOOFED: u32 = 6;
/// A new station from a port that reached its learning limit.
pub const DROP_MAC_LIMIT: u32 = 7;

/// What to do with a frame. Plain integers rather than an enum with payloads: LLVM leaves the
/// payload of an unused variant undefined and may spill that register, which the verifier
/// rejects ("!read_ok").
/// The last three fields are only for `switch monitor` (`helpers/events.rs`): nothing else
/// reads them.
pub struct Decision {
    pub action: u32,
    pub out_ifindex: u32,
    pub out_slot: u32,
    /// The ingress port's slot and `PORT_F_*` flags (0 for a frame from a tunnel peer).
    pub in_slot: u32,
    pub in_flags: u32,
    /// `events::DROP_*` of a dropped frame, else 0.
    pub drop_reason: u32,
    /// `events::KIND_LEARN` or `KIND_MOVE` if the frame taught the FDB something, else 0.
    pub learned: u32,
    /// With `KIND_MOVE`: the ifindex of the port the station left.
    pub moved_from: u32,
}

impl Decision {
    #[inline(always)]
    const fn new(action: u32) -> Self {
        Self { action, out_ifindex: 0, out_slot: 0, in_slot: 0, in_flags: 0, drop_reason: 0, learned: 0, moved_from: 0 }
    }

    #[inline(always)]
    const fn drop(action: u32, reason: u16) -> Self {
        Self { drop_reason: reason as u32, ..Self::new(action) }
    }
}

/// The event reason of a port-security drop (`stats::SPOOFED_*`).
#[inline(always)]
const fn spoof_reason(reason: u32) -> u16 {
    match reason {
        SPOOFED_MAC => events::DROP_SPOOFED_MAC,
        SPOOFED_IP => events::DROP_SPOOFED_IP,
        SPOOFED_TAGGED => events::DROP_TAGGED,
        SPOOFED_ND => events::DROP_SPOOFED_ND,
        SPOOFED_ROUTER => events::DROP_ROUTER_GUARD,
        SPOOFED_UNPARSED => events::DROP_MALFORMED,
        _ => events::DROP_SPOOFED_ARP,
    }
}

/// Port security of `port` against a frame from `eth.src`: `None` if it may pass, else why
/// not. `l3` reads the frame's layer-3 sender only when the port is bound to an address.
#[inline(always)]
fn spoofed(port: &Port, eth: &EthAddrs, l3: impl FnOnce(Option<&Port>) -> L3Src) -> Option<u32> {
    // A tag hides the frame's real EtherType from the checks below, and the receiver strips
    // it (a priority tag, VID 0) or a VLAN device of its own does: no tagged frame from a
    // bound port, whatever the VID.
    if port.flags & (PORT_F_BIND_MAC | PORT_F_BIND_IP) != 0 && eth.tagged {
        return Some(SPOOFED_TAGGED);
    }
    if port.flags & PORT_F_BIND_MAC != 0 && eth.src != port.mac {
        return Some(SPOOFED_MAC);
    }
    if port.flags & PORT_F_BIND_IP == 0 {
        return None;
    }
    let l3 = l3(Some(port));
    // 0.0.0.0 is a DHCP client's source and an ARP probe's sender: not a claim on anything.
    let claims_other = l3.ip != 0 && l3.ip != port.ip;
    match l3.kind {
        L3_IPV4 if claims_other => Some(SPOOFED_IP),
        L3_ARP if claims_other || l3.sha != port.mac => Some(SPOOFED_ARP),
        L3_IPV6 if l3.v6 != 0 => Some(l3.v6),
        _ => None,
    }
}

/// Decides on a frame of `len` bytes that arrived on `in_ifindex`; counts it and learns its
/// source on the way. `l3` reads the frame's layer-3 sender (for port security; IPv6 is judged
/// against the port it is given).
#[inline(always)]
pub fn decide(
    in_ifindex: u32,
    eth: Option<EthAddrs>,
    l3: impl FnOnce(Option<&Port>) -> L3Src,
    len: u64,
    cfg: &Config,
    now: u64,
) -> Decision {
    decide_at(in_ifindex, 0, eth, l3, len, cfg, now)
}

/// `decide` for a frame that came from peer `remote` through the tunnel port `in_ifindex`
/// (0: from a local port): its source is learned at that peer.
#[inline(always)]
pub fn decide_at(
    in_ifindex: u32,
    remote: u32,
    eth: Option<EthAddrs>,
    l3: impl FnOnce(Option<&Port>) -> L3Src,
    len: u64,
    cfg: &Config,
    now: u64,
) -> Decision {
    // SAFETY: hash map lookup; the value is copied out at once.
    let Some(&in_slot) = (unsafe { PORT_SLOTS.get(&in_ifindex) }) else {
        return Decision::new(NOT_PORT);
    };
    stats::rx(in_slot, len);
    let Some(eth) = eth else {
        stats::malformed(in_slot);
        return Decision::drop(DROP_MALFORMED, events::DROP_MALFORMED);
    };
    if !is_valid_source(&eth.src) {
        // The Linux bridge drops these too, and learning them would poison the table.
        stats::dropped(in_slot);
        return Decision::drop(DROP_SOURCE, events::DROP_INVALID_SOURCE);
    }
    let mut limited = true;
    let mut in_flags = 0;
    if remote != 0 {
        // From a peer: it may not speak for this host's own ports, and a tag would hide a
        // claim from the check as it would from a bound port's. (`decide` passes 0, so this
        // folds away for the local ports' frames: their cost does not change.)
        let claim = if eth.tagged { Some(SPOOFED_TAGGED) } else { tunnel::claims_local(l3) };
        if let Some(reason) = claim {
            stats::spoofed(in_slot, reason);
            return Decision::drop(DROP_SPOOFED, spoof_reason(reason));
        }
    } else if let Some(port) = PORTS.get(in_slot) {
        if let Some(reason) = spoofed(port, &eth, l3) {
            stats::spoofed(in_slot, reason);
            return Decision::drop(DROP_SPOOFED, spoof_reason(reason));
        }
        // A port bound to its MAC only ever learns that one: no limit to keep.
        limited = port.flags & PORT_F_BIND_MAC == 0;
        in_flags = port.flags;
    }
    let learned = fdb::learn(eth.src, in_ifindex, remote, in_slot, limited, cfg, now);
    let (learned, moved_from) = match learned.status {
        fdb::LEARNED_OK => (0, 0),
        fdb::LEARNED_NEW => (events::KIND_LEARN as u32, 0),
        fdb::LEARNED_MOVED => (events::KIND_MOVE as u32, learned.from),
        fdb::BOUND_ELSEWHERE => {
            // Another port's bound MAC, from a port without port security.
            stats::spoofed(in_slot, SPOOFED_MAC);
            return Decision::drop(DROP_SPOOFED, events::DROP_SPOOFED_MAC);
        }
        _ => {
            stats::mac_limit(in_slot);
            return Decision::drop(DROP_MAC_LIMIT, events::DROP_MAC_LIMIT);
        }
    };
    let unicast = Decision { in_slot, in_flags, learned, moved_from, ..Decision::new(UNICAST) };
    if !is_group(&eth.dst)
        && let Some(out_ifindex) = fdb::lookup(eth.dst, now, cfg.ageing_ns).or_else(|| fdb::bound(eth.dst))
    {
        if out_ifindex == in_ifindex {
            // The Linux bridge without hairpin mode drops these too.
            stats::dropped(in_slot);
            return Decision { learned, moved_from, ..Decision::drop(DROP_SAME_PORT, events::DROP_SAME_PORT) };
        }
        // SAFETY: as above.
        match unsafe { PORT_SLOTS.get(&out_ifindex) } {
            Some(&out_slot) => return Decision { out_ifindex, out_slot, ..unicast },
            // The entry points at a port that was removed: forget it and flood.
            None => fdb::forget(eth.dst),
        }
    }
    stats::flooded(in_slot);
    Decision { learned, moved_from, ..Decision::new(FLOOD) }
}
