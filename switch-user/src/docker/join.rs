//! Join and Leave: the endpoint's port. Join makes a veth pair whose host end is a port of
//! the network's switch, bound to the endpoint's MAC and address, and whose far end waits on
//! the host for Docker to move it into the container (`SrcName`; Docker renames it `ethN`,
//! gives it the address and the default route via the `Gateway` of the reply, so it adds no
//! bridge of its own). Leave takes the port away (the forwards to it go along).
use std::{path::PathBuf, time::Duration};

use serde::Deserialize;
use serde_json::json;

use super::{
    Driver, Reply, api, container_end,
    endpoint::{EndpointRecord, EndpointRef},
    network::{self, NetworkRecord},
    port_name, switch_name,
};
use crate::{
    controller::ns,
    state::{Attachment, Runtime, Workload},
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
        ip6: None,
        switch: switch.clone(),
        mac: Some(ep.mac),
        mtu: net.options.mtu,
        port_security: net.options.port_security,
        attachment: Some(attachment(&ep)),
        workload: None,
    })
    .await?;
    learn_when_made(&ep, netns, d.docker_api.clone());
    Ok(reply(&net, &peer))
}

/// Longest wait for a container's namespace after Join (an image's start may be slow).
const NAMESPACE_WAIT: Duration = Duration::from_secs(120);
/// Longest wait for Docker to list the container of an endpoint once it runs.
const NAME_WAIT: Duration = Duration::from_secs(10);

/// Waits in the background for the namespace Docker makes when the container starts (after
/// Join: its prestart hook binds it at the sandbox key), then has the endpoint's port learn
/// it, so its sockets reach the forwards directly (hairpin); then, if the driver may ask
/// Docker (`docker_api`), labels the port with the container's name. Polls the file only: no
/// lock is taken until it is there.
pub(super) fn learn_when_made(ep: &EndpointRecord, netns: PathBuf, docker_api: Option<PathBuf>) {
    let (name, switch) = (port_name(&ep.endpoint), switch_name(&ep.network));
    let (network, endpoint) = (ep.network.clone(), ep.endpoint.clone());
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + NAMESPACE_WAIT;
        while netns::open_path(&netns).is_err() {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!("port {name}: namespace {} did not appear within {NAMESPACE_WAIT:?}", netns.display());
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Err(e) = ns::learn_namespace(&name, &switch).await {
            tracing::warn!("port {name}: learning its namespace {}: {e}", netns.display());
        }
        if let Some(socket) = docker_api {
            label(&socket, &name, &switch, &network, &endpoint).await;
        }
    });
}

/// Labels port `name` with the name of the container Docker lists for `endpoint`, once it does.
async fn label(socket: &std::path::Path, name: &str, switch: &str, network: &str, endpoint: &str) {
    let deadline = tokio::time::Instant::now() + NAME_WAIT;
    while tokio::time::Instant::now() < deadline {
        match api::container_of(socket, network, endpoint).await {
            Ok(Some(container)) => {
                let workload = Workload { namespace: None, name: container };
                if let Err(e) = ns::label(name, switch, workload).await {
                    tracing::warn!("port {name}: labelling it: {e}");
                }
                return;
            }
            Ok(None) => tokio::time::sleep(Duration::from_millis(250)).await,
            Err(e) => {
                tracing::warn!("port {name}: {e}");
                return;
            }
        }
    }
    tracing::warn!(
        "port {name}: Docker did not list the container of endpoint {} within {NAME_WAIT:?}",
        &endpoint[..12]
    );
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
