//! Switch-wide settings as the datapath sees them.
use switch_common::{
    CFG_F_CAPTURE, CFG_F_EVENTS, CFG_F_LOG, CFG_F_REDIRECT_PEER, CFG_F_ROUTABLE, DEFAULT_AGEING_SECS,
    DEFAULT_MAX_LEARNED, MAX_PORTS, SwitchConfig,
};

use super::maps::CONFIG;

/// A copy of the config entry with safe fallbacks.
#[derive(Clone, Copy)]
pub struct Config {
    pub ageing_ns: u64,
    pub flags: u32,
    /// Already clamped to `MAX_PORTS`, so the flood loop bound is a constant the verifier knows.
    pub slot_limit: u32,
    /// New stations a port without a bound MAC may learn per ageing period (0: no limit).
    pub max_learned: u32,
    /// Slot of the gateway port plus one; 0: no gateway.
    pub gateway_slot: u32,
}

impl Config {
    #[inline(always)]
    pub fn load() -> Self {
        match CONFIG.get(0) {
            Some(SwitchConfig { ageing_ns, flags, slot_limit, max_learned, gateway_slot }) => Self {
                ageing_ns: *ageing_ns,
                flags: *flags,
                slot_limit: if *slot_limit > MAX_PORTS { MAX_PORTS } else { *slot_limit },
                max_learned: *max_learned,
                gateway_slot: *gateway_slot,
            },
            // Unreachable for an array map with one entry, but the verifier needs the branch.
            None => Self {
                ageing_ns: DEFAULT_AGEING_SECS * 1_000_000_000,
                flags: CFG_F_REDIRECT_PEER,
                slot_limit: MAX_PORTS,
                max_learned: DEFAULT_MAX_LEARNED,
                gateway_slot: 0,
            },
        }
    }

    #[inline(always)]
    pub fn redirect_peer(&self) -> bool {
        self.flags & CFG_F_REDIRECT_PEER != 0
    }

    #[inline(always)]
    pub fn routable(&self) -> bool {
        self.flags & CFG_F_ROUTABLE != 0
    }

    #[inline(always)]
    pub fn log(&self) -> bool {
        self.flags & CFG_F_LOG != 0
    }

    /// Someone listens to the events (`switch monitor`). Off, the programs pay this one test
    /// of a flag they already loaded.
    #[inline(always)]
    pub fn events(&self) -> bool {
        self.flags & CFG_F_EVENTS != 0
    }

    /// A capture runs (`switch capture`). Off, the programs pay this one test.
    #[inline(always)]
    pub fn capture(&self) -> bool {
        self.flags & CFG_F_CAPTURE != 0
    }
}
