//! `switch tables`: how full the eBPF datapath's LRU tables are (the MAC table, the
//! connection table and its part for connections not answered yet), and what they evicted.
//!
//! The kernel evicts from an LRU map without telling anyone, so the programs and the
//! controller count what they add and delete (`TABLE_STATS`) and evictions are the rest:
//! `added - removed - entries`.
use serde::Serialize;

use super::{datapath_of, lock};
use crate::{datapath::TableFill, error::Result, names::validate_name, state::State};

/// One table.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TableRow {
    /// `fdb`, `conntrack` or `unreplied`.
    pub table: &'static str,
    /// Live entries.
    pub entries: u64,
    /// Most entries the table holds.
    pub capacity: u64,
    /// Entries ever added (FDB: new stations; conntrack: one per direction of a connection).
    pub added: u64,
    /// Entries past their time, still in the table until a packet reuses them or the table
    /// needs their room (reading the table never deletes them).
    pub expired: u64,
    /// Entries deleted: aged out, port gone, flushed, removed by hand.
    pub removed: u64,
    /// Entries the kernel evicted to make room for new ones (the table was full).
    pub evicted: u64,
    /// Connections the table could not take (conntrack: no free masquerade port); their
    /// packets were dropped, never sent on untranslated.
    pub refused: u64,
}

impl TableRow {
    fn new(table: &'static str, f: TableFill) -> Self {
        let evicted = f.evicted();
        let expired = f.present.saturating_sub(f.entries);
        Self {
            table,
            entries: f.entries,
            expired,
            capacity: f.capacity,
            added: f.added,
            removed: f.removed,
            evicted,
            refused: f.refused,
        }
    }
}

/// The MAC table and connection table of `switch`, for datapaths that count them. Changes
/// nothing.
pub async fn show(switch: &str) -> Result<Vec<TableRow>> {
    validate_name("switch name", switch)?;
    let store = lock().await?;
    read(&store.load()?, switch).await
}

/// The tables of `switch` as `state` records it (see `stats::read`).
pub(crate) async fn read(state: &State, switch: &str) -> Result<Vec<TableRow>> {
    let dp = datapath_of(state, switch)?;
    Ok(dp.require_tables()?.fill().await?.into_iter().map(|(name, f)| TableRow::new(name, f)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evictions_are_what_is_missing() {
        let fill = |entries, present, added, removed| TableFill {
            entries,
            present,
            capacity: 16_384,
            added,
            removed,
            refused: 0,
        };
        let r = TableRow::new("fdb", fill(16_000, 16_384, 20_000, 100));
        assert_eq!(r.evicted, 20_000 - 100 - 16_384);
        assert_eq!((r.entries, r.expired), (16_000, 384), "expired entries are present but not live");
        // Counted a moment apart from the walk: more present than counted is not negative.
        assert_eq!(TableRow::new("fdb", fill(12, 12, 10, 0)).evicted, 0);
    }
}
