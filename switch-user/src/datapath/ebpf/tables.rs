//! Fill levels of the MAC and connection tables, and the drops that belong to no port.
use async_trait::async_trait;
use aya::maps::{HashMap, MapData};
use switch_common::{
    CtKey, FDB_CAPACITY, HOST_FLOWS_CAPACITY, HostFlow, maps as names,
    nat::{CT_CAPACITY, CT_UNREPLIED_CAPACITY},
};

use super::{Ebpf, NatMaps, Pins, SwitchMaps, maps::open_optional};
use crate::{
    datapath::{SwitchDrops, TableFill, Tables},
    error::Result,
    sys::{blocking, clock::now_ns},
};

#[async_trait]
impl Tables for Ebpf {
    async fn fill(&self) -> Result<Vec<(&'static str, TableFill)>> {
        let pins = self.pins.clone();
        blocking(move || {
            let maps = SwitchMaps::open(&pins)?;
            let nat = NatMaps::open(&pins)?;
            let (now, ageing) = (now_ns(), maps.ageing()?.as_nanos() as u64);
            let (fdb_live, fdb_present) = maps.fdb_fill(now, ageing)?;
            let ct = nat.connections()?;
            let t = maps.tables()?;
            let host_flows = host_flows(&pins)?;
            let fill =
                |entries: usize, present: usize, capacity: u32, added: u64, removed: u64, refused: u64| TableFill {
                    entries: entries as u64,
                    present: present as u64,
                    capacity: u64::from(capacity),
                    added,
                    removed,
                    refused,
                };
            Ok(vec![
                ("fdb", fill(fdb_live, fdb_present, FDB_CAPACITY, t.fdb_added, t.fdb_removed, 0)),
                (
                    "conntrack",
                    fill(ct.answered.entries, ct.answered.present, CT_CAPACITY, t.ct_added, t.ct_removed, t.ct_refused),
                ),
                (
                    "unreplied",
                    fill(
                        ct.unreplied.entries,
                        ct.unreplied.present,
                        CT_UNREPLIED_CAPACITY,
                        t.unreplied_added,
                        t.unreplied_removed,
                        0,
                    ),
                ),
                // No counters of its own: what is in it is what the walk finds.
                ("host_flows", fill(host_flows, host_flows, HOST_FLOWS_CAPACITY, 0, 0, 0)),
            ])
        })
        .await
    }

    async fn drops(&self) -> Result<SwitchDrops> {
        let pins = self.pins.clone();
        blocking(move || {
            let t = SwitchMaps::open(&pins)?.tables()?;
            let present = NatMaps::open(&pins)?.unreplied_present() as u64;
            let evicted =
                TableFill { added: t.unreplied_added, removed: t.unreplied_removed, present, ..Default::default() };
            Ok(SwitchDrops {
                nat_refused: t.ct_refused,
                unsolicited_routed: t.routed_refused,
                unreplied_evicted: evicted.evicted(),
                icmp_refused: t.icmp_refused,
                masquerade_share: t.masq_share_refused,
            })
        })
        .await
    }
}

/// Entries of `HOST_FLOWS` (flows the host translated into the segment: Services), 0 on a
/// switch pinned before the table existed.
fn host_flows(pins: &Pins) -> Result<usize> {
    let map: Option<HashMap<MapData, CtKey, HostFlow>> = open_optional(pins, names::HOST_FLOWS)?;
    Ok(map.map_or(0, |m| m.keys().filter(Result::is_ok).count()))
}
