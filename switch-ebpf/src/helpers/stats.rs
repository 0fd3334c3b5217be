//! Per-port and per-table counters. Each CPU owns its copy, so plain adds are race-free.
use switch_common::{PortStats, TABLE_STATS_DATAPATH, TableStats};

use super::maps::{STATS, TABLE_STATS};

#[inline(always)]
fn with(slot: u32, f: impl FnOnce(&mut PortStats)) {
    if let Some(p) = STATS.get_ptr_mut(slot) {
        // SAFETY: per-CPU array value of this CPU; the program cannot be preempted by itself
        // on the same CPU while it runs.
        f(unsafe { &mut *p })
    }
}

#[inline(always)]
pub fn rx(slot: u32, len: u64) {
    with(slot, |s| {
        s.rx_packets += 1;
        s.rx_bytes += len;
    })
}

#[inline(always)]
pub fn tx(slot: u32, len: u64) {
    with(slot, |s| {
        s.tx_packets += 1;
        s.tx_bytes += len;
    })
}

#[inline(always)]
pub fn tx_error(slot: u32) {
    with(slot, |s| s.tx_errors += 1)
}

#[inline(always)]
pub fn flooded(slot: u32) {
    with(slot, |s| s.flooded_packets += 1)
}

#[inline(always)]
pub fn dropped(slot: u32) {
    with(slot, |s| s.dropped_packets += 1)
}

#[inline(always)]
pub fn malformed(slot: u32) {
    with(slot, |s| {
        s.dropped_packets += 1;
        s.malformed_packets += 1;
    })
}

/// Why port security dropped a frame.
pub const SPOOFED_MAC: u32 = 0;
/// IPv4 from another address.
pub const SPOOFED_IP: u32 = 1;
/// ARP claiming another MAC or address.
pub const SPOOFED_ARP: u32 = 2;
/// A VLAN-tagged frame from a port with port security.
pub const SPOOFED_TAGGED: u32 = 3;
/// IPv6 neighbour discovery claiming another MAC or address.
pub const SPOOFED_ND: u32 = 4;
/// An IPv6 router advertisement or redirect (RA guard).
pub const SPOOFED_ROUTER: u32 = 5;
/// IPv6 whose upper layer port security could not find (counted as malformed).
pub const SPOOFED_UNPARSED: u32 = 6;

/// A frame port security dropped, by reason.
#[inline(always)]
pub fn spoofed(slot: u32, reason: u32) {
    with(slot, |s| {
        s.dropped_packets += 1;
        match reason {
            SPOOFED_MAC => s.spoofed_mac += 1,
            SPOOFED_IP => s.spoofed_ip += 1,
            SPOOFED_TAGGED => s.tagged += 1,
            SPOOFED_ND => s.spoofed_nd += 1,
            SPOOFED_ROUTER => s.router_guard += 1,
            SPOOFED_UNPARSED => s.malformed_packets += 1,
            _ => s.spoofed_arp += 1,
        }
    })
}

/// A new station dropped: its port reached the learning limit.
#[inline(always)]
pub fn mac_limit(slot: u32) {
    with(slot, |s| {
        s.dropped_packets += 1;
        s.mac_limit += 1;
    })
}

/// Counts into the programs' half of `TABLE_STATS`.
#[inline(always)]
pub fn table(f: impl FnOnce(&mut TableStats)) {
    if let Some(t) = TABLE_STATS.get_ptr_mut(TABLE_STATS_DATAPATH) {
        // SAFETY: as in `with`.
        f(unsafe { &mut *t })
    }
}
