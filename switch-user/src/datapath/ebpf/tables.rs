//! Fill levels of the MAC and connection tables, and the drops that belong to no port.
use async_trait::async_trait;
use aya::maps::{HashMap, MapData, MapInfo};
use switch_common::{CtKey, HostFlow, maps as names};

use super::{Ebpf, NatMaps, Pins, SwitchMaps, footprint, maps::open_optional};
use crate::{
    datapath::{SwitchDrops, TableFill, Tables},
    error::{Result, bpf},
    sys::{blocking, clock::now_ns},
};

/// The size of the pinned table `name` (each switch's own: `switch up --max-stations`,
/// `--max-connections`) and the kernel memory it holds; zeros for a table a switch pinned by
/// an older binary does not have.
fn size_of(pins: &Pins, name: &str) -> Result<(u64, u64)> {
    let path = pins.map(name);
    if !path.exists() {
        return Ok((0, 0));
    }
    let info = MapInfo::from_pin(&path).map_err(bpf(format!("reading {}", path.display())))?;
    let fd = info.fd().map_err(bpf(format!("opening {}", path.display())))?;
    Ok((u64::from(info.max_entries()), footprint::memlock(fd)?))
}

/// A table's fill from its walk (`entries` live of `present`) and its counters.
fn fill(pins: &Pins, name: &str, entries: usize, present: usize, counted: [u64; 3]) -> Result<TableFill> {
    let (capacity, memory) = size_of(pins, name)?;
    let [added, removed, refused] = counted;
    Ok(TableFill { entries: entries as u64, present: present as u64, capacity, added, removed, refused, memory })
}

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
            let (answered, unreplied) = (ct.answered, ct.unreplied);
            Ok(vec![
                ("fdb", fill(&pins, names::FDB, fdb_live, fdb_present, [t.fdb_added, t.fdb_removed, 0])?),
                (
                    "conntrack",
                    fill(
                        &pins,
                        names::CONNTRACK,
                        answered.entries,
                        answered.present,
                        [t.ct_added, t.ct_removed, t.ct_refused],
                    )?,
                ),
                (
                    "unreplied",
                    fill(
                        &pins,
                        names::CT_UNREPLIED,
                        unreplied.entries,
                        unreplied.present,
                        [t.unreplied_added, t.unreplied_removed, 0],
                    )?,
                ),
                // No counters of its own: what is in it is what the walk finds.
                ("host_flows", fill(&pins, names::HOST_FLOWS, host_flows, host_flows, [0; 3])?),
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

    async fn memory(&self) -> Result<u64> {
        let pins = self.pins.clone();
        blocking(move || Ok(footprint::measure(&pins)?.total())).await
    }
}

/// Entries of `HOST_FLOWS` (flows the host translated into the segment: Services), 0 on a
/// switch pinned before the table existed.
fn host_flows(pins: &Pins) -> Result<usize> {
    let map: Option<HashMap<MapData, CtKey, HostFlow>> = open_optional(pins, names::HOST_FLOWS)?;
    Ok(map.map_or(0, |m| m.keys().filter(Result::is_ok).count()))
}
