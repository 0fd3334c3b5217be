//! Per-port counters. Each CPU owns its copy, so plain adds are race-free.
use switch_common::PortStats;

use super::maps::STATS;

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
