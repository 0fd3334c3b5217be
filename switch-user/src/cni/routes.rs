//! IPAM's routes in the container. The default route via the gateway is the port's own
//! (`ns::attach` makes it, unless the container has one already); every other IPv4 route the IPAM result names is added here, via
//! its `gw` or the gateway.
use std::net::Ipv4Addr;

use serde_json::Value;

use super::{
    Env,
    spec::{CniError, Code, Lease},
};
use crate::sys::{netlink::Netlink, netns};

/// A route: destination, prefix length, next hop if the result names one.
type Route = (Ipv4Addr, u8, Option<Ipv4Addr>);

/// The routes of `lease` that are not the default one, parsed (IPv6 ones are skipped).
fn extra(lease: &Lease) -> Result<Vec<Route>, CniError> {
    let mut out = vec![];
    for r in &lease.routes {
        let bad = || CniError::new(Code::Ipam, format!("the IPAM result has a route that is not one: {r}"));
        let dst = r.get("dst").and_then(Value::as_str).ok_or_else(bad)?;
        if dst.contains(':') {
            continue;
        }
        let (addr, prefix) = dst.split_once('/').ok_or_else(bad)?;
        let (addr, prefix): (Ipv4Addr, u8) = (addr.parse().map_err(|_| bad())?, prefix.parse().map_err(|_| bad())?);
        if prefix > 32 {
            return Err(bad());
        }
        if prefix == 0 {
            continue;
        }
        let gw = match r.get("gw").and_then(Value::as_str) {
            Some(g) => Some(g.parse().map_err(|_| bad())?),
            None => None,
        };
        out.push((addr, prefix, gw));
    }
    Ok(out)
}

/// Adds `lease`'s routes (but the default one) in `env`'s namespace, via `gateway` where they
/// name no next hop.
pub(super) async fn install(env: &Env, lease: &Lease, gateway: Ipv4Addr) -> Result<(), CniError> {
    let routes = extra(lease)?;
    if routes.is_empty() {
        return Ok(());
    }
    netns::run_in_path(&env.netns_path(), move |h| async move {
        let nl = Netlink::from_handle(h);
        for (dst, prefix, gw) in routes {
            nl.add_route(dst, prefix, gw.unwrap_or(gateway)).await?;
        }
        Ok(())
    })
    .await?;
    Ok(())
}

/// Whether the namespace's default route goes out of `env`'s interface: the attachment made
/// it (the first of the container's to have a gateway does).
pub(super) async fn default_is_ours(env: &Env) -> Result<bool, CniError> {
    let ifname = env.ifname.clone();
    let via = netns::run_in_path(&env.netns_path(), move |h| async move {
        Netlink::from_handle(h).default_route_interface().await
    })
    .await?;
    Ok(via == Some(ifname))
}

/// The routes `install` made for `env`'s interface, read back from its namespace, as a
/// result lists them: what a repeated ADD answers (IPAM is not asked twice).
pub(super) async fn present(env: &Env) -> Result<Vec<Value>, CniError> {
    let ifname = env.ifname.clone();
    let routes = netns::run_in_path(&env.netns_path(), move |h| async move {
        let nl = Netlink::from_handle(h);
        match nl.ifindex(&ifname).await? {
            Some(index) => nl.gateway_routes(index).await,
            None => Ok(vec![]),
        }
    })
    .await?;
    Ok(routes
        .into_iter()
        .map(|(dst, prefix, gw)| serde_json::json!({ "dst": format!("{dst}/{prefix}"), "gw": gw.to_string() }))
        .collect())
}
