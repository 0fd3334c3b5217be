//! GC (spec 1.1): the runtime names the attachments that are still valid
//! (`cni.dev/valid-attachments`); every other port of the network's switch that a runtime made
//! (an adopted port) goes, with its lease. IPAM plugins of spec 1.0 have no GC of their own, so
//! each stale lease is released with a DEL in the stale container's name.
use serde_json::Value;

use super::{
    Env, ipam,
    spec::{CniError, Code, NetConf},
};
use crate::{controller::ns, state::PortKind};

/// GC of `conf`'s network; `raw` is the configuration as received (`stdin` for IPAM).
pub async fn gc(env: &Env, conf: &NetConf, raw: &Value) -> Result<(), CniError> {
    let valid: Vec<(String, String)> = match raw.get("cni.dev/valid-attachments") {
        None => vec![],
        Some(Value::Array(list)) => list
            .iter()
            .map(|a| {
                let field = |k: &str| a.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
                (field("containerID"), field("ifname"))
            })
            .collect(),
        Some(_) => return Err(CniError::new(Code::InvalidConfig, "cni.dev/valid-attachments is not a list")),
    };
    let switch = conf.switch_name();
    let stale: Vec<(String, String)> = ns::ports_of(switch)
        .await?
        .into_iter()
        .filter(|p| p.kind == PortKind::Adopted && !valid.contains(&(p.owner.clone(), p.peer_if.clone())))
        .map(|p| (p.owner, p.peer_if))
        .collect();
    let stdin = raw.to_string();
    for (id, ifname) in stale {
        ns::detach(&id, Some(switch)).await?;
        let gone = Env { container_id: id, ifname, netns: String::new(), ..env.clone() };
        ipam::exec(&gone, conf, "DEL", stdin.as_bytes()).await?;
    }
    Ok(())
}
