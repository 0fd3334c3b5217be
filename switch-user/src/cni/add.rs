//! ADD: an address from IPAM, the switch up, the container's namespace attached, its
//! published ports forwarded. Whatever fails gives back what was made before it, the lease
//! included.
use serde_json::{Value, json};

use super::{
    Env, ipam, our_port, routes,
    spec::{CniError, Code, Lease, NetConf, Plugged, PortMapping, add_result, lease_of},
};
use crate::{
    controller::{
        forward::{self, PortRange},
        ns, switch,
    },
    kind::DatapathKind,
    names::{Cidr, Cidr6},
    state::{PortKind, Proto},
    sys::netlink::Netlink,
};

/// ADD for `env`'s container with configuration `conf` (its raw bytes in `stdin`, for IPAM).
pub async fn add(env: &Env, conf: &NetConf, stdin: &[u8]) -> Result<Value, CniError> {
    env.require(true)?;
    if let Some(again) = repeated(env, conf).await? {
        return Ok(again);
    }
    let leased = ipam::exec(env, conf, "ADD", stdin).await?;
    // Chained after another plugin, the address may come from its result instead.
    let source = leased.as_ref().or(conf.prev_result.as_ref()).ok_or_else(|| {
        CniError::new(Code::InvalidConfig, "no ipam in the configuration and no prevResult with an address")
    })?;
    // A previous plugin's routes are its own, made already.
    let lease = lease_of(source).map(|l| if leased.is_some() { l } else { Lease { routes: vec![], ..l } });
    let plugged = match lease {
        Ok(lease) => plug(env, conf, &lease).await,
        Err(e) => Err(e),
    };
    if plugged.is_err() && leased.is_some() {
        // The lease is ours only if the port is: give it back (errors of the release are
        // secondary to the one that made us release).
        let _ = ipam::exec(env, conf, "DEL", stdin).await;
    }
    plugged
}

/// A repeated ADD of an attachment that is made, into the same namespace: the result again,
/// from the port's record (IPAM is not asked twice: host-local refuses a second lease for one
/// attachment), with the published ports this ADD asks for.
async fn repeated(env: &Env, conf: &NetConf) -> Result<Option<Value>, CniError> {
    let Some((port, _)) = our_port(env, conf).await? else { return Ok(None) };
    let Some(address) = port.ip.filter(|_| port.ready && port.netns_file() == Some(env.netns_path())) else {
        return Ok(None);
    };
    let gw = ns::ports_of(conf.switch_name()).await?.into_iter().find(|p| p.kind == PortKind::Gateway);
    let gateway = gw.as_ref().and_then(|g| g.ip).map(|g| g.addr);
    let gateway6 = gw.as_ref().and_then(|g| g.ip6).map(|g| g.addr);
    publish(env, conf, conf.switch_name()).await?;
    // IPAM's routes as `install` made them; its DNS is not kept (the configuration's is).
    let routes = routes::present(env).await?;
    let lease = Lease { address, gateway, address6: port.ip6, gateway6, dns: json!({}), routes };
    let mac = port.mac.map(|m| m.to_string()).unwrap_or_default();
    let default_route = routes::default_is_ours(env).await?;
    let plugged = Plugged { host_if: &port.host_if, ifname: &env.ifname, mac: &mac, netns: &env.netns, default_route };
    Ok(Some(add_result(conf, &plugged, &lease)))
}

/// The switch, the port and the forwards, rolled back together.
async fn plug(env: &Env, conf: &NetConf, lease: &Lease) -> Result<Value, CniError> {
    let name = conf.switch_name().to_owned();
    let gateway = gateway(conf, lease)?;
    // The IPv6 segment is IPAM's: its gateway with the address's prefix length.
    let gateway6 = lease.address6.zip(lease.gateway6).map(|(a, g)| Cidr6 { addr: g, prefix: a.prefix });
    let datapath: Option<DatapathKind> = match &conf.datapath {
        None => None,
        Some(d) => Some(serde_json::from_value(json!(d)).map_err(|_| {
            CniError::new(Code::InvalidConfig, format!("datapath '{d}' is not one of tc, xdp, userspace, bridge"))
        })?),
    };
    switch::up(switch::UpOptions {
        name: name.clone(),
        datapath,
        gateway: Some(gateway),
        gateway6,
        uplinks: conf.uplinks(),
        no_masquerade: !conf.ip_masq.unwrap_or(true),
        ..Default::default()
    })
    .await?;
    let report = ns::attach(ns::AttachOptions {
        name: env.port_name(),
        netns: env.netns_path(),
        ifname: env.ifname.clone(),
        ip: lease.address,
        ip6: lease.address6,
        switch: name.clone(),
        mac: conf.mac(env.arg("MAC"))?,
        mtu: conf.mtu()?,
        port_security: conf.port_security.unwrap_or(true),
        attachment: Some(env.attachment(conf)),
        workload: env.workload(),
    })
    .await?;
    let finished = async {
        routes::install(env, lease, gateway.addr).await?;
        publish(env, conf, &name).await?;
        routes::default_is_ours(env).await
    };
    let default_route = match finished.await {
        Ok(ours) => ours,
        Err(e) => {
            let _ = ns::detach(&env.port_name(), Some(&name)).await;
            return Err(e);
        }
    };
    let i = &report.info;
    let mac = i.mac.clone().unwrap_or_default();
    let host_if = i.host_interface.as_deref().unwrap_or_default();
    Ok(add_result(conf, &Plugged { host_if, ifname: &env.ifname, mac: &mac, netns: &env.netns, default_route }, lease))
}

/// The segment's gateway: `gateway` from the configuration, else the IPAM result's with the
/// address's prefix length.
fn gateway(conf: &NetConf, lease: &Lease) -> Result<Cidr, CniError> {
    if let Some(g) = &conf.gateway {
        return g.parse().map_err(|e: crate::Error| CniError::new(Code::InvalidConfig, e.to_string()));
    }
    let addr = lease.gateway.ok_or_else(|| {
        CniError::new(Code::InvalidConfig, "no gateway: set \"gateway\" or use an IPAM configuration that has one")
    })?;
    Ok(Cidr { addr, prefix: lease.address.prefix })
}

/// The mapping's protocol.
pub(super) fn proto(m: &PortMapping) -> Result<Proto, CniError> {
    match m.protocol.to_ascii_lowercase().as_str() {
        "tcp" => Ok(Proto::Tcp),
        "udp" => Ok(Proto::Udp),
        other => Err(CniError::new(Code::InvalidConfig, format!("port mapping protocol '{other}' is not tcp or udp"))),
    }
}

/// Published ports answer on every uplink address (and 127.0.0.1 on the host): a `hostIP`
/// that names one of them is honoured that far; any other address is refused rather than
/// published somewhere the user did not ask for. `uplink_addrs` is filled on first need,
/// once for all the mappings of an ADD.
async fn check_host_ip(
    conf: &NetConf,
    host_ip: &str,
    uplink_addrs: &mut Option<Vec<std::net::Ipv4Addr>>,
) -> Result<(), CniError> {
    if host_ip.is_empty() || host_ip == "0.0.0.0" || host_ip == "127.0.0.1" {
        return Ok(());
    }
    let refused = |why: String| CniError::new(Code::InvalidConfig, format!("hostIP {host_ip}: {why}"));
    let ip: std::net::Ipv4Addr = host_ip.parse().map_err(|_| refused("not an IPv4 address".into()))?;
    if uplink_addrs.is_none() {
        let nl = Netlink::new()?;
        let mut addrs = vec![];
        for uplink in conf.uplinks() {
            if let Some(i) = nl.ifindex(&uplink).await? {
                addrs.extend(nl.ipv4_addrs(i).await?);
            }
        }
        *uplink_addrs = Some(addrs);
    }
    if uplink_addrs.as_ref().is_some_and(|a| a.contains(&ip)) {
        return Ok(());
    }
    Err(refused(format!("not an address of the uplinks [{}]", conf.uplinks().join(", "))))
}

/// Forwards the published ports (`runtimeConfig.portMappings`) to the container. A mapping
/// already forwarded to it (a repeated ADD) is kept. On failure the caller detaches the port,
/// which takes every forward to it along.
async fn publish(env: &Env, conf: &NetConf, switch: &str) -> Result<(), CniError> {
    let existing = ns::attached(&env.port_name(), Some(switch)).await?.map(|(_, f)| f).unwrap_or_default();
    let mut uplink_addrs = None;
    for m in &conf.runtime_config.port_mappings {
        let proto = proto(m)?;
        check_host_ip(conf, &m.host_ip, &mut uplink_addrs).await?;
        let same = existing.iter().any(|f| {
            f.proto == proto
                && f.host_first == m.host_port
                && f.host_last == m.host_port
                && f.ns_first == m.container_port
        });
        if same {
            continue;
        }
        forward::add(forward::AddOptions {
            switch: switch.to_owned(),
            proto,
            host: PortRange { first: m.host_port, last: m.host_port },
            ns: env.port_name(),
            to: PortRange { first: m.container_port, last: m.container_port },
        })
        .await?;
    }
    Ok(())
}
