//! GC (spec 1.1): the runtime names the attachments that are still valid
//! (`cni.dev/valid-attachments`); every other attachment the plugin made for the network (a
//! port whose record names the network) goes, with its lease, and so does every lease of the
//! network's host-local directory that no valid attachment holds (a port already gone). Ports
//! of other networks and `switch ns attach`'s are never touched. IPAM plugins of spec 1.0
//! have no GC of their own, so each stale lease is released with a DEL in the stale
//! attachment's name. One failure does not stop the rest; the first is reported.
use serde_json::Value;

use super::{
    Env, ipam,
    spec::{CniError, Code, NetConf},
};
use crate::{controller::ns, state::Runtime};

/// `cni.dev/valid-attachments`: (container ID, interface) pairs.
fn valid_attachments(raw: &Value) -> Result<Vec<(String, String)>, CniError> {
    match raw.get("cni.dev/valid-attachments") {
        None => Ok(vec![]),
        Some(Value::Array(list)) => Ok(list
            .iter()
            .map(|a| {
                let field = |k: &str| a.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
                (field("containerID"), field("ifname"))
            })
            .collect()),
        Some(_) => Err(CniError::new(Code::InvalidConfig, "cni.dev/valid-attachments is not a list")),
    }
}

/// GC of `conf`'s network; `raw` is the configuration as received (`stdin` for IPAM).
pub async fn gc(env: &Env, conf: &NetConf, raw: &Value) -> Result<(), CniError> {
    let valid = valid_attachments(raw)?;
    let switch = conf.switch_name();
    let mut failed = vec![];
    let mut stale: Vec<(String, String)> = vec![];
    for p in ns::ports_of(switch).await? {
        let Some(c) = p.attachment.filter(|c| c.runtime == Runtime::Cni && c.network == conf.name) else { continue };
        let attachment = (c.container_id, c.ifname);
        if valid.contains(&attachment) {
            continue;
        }
        if let Err(e) = ns::detach(&p.owner, Some(switch)).await {
            failed.push(format!("{} {}: {e}", attachment.0, attachment.1));
        }
        stale.push(attachment);
    }
    for lease in ipam::leases(conf) {
        if !valid.contains(&lease) && !stale.contains(&lease) {
            stale.push(lease);
        }
    }
    let stdin = raw.to_string();
    for (id, ifname) in stale {
        let gone = Env { container_id: id, ifname, netns: String::new(), ..env.clone() };
        if let Err(e) = ipam::exec(&gone, conf, "DEL", stdin.as_bytes()).await {
            failed.push(format!("{} {}: {}", gone.container_id, gone.ifname, e.msg));
        }
    }
    match failed.first() {
        None => Ok(()),
        Some(first) => Err(CniError::new(
            Code::Switch,
            format!("GC left {} stale attachment(s) of network '{}'; the first: {first}", failed.len(), conf.name),
        )),
    }
}
