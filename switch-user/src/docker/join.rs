//! Join and Leave: the endpoint's port. Join makes a veth pair whose host end is a port of
//! the network's switch, bound to the endpoint's MAC and address, and whose far end waits on
//! the host for Docker to move it into the container (`SrcName`; Docker renames it `ethN`,
//! gives it the address and the default route via the `Gateway` of the reply, so it adds no
//! bridge of its own). Leave takes the port away (the forwards to it go along).
use std::{path::PathBuf, time::Duration};

use serde::Deserialize;
use serde_json::json;

use super::{
    Driver, Reply, container_end,
    endpoint::{EndpointRecord, EndpointRef},
    network::{self, NetworkRecord},
    port_name, switch_name,
};
use crate::{
    controller::ns,
    state::{Attachment, Runtime},
    sys::{netlink::Netlink, netns},
};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct JoinRequest {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
    sandbox_key: String,
}

/// The attachment record of endpoint `ep`'s port.
fn attachment(ep: &EndpointRecord) -> Attachment {
    Attachment {
        runtime: Runtime::Docker,
        network: ep.network.clone(),
        container_id: ep.endpoint.clone(),
        ifname: container_end(&ep.endpoint),
    }
}

/// Join: the port, idempotently. A port already made for this sandbox whose far end still
/// waits on the host is answered again; any other port of the endpoint (an earlier Join
/// whose container went) is made anew.
pub(super) async fn join(d: &Driver, req: JoinRequest) -> Reply {
    let r = EndpointRef { network_id: req.network_id, endpoint_id: req.endpoint_id };
    let ep = d.endpoint(&r).await?;
    let net = network::ensure(d, &r.network_id).await?;
    let netns = PathBuf::from(&req.sandbox_key);
    let (name, switch, peer) = (port_name(&ep.endpoint), net.switch(), container_end(&ep.endpoint));
    if let Some((p, _)) = ns::attached(&name, Some(&switch)).await? {
        let waiting = Netlink::new()?.ifindex(&peer).await?.is_some();
        if p.ready && waiting && p.netns_file() == Some(netns.clone()) {
            return Ok(reply(&net, &peer));
        }
        ns::detach(&name, Some(&switch)).await?;
    }
    ns::attach_handed_over(ns::AttachOptions {
        name: name.clone(),
        netns: netns.clone(),
        ifname: peer.clone(),
        ip: ep.address,
        switch: switch.clone(),
        mac: Some(ep.mac),
        mtu: net.options.mtu,
        port_security: net.options.port_security,
        cni: Some(attachment(&ep)),
        workload: None,
    })
    .await?;
    learn_when_made(name, switch, netns);
    Ok(reply(&net, &peer))
}

/// Longest wait for a container's namespace after Join (an image's start may be slow).
const NAMESPACE_WAIT: Duration = Duration::from_secs(120);

/// Waits in the background for the namespace Docker makes when the container starts (after
/// Join: its prestart hook binds it at the sandbox key), then has port `name` learn it, so its
/// sockets reach the forwards directly (hairpin). Polls the file only: no lock is taken until
/// it is there.
pub(super) fn learn_when_made(name: String, switch: String, netns: PathBuf) {
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + NAMESPACE_WAIT;
        while tokio::time::Instant::now() < deadline {
            if netns::open_path(&netns).is_ok() {
                if let Err(e) = ns::learn_namespace(&name, &switch).await {
                    tracing::warn!("port {name}: learning its namespace {}: {e}", netns.display());
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::warn!("port {name}: namespace {} did not appear within {NAMESPACE_WAIT:?}", netns.display());
    });
}

fn reply(net: &NetworkRecord, peer: &str) -> serde_json::Value {
    json!({
        "InterfaceName": { "SrcName": peer, "DstPrefix": "eth" },
        "Gateway": net.gateway.addr.to_string(),
        "DisableGatewayService": false,
    })
}

/// Leave: the port goes (gone already is fine); the endpoint stays until DeleteEndpoint.
pub(super) async fn leave(_d: &Driver, r: EndpointRef) -> Reply {
    r.check()?;
    ns::detach(&port_name(&r.endpoint_id), Some(&switch_name(&r.network_id))).await?;
    Ok(json!({}))
}
