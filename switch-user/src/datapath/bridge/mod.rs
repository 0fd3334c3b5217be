//! The bridge datapath: the kernel's Linux bridge, made and driven by the tool itself over
//! rtnetlink (`netlink.rs`). It is the baseline the others are measured against.
pub mod netlink;

use std::{collections::HashMap, time::Duration};

use async_trait::async_trait;
use switch_common::PortStats;

use super::{Datapath, FdbEntryView, PortCounters};
use crate::{
    error::{Error, Result},
    kind::DatapathKind,
    names::{Mac, bridge_ifname},
    state::{PortState, SwitchState},
    sys::{blocking, netlink::Netlink, sysctl},
};

/// The Linux bridge of one switch.
pub struct Bridge {
    name: String,
    /// The bridge device's name.
    device: String,
}

impl Bridge {
    /// Switch `name`.
    pub fn new(name: &str) -> Self {
        Self { name: name.to_owned(), device: bridge_ifname(name) }
    }
}

#[async_trait]
impl Datapath for Bridge {
    fn kind(&self) -> DatapathKind {
        DatapathKind::Bridge
    }

    fn switch(&self) -> &str {
        &self.name
    }

    async fn create(&self, sw: &SwitchState) -> Result<()> {
        let nl = Netlink::new()?;
        nl.delete(&self.device).await?;
        nl.add_bridge(&self.device, sw.ageing_secs).await?;
        // A pure layer-2 device, like the eBPF ports: no IPv6 chatter from the host.
        let device = self.device.clone();
        blocking(move || sysctl::disable_ipv6(&device)).await
    }

    async fn healthy(&self) -> Result<bool> {
        self.exists().await
    }

    async fn destroy(&self) -> Result<()> {
        Netlink::new()?.delete(&self.device).await
    }

    async fn exists(&self) -> Result<bool> {
        Ok(Netlink::new()?.ifindex(&self.device).await?.is_some())
    }

    async fn attach_port(&self, port: &PortState) -> Result<()> {
        let nl = Netlink::new()?;
        let br = nl
            .ifindex(&self.device)
            .await?
            .ok_or_else(|| Error::Command(format!("bridge {} is missing", self.device)))?;
        nl.set_controller(port.host_ifindex, br).await
    }

    async fn detach_port(&self, _port: &PortState) -> Result<()> {
        // Deleting the veth (the caller does) takes it off the bridge.
        Ok(())
    }

    async fn fdb(&self, ports: HashMap<u32, Mac>) -> Result<Vec<FdbEntryView>> {
        let ageing = Duration::from_secs(
            Netlink::new()?.bridge_ageing(&self.device).await?.unwrap_or(switch_common::DEFAULT_AGEING_SECS),
        );
        let list: Vec<(u32, Mac)> = ports.into_iter().collect();
        Ok(Netlink::new()?
            .bridge_fdb(&list)
            .await?
            .into_iter()
            // The bridge ignores expired entries until its next sweep; so do we.
            .filter(|e| e.is_static || e.age <= ageing)
            .map(|e| FdbEntryView {
                mac: e.mac,
                ifindex: e.ifindex,
                is_static: e.is_static,
                age: (!e.is_static).then_some(e.age),
                remote: None,
            })
            .collect())
    }

    async fn fdb_add(&self, mac: Mac, ifindex: u32) -> Result<()> {
        Netlink::new()?.bridge_fdb_add(ifindex, mac).await
    }

    async fn fdb_del(&self, mac: Mac, ports: &[u32]) -> Result<bool> {
        let nl = Netlink::new()?;
        let mut existed = false;
        for &p in ports {
            existed |= nl.bridge_fdb_del(p, mac).await?;
        }
        Ok(existed)
    }

    async fn stats(&self, ports: &[PortState]) -> Result<Vec<PortCounters>> {
        let nl = Netlink::new()?;
        let mut out = Vec::with_capacity(ports.len());
        for port in ports {
            let s = nl.link_stats(&port.host_if).await?.unwrap_or_default();
            // The host end receives what the namespace sends, and transmits what it gets.
            let stats = PortStats {
                rx_packets: s.rx_packets,
                rx_bytes: s.rx_bytes,
                tx_packets: s.tx_packets,
                tx_bytes: s.tx_bytes,
                ..Default::default()
            };
            out.push(PortCounters { stats, detailed: false });
        }
        Ok(out)
    }
}
