//! The forwarding database: learning and lookup with ageing.
//!
//! Ageing is lazy, as no process runs beside the datapath: a lookup that finds an expired
//! dynamic entry deletes it and treats the destination as unknown, and the controller deletes
//! the rest whenever it reads the table (`switch fdb`).
use switch_common::{FDB_REFRESH_NS, FdbEntry, MacKey};

use super::{
    config::Config,
    maps::{BOUND, FDB, LEARNED, PEER_LEARNED, PORTS},
    stats,
};

/// The station was already known on this port (or is static): switch the frame.
pub const LEARNED_OK: u32 = 0;
/// A new station was learned: switch the frame.
pub const LEARNED_NEW: u32 = 3;
/// A known station moved to this port (`Learned::from` is the port it left): switch the
/// frame.
pub const LEARNED_MOVED: u32 = 4;
/// The MAC is bound to another port: the frame must not be switched.
pub const BOUND_ELSEWHERE: u32 = 1;
/// The port reached its learning limit: a new station is not taken.
pub const OVER_LIMIT: u32 = 2;

/// What `learn` did.
pub struct Learned {
    /// `LEARNED_*`, `BOUND_ELSEWHERE` or `OVER_LIMIT`.
    pub status: u32,
    /// With `LEARNED_MOVED`: the ifindex of the port the station left.
    pub from: u32,
}

impl Learned {
    #[inline(always)]
    const fn just(status: u32) -> Self {
        Self { status, from: 0 }
    }
}

/// Records that `src` was seen on `ifindex` (slot `slot`) at `now`, behind peer `remote` if
/// `ifindex` is the tunnel port (0: a local port; a station that moves from one peer to
/// another is a move, as between ports). `limited`: the port has no bound MAC, so its new
/// stations count against `cfg.max_learned` (behind the tunnel: the peer's own share).
/// `BOUND_ELSEWHERE` and `OVER_LIMIT` mean the frame must not be switched (and nothing was
/// learned).
#[inline(always)]
pub fn learn(src: [u8; 6], ifindex: u32, remote: u32, slot: u32, limited: bool, cfg: &Config, now: u64) -> Learned {
    let key = MacKey::new(src);
    let known = FDB.get_ptr_mut(&key);
    if let Some(e) = known {
        // SAFETY: map values stay valid for the whole program run (RCU).
        let e = unsafe { &mut *e };
        if e.is_static() {
            // Static entries are operator intent: learning never moves them.
            return Learned::just(LEARNED_OK);
        }
        if e.ifindex == ifindex && e.remote == remote {
            // Refresh at most once per FDB_REFRESH_NS: a write per frame would bounce the
            // entry's cache line between CPUs. A u64 store is atomic, so readers never see
            // a torn timestamp.
            if now > e.last_seen_ns + FDB_REFRESH_NS {
                e.last_seen_ns = now;
            }
            return Learned::just(LEARNED_OK);
        }
    }
    // Only a new station or a move reaches here (the fast path above never looks): a MAC
    // bound to another port is never learned elsewhere, whatever the LRU remembers.
    // SAFETY: value copied out at once.
    if let Some(&owner) = unsafe { BOUND.get(&key) }
        && owner != slot
    {
        return Learned::just(BOUND_ELSEWHERE);
    }
    if limited && !take_from_budget(slot, remote, cfg, now) {
        return Learned::just(OVER_LIMIT);
    }
    // SAFETY: as above; read before the insert below replaces the element.
    let from = known.map_or(0, |e| unsafe { (*e).ifindex });
    // New station, or a station that moved port: replace the whole element so a concurrent
    // reader sees either the old port or the new one, never a mix.
    let entry = FdbEntry { ifindex, flags: 0, last_seen_ns: now, remote, pad: 0 };
    if FDB.insert(&key, &entry, 0).is_err() {
        return Learned::just(LEARNED_OK);
    }
    if known.is_some() {
        return Learned { status: LEARNED_MOVED, from };
    }
    // Counted so the controller can tell evictions (which the kernel does silently) from
    // deletions.
    stats::table(|t| t.fdb_added += 1);
    Learned::just(LEARNED_NEW)
}

/// Counts one new station against the learning limit of port `slot`, or of peer `remote`
/// behind the tunnel port (each peer has a limit of its own, so one peer, or a forger of its
/// underlay address, cannot use up the others'); `false` when that share of this ageing
/// period is used up. Only new stations and moves get here, so the common case (a known
/// station) never touches the window.
#[inline(always)]
fn take_from_budget(slot: u32, remote: u32, cfg: &Config, now: u64) -> bool {
    if cfg.max_learned == 0 {
        return true;
    }
    // A peer without a window (a controller older than the map): the tunnel port's.
    let w = if remote != 0 { PEER_LEARNED.get_ptr_mut(&remote) } else { None };
    let Some(w) = w.or_else(|| LEARNED.get_ptr_mut(slot)) else { return true };
    // SAFETY: array or hash value, valid for the program run (a deleted hash element is freed
    // after RCU); racing CPUs can at worst lose an increment (see LEARNED's comment).
    let w = unsafe { &mut *w };
    if now > w.start_ns + cfg.ageing_ns {
        w.start_ns = now;
        w.learned = 0;
    }
    if w.learned >= cfg.max_learned {
        return false;
    }
    w.learned += 1;
    true
}

/// The port a bound MAC belongs to (its host ifindex): known even when the LRU table has
/// evicted or aged the station, so a flood from another port cannot make it unreachable.
#[inline(always)]
pub fn bound(dst: [u8; 6]) -> Option<u32> {
    // SAFETY: values copied out at once.
    let slot = *unsafe { BOUND.get(&MacKey::new(dst)) }?;
    PORTS.get(slot).map(|p| p.ifindex).filter(|&i| i != 0)
}

/// The port `dst` is behind, if known and not expired.
#[inline(always)]
pub fn lookup(dst: [u8; 6], now: u64, ageing_ns: u64) -> Option<u32> {
    let key = MacKey::new(dst);
    let e = FDB.get_ptr(&key)?;
    // SAFETY: as in `learn`.
    let e = unsafe { &*e };
    if e.is_expired(now, ageing_ns) {
        removed(&key);
        return None;
    }
    Some(e.ifindex)
}

/// The peer a station behind the tunnel port is at (0: not known, or not behind a peer).
#[inline(always)]
pub fn remote_of(dst: [u8; 6]) -> u32 {
    // SAFETY: as in `learn`; copied out at once.
    FDB.get_ptr(&MacKey::new(dst)).map_or(0, |e| unsafe { (*e).remote })
}

/// Forgets `dst` (its port is gone).
#[inline(always)]
pub fn forget(dst: [u8; 6]) {
    removed(&MacKey::new(dst));
}

/// Deletes `key`, counting it only when this CPU's delete was the one that worked.
#[inline(always)]
fn removed(key: &MacKey) {
    if FDB.remove(key).is_ok() {
        stats::table(|t| t.fdb_removed += 1);
    }
}
