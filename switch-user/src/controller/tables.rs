//! `switch tables`: how full the eBPF datapath's two LRU tables are, and what they evicted.
//!
//! The kernel evicts from an LRU map without telling anyone, so the programs and the
//! controller count what they add and delete (`TABLE_STATS`) and evictions are the rest:
//! `added - removed - entries`.
use serde::Serialize;
use switch_common::{FDB_CAPACITY, nat::CT_CAPACITY};

use super::{blocking, ebpf_switch, lock};
use crate::{
    datapath::ebpf::{
        Pins,
        maps::{SwitchMaps, now_ns},
        nat::NatMaps,
    },
    error::Result,
    names::validate_name,
};

/// One table.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TableRow {
    /// `fdb` or `conntrack`.
    pub table: &'static str,
    /// Live entries (expired ones are deleted before counting).
    pub entries: u64,
    /// Most entries the table holds.
    pub capacity: u64,
    /// Entries ever added (FDB: new stations; conntrack: one per direction of a connection).
    pub added: u64,
    /// Entries deleted: aged out, port gone, flushed, removed by hand.
    pub removed: u64,
    /// Entries the kernel evicted to make room for new ones (the table was full).
    pub evicted: u64,
}

impl TableRow {
    fn new(table: &'static str, entries: usize, capacity: u32, added: u64, removed: u64) -> Self {
        let entries = entries as u64;
        // A packet may add an entry between the counters and the walk: never below zero.
        let evicted = added.saturating_sub(removed).saturating_sub(entries);
        Self { table, entries, capacity: u64::from(capacity), added, removed, evicted }
    }
}

/// The FDB and connection table of `switch` (tc and xdp datapaths).
pub async fn show(switch: &str) -> Result<Vec<TableRow>> {
    validate_name("switch name", switch)?;
    let store = lock().await?;
    let state = store.load()?;
    ebpf_switch(&state, switch, "switch tables", "table counters")?;
    let pins = Pins::new(switch);
    blocking(move || {
        let mut maps = SwitchMaps::open(&pins)?;
        let mut nat = NatMaps::open(&pins)?;
        // Expired entries go first, as `switch fdb` and `forward list` do: what is left is live.
        let (now, ageing) = (now_ns(), maps.ageing()?.as_nanos() as u64);
        let fdb_entries = maps.flush_fdb(|e| e.is_expired(now, ageing))?;
        let ct_entries = nat.connections()?.entries;
        let t = maps.tables()?;
        Ok(vec![
            TableRow::new("fdb", fdb_entries, FDB_CAPACITY, t.fdb_added, t.fdb_removed),
            TableRow::new("conntrack", ct_entries, CT_CAPACITY, t.ct_added, t.ct_removed),
        ])
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evictions_are_what_is_missing() {
        let r = TableRow::new("fdb", 16_384, FDB_CAPACITY, 20_000, 100);
        assert_eq!(r.evicted, 20_000 - 100 - 16_384);
        // Counted a moment apart from the walk: more present than counted is not negative.
        assert_eq!(TableRow::new("fdb", 12, FDB_CAPACITY, 10, 0).evicted, 0);
    }
}
