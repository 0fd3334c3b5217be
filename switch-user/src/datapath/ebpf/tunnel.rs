//! The tunnel port's peers (VXLAN, tc only): the peer list and the stations learned at each.
use std::{collections::HashMap, net::Ipv4Addr};

use async_trait::async_trait;

use super::{Ebpf, SwitchMaps, TunnelMaps, wire};
use crate::{
    datapath::Tunnels,
    error::Result,
    sys::{blocking, clock::now_ns},
};

#[async_trait]
impl Tunnels for Ebpf {
    async fn set_peers(&self, peers: &[Ipv4Addr]) -> Result<()> {
        let peers: Vec<u32> = peers.iter().map(|a| wire(*a)).collect();
        let pins = self.pins.clone();
        blocking(move || TunnelMaps::open(&pins)?.set_peers(&peers)).await
    }

    async fn learned(&self) -> Result<HashMap<Ipv4Addr, u32>> {
        let pins = self.pins.clone();
        blocking(move || {
            let ageing = SwitchMaps::open(&pins)?.ageing()?.as_nanos() as u64;
            let windows = TunnelMaps::open(&pins)?.learned(now_ns(), ageing);
            Ok(windows.into_iter().map(|(addr, n)| (Ipv4Addr::from(addr.to_ne_bytes()), n)).collect())
        })
        .await
    }

    async fn forget_peer(&self, addr: Ipv4Addr) -> Result<usize> {
        let remote = wire(addr);
        self.with_maps(move |mut maps| {
            let before = maps.fdb_entries()?.len();
            let left = maps.flush_fdb(|e| e.remote == remote)?;
            Ok(before.saturating_sub(left))
        })
        .await
    }
}
