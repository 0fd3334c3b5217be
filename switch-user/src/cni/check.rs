//! CHECK: the container's port, its address and its forwards are as ADD made them, and the
//! IPAM plugin's own CHECK (its lease is still there) passes.
use super::{
    Env,
    add::proto,
    ipam, our_port,
    spec::{CniError, Code, NetConf, lease_on},
};
use crate::sys::{netlink::Netlink, netns};

/// CHECK for `env`'s container against `conf.prevResult` (`stdin`: the configuration as
/// received, for IPAM).
pub async fn check(env: &Env, conf: &NetConf, stdin: &[u8]) -> Result<(), CniError> {
    env.require(true)?;
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::new(Code::InvalidConfig, "CHECK needs the prevResult of ADD"))?;
    let lease = lease_on(prev, &env.ifname)?;
    let wrong = |what: String| Err(CniError::new(Code::Check, what));
    let Some((port, forwards)) = our_port(env, conf).await? else {
        return wrong(format!(
            "container {} has no attachment {} on network '{}' (switch '{}')",
            env.container_id,
            env.ifname,
            conf.name,
            conf.switch_name()
        ));
    };
    if !port.ready {
        return wrong(format!("the port of container {} is not complete", env.container_id));
    }
    if port.ip != Some(lease.address) || port.peer_if != env.ifname {
        return wrong(format!(
            "the port is {} {}, the result says {} {}",
            port.peer_if,
            port.ip.map(|c| c.to_string()).unwrap_or_default(),
            env.ifname,
            lease.address
        ));
    }
    let (ifname, want) = (env.ifname.clone(), lease.address.addr);
    let found = netns::run_in_path(&env.netns_path(), move |h| async move {
        let nl = Netlink::from_handle(h);
        Ok(match nl.ifindex(&ifname).await? {
            Some(i) => nl.ipv4_addrs(i).await?.contains(&want),
            None => false,
        })
    })
    .await?;
    if !found {
        return wrong(format!("{} in {} does not have {}", env.ifname, env.netns, lease.address));
    }
    for m in &conf.runtime_config.port_mappings {
        let p = proto(m)?;
        let there =
            forwards.iter().any(|f| f.proto == p && f.host_first == m.host_port && f.ns_first == m.container_port);
        if !there {
            return wrong(format!("{}/{} is not forwarded to port {}", m.protocol, m.host_port, m.container_port));
        }
    }
    // CHECK is in the spec from 0.4.0: IPAM plugins refuse it in older configurations.
    if !conf.cni_version.starts_with("0.3.") {
        ipam::exec(env, conf, "CHECK", stdin).await?;
    }
    Ok(())
}
