//! ProgramExternalConnectivity and RevokeExternalConnectivity: `docker run -p` as the
//! switch's forwards (eBPF DNAT on the uplinks, from the host and hairpin), to the
//! endpoint's port. `-p 80` (no host port) gets a free one from Docker's own range, and
//! `-p 8000-8010:80` the first free one of its range. Docker does not ask what was chosen:
//! `switch forward list` shows it (and EndpointOperInfo), `docker port` does not.
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    Driver, DriverError, Reply,
    endpoint::{EndpointRecord, EndpointRef, Published},
    port_name, switch_name,
};
use crate::{
    controller::{
        forward::{self, PortRange},
        ns,
    },
    state::Proto,
};

/// Where Docker puts the port mappings of `-p`.
const PORTMAP: &str = "com.docker.network.portmap";
/// The host ports Docker's own bridge picks `-p 80`'s host port from (its default range).
const DYNAMIC: PortRange = PortRange { first: 49153, last: 60999 };

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ProgramRequest {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
    #[serde(default)]
    options: Map<String, Value>,
}

/// One of Docker's `types.PortBinding`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Binding {
    proto: u8,
    port: u16,
    #[serde(rename = "HostIP", default)]
    host_ip: String,
    #[serde(default)]
    host_port: u16,
    #[serde(default)]
    host_port_end: u16,
}

/// The IPv4 bindings of `-p`. Docker 20.10 doubles each one without an address for IPv6
/// (`::`): the switch forwards IPv4, so those twins are left out. A binding to one address
/// is refused: forwards answer on every uplink address and on the host's loopback.
fn bindings(options: &Map<String, Value>) -> Result<Vec<(Proto, Binding)>, DriverError> {
    let list: Vec<Binding> = match options.get(PORTMAP) {
        None | Some(Value::Null) => vec![],
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| DriverError(format!("{PORTMAP}: {e}")))?,
    };
    let mut out = vec![];
    for b in list {
        if b.host_ip.contains(':') {
            continue;
        }
        if !b.host_ip.is_empty() && b.host_ip != "0.0.0.0" {
            return Err(DriverError(format!(
                "-p {}:{}:{}: the switch publishes ports on every uplink address and the host, not on one address \
                 (leave the address out)",
                b.host_ip, b.host_port, b.port
            )));
        }
        let proto = match b.proto {
            6 => Proto::Tcp,
            17 => Proto::Udp,
            n => return Err(DriverError(format!("-p ...:{}: protocol {n} is not tcp or udp", b.port))),
        };
        out.push((proto, b));
    }
    Ok(out)
}

/// Forwards binding `b` to port `ns` of `switch`; returns the host port.
async fn publish(switch: &str, ns: &str, proto: Proto, b: &Binding) -> Result<u16, DriverError> {
    let o = forward::AddOptions {
        switch: switch.to_owned(),
        proto,
        host: PortRange { first: b.host_port, last: b.host_port },
        ns: ns.to_owned(),
        to: PortRange { first: b.port, last: b.port },
    };
    let f = match (b.host_port, b.host_port_end) {
        (0, _) => forward::add_free(o, DYNAMIC).await?,
        (first, last) if last > first => forward::add_free(o, PortRange { first, last }).await?,
        _ => forward::add(o).await?,
    };
    Ok(f.host_first)
}

/// ProgramExternalConnectivity: every binding of `-p` not forwarded yet; on a failure the
/// ones this call made go again.
pub(super) async fn program(d: &Driver, req: ProgramRequest) -> Reply {
    let r = EndpointRef { network_id: req.network_id, endpoint_id: req.endpoint_id };
    let mut ep = d.endpoint(&r).await?;
    let wanted = bindings(&req.options)?;
    let (switch, ns) = (switch_name(&ep.network), port_name(&ep.endpoint));
    // What an earlier call published and a Leave since took away is to be published again.
    let live = ns::attached(&ns, Some(&switch)).await?.map(|(_, f)| f).unwrap_or_default();
    ep.published.retain(|p| live.iter().any(|f| f.proto == p.proto && f.host_first == p.host_port));
    let mut made: Vec<Published> = vec![];
    for (proto, b) in &wanted {
        let already = ep.published.iter().any(|p| {
            p.proto == *proto
                && p.container_port == b.port
                && (b.host_port == 0 || (b.host_port..=b.host_port_end.max(b.host_port)).contains(&p.host_port))
        });
        if already {
            continue;
        }
        match publish(&switch, &ns, *proto, b).await {
            Ok(host_port) => {
                tracing::info!("published {proto} {host_port} -> {ns}:{} (switch {switch})", b.port);
                made.push(Published { proto: *proto, host_port, container_port: b.port });
            }
            Err(e) => {
                unpublish(&switch, &made).await;
                return Err(e);
            }
        }
    }
    ep.published.extend(made);
    d.save_endpoint(&ep).await?;
    Ok(json!({}))
}

/// Removes the forwards `list` of `switch` (errors are logged: the port's own removal takes
/// whatever is left).
async fn unpublish(switch: &str, list: &[Published]) {
    for p in list {
        let host = PortRange { first: p.host_port, last: p.host_port };
        if let Err(e) = forward::del(switch, p.proto, host).await {
            tracing::warn!("removing forward {} {} of switch {switch}: {e}", p.proto, p.host_port);
        }
    }
}

/// RevokeExternalConnectivity: the forwards to the endpoint's port go (the ones still there:
/// a Leave took them already).
pub(super) async fn revoke(d: &Driver, r: EndpointRef) -> Reply {
    let mut ep: EndpointRecord = match d.endpoint(&r).await {
        Ok(ep) => ep,
        // Nothing recorded, nothing published (the reboot took it).
        Err(_) => return Ok(json!({})),
    };
    let switch = switch_name(&ep.network);
    let live = ns::attached(&port_name(&ep.endpoint), Some(&switch)).await?.map(|(_, f)| f).unwrap_or_default();
    let still: Vec<Published> = ep
        .published
        .iter()
        .filter(|p| live.iter().any(|f| f.proto == p.proto && f.host_first == p.host_port))
        .cloned()
        .collect();
    unpublish(&switch, &still).await;
    ep.published.clear();
    d.save_endpoint(&ep).await?;
    Ok(json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(v: Value) -> Result<Vec<(Proto, Binding)>, DriverError> {
        bindings(json!({ PORTMAP: v }).as_object().unwrap())
    }

    #[test]
    fn port_mappings_as_docker_20_10_sends_them() {
        let b = map(json!([
            {"Proto": 6, "IP": "", "Port": 80, "HostIP": "0.0.0.0", "HostPort": 8080, "HostPortEnd": 8080},
            {"Proto": 6, "IP": "", "Port": 80, "HostIP": "::", "HostPort": 8080, "HostPortEnd": 8080},
            {"Proto": 17, "IP": "", "Port": 53, "HostIP": "", "HostPort": 0, "HostPortEnd": 0},
        ]))
        .unwrap();
        // The IPv6 twin is left out.
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].0, b[0].1.port, b[0].1.host_port), (Proto::Tcp, 80, 8080));
        assert_eq!((b[1].0, b[1].1.host_port), (Proto::Udp, 0));
        assert!(map(Value::Null).unwrap().is_empty());
        let one_address = map(json!([{"Proto": 6, "Port": 80, "HostIP": "127.0.0.1", "HostPort": 8080}]));
        assert!(one_address.unwrap_err().0.contains("leave the address out"));
        let sctp = map(json!([{"Proto": 132, "Port": 80, "HostIP": "", "HostPort": 8080}]));
        assert!(sctp.unwrap_err().0.contains("protocol 132"));
    }
}
