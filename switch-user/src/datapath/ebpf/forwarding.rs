//! Port forwarding: the programs on the uplinks and the gateway, the forwards' entries, the
//! connection table's counters.
use std::net::Ipv4Addr;

use async_trait::async_trait;
use switch_common::{FwdTarget, NAT_F_MASQUERADE, NatConfig};

use super::{Ebpf, NatMaps, maps, wire};
use crate::{
    datapath::{ForwardCounters, PortForwarding, UplinkSetup},
    error::{Error, Result},
    state::ForwardState,
    sys::{blocking, cgroup, netlink::Netlink, netns, sysctl},
};

#[async_trait]
impl PortForwarding for Ebpf {
    async fn setup_uplinks(&self, setup: &UplinkSetup) -> Result<()> {
        let nl = Netlink::new()?;
        let mut addrs = vec![];
        let mut sources = vec![];
        for u in &setup.uplinks {
            let idx = nl
                .ifindex(u)
                .await?
                .ok_or_else(|| Error::invalid("uplink interface", u.clone(), "no such interface"))?;
            let a = nl.ipv4_addrs(idx).await?;
            if let Some(first) = a.first() {
                sources.push((idx, *first));
            }
            addrs.extend(a);
        }
        let gateway = setup.gateway;
        let mask = if gateway.prefix == 0 { 0 } else { u32::MAX << (32 - gateway.prefix) };
        // Without masquerade no port is ever picked: no range is needed.
        let (masq_first, masq_count) = if setup.masquerade { sysctl::masquerade_ports()? } else { (0, 0) };
        let cfg = NatConfig {
            host_netns_cookie: netns::cookie_here()?,
            segment: wire(Ipv4Addr::from(u32::from(gateway.addr) & mask)),
            segment_mask: wire(Ipv4Addr::from(mask)),
            flags: if setup.masquerade { NAT_F_MASQUERADE } else { 0 },
            gateway_ifindex: nl.ifindex(&setup.gateway_if).await?.unwrap_or(0),
            masq_first,
            masq_count,
            gateway_addr: wire(gateway.addr),
        };
        let (pins, uplinks, gateway_if) = (self.pins.clone(), setup.uplinks.clone(), setup.gateway_if.clone());
        blocking(move || {
            let mut maps = NatMaps::open(&pins)?;
            maps.set_config(cfg)?;
            maps.set_uplink_addrs(&addrs)?;
            for (idx, addr) in &sources {
                maps.set_uplink_source(*idx, *addr)?;
            }
            for u in &uplinks {
                pins.attach_uplink(u)?;
            }
            pins.attach_sock_hooks(&cgroup::v2_root()?)?;
            pins.attach_gateway_nat(&gateway_if)
        })
        .await
    }

    async fn detach_uplink(&self, ifname: &str) -> Result<()> {
        let (pins, ifname) = (self.pins.clone(), ifname.to_owned());
        blocking(move || pins.detach_uplink(&ifname)).await
    }

    async fn allow_netns(&self, cookie: u64) -> Result<()> {
        self.with_nat(move |mut nat| nat.allow_netns(cookie)).await
    }

    async fn write(&self, f: &ForwardState, target: Ipv4Addr, written: fn() -> Result<()>) -> Result<()> {
        let f = f.clone();
        self.with_nat(move |mut maps| {
            maps.reset_stats(f.rule)?;
            for (i, host) in (f.host_first..=f.host_last).enumerate() {
                let to = FwdTarget { addr: wire(target), port: f.ns_first + i as u16, rule: f.rule };
                maps.add(f.proto.number(), host, to)?;
                written()?;
            }
            Ok(())
        })
        .await
    }

    async fn remove(&self, f: &ForwardState) -> Result<()> {
        if !self.pins.complete() {
            return Ok(());
        }
        let f = f.clone();
        self.with_nat(move |mut maps| {
            for host in f.host_first..=f.host_last {
                maps.remove(f.proto.number(), host)?;
            }
            Ok(())
        })
        .await
    }

    async fn forget_connections(&self, addr: Ipv4Addr) -> Result<usize> {
        let pins = self.pins.clone();
        blocking(move || {
            if !pins.complete() {
                // A switch half made or half removed: no table to clean.
                return Ok(0);
            }
            let (answered, unreplied) = NatMaps::open(&pins)?.forget(addr);
            maps::TableCounters::open(&pins)?.count(|t| {
                t.ct_removed += answered as u64;
                t.unreplied_removed += unreplied as u64;
            })?;
            Ok(answered + unreplied)
        })
        .await
    }

    async fn counters(&self, rules: &[u16]) -> Result<ForwardCounters> {
        let rules = rules.to_vec();
        self.with_nat(move |maps| {
            let live = maps.connections()?;
            let mut out = ForwardCounters::default();
            for r in rules {
                out.per_rule.insert(r, maps.stats(r)?);
                out.active.insert(r, live.by_rule.get(&r).copied().unwrap_or(0));
            }
            Ok(out)
        })
        .await
    }
}
