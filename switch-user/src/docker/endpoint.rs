//! CreateEndpoint, DeleteEndpoint and EndpointOperInfo. An endpoint is the address and MAC
//! Docker's IPAM gave a container on a network (a MAC is chosen here when Docker gives none),
//! recorded until Join makes its port bound to them (`/run/switch/docker/ID.json`: it goes
//! with the ports at a reboot, as Docker's endpoints do).
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    Driver, DriverError, Reply, check_id, network, port_name, read_record, record_path, remove_record, write_record,
};
use crate::{
    controller::ns,
    names::{Cidr, Mac},
    state::Proto,
};

/// What the driver keeps of an endpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct EndpointRecord {
    /// Docker's network ID.
    pub network: String,
    /// Docker's endpoint ID.
    pub endpoint: String,
    /// The container's address, with the subnet's prefix.
    pub address: Cidr,
    /// The container's MAC.
    pub mac: Mac,
    /// The published ports ProgramExternalConnectivity made, as host port -> container port.
    #[serde(default)]
    pub published: Vec<Published>,
}

/// One published port: what `docker port` would show, had Docker asked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Published {
    pub proto: Proto,
    pub host_port: u16,
    pub container_port: u16,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct CreateRequest {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
    #[serde(default)]
    interface: Option<Interface>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Interface {
    #[serde(default)]
    address: String,
    #[serde(rename = "AddressIPv6", default)]
    address_ipv6: String,
    #[serde(default)]
    mac_address: String,
}

/// The (network, endpoint) pair most calls name.
#[derive(Deserialize)]
pub(super) struct EndpointRef {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
}

impl EndpointRef {
    pub fn check(&self) -> Result<(), DriverError> {
        check_id("network", &self.network_id)?;
        check_id("endpoint", &self.endpoint_id)
    }
}

impl Driver {
    pub(super) fn endpoint_path(&self, id: &str) -> std::path::PathBuf {
        record_path(&self.run_dir, id)
    }

    /// The record of endpoint `r` (refused if it is another network's).
    pub(super) async fn endpoint(&self, r: &EndpointRef) -> Result<EndpointRecord, DriverError> {
        r.check()?;
        let ep: Option<EndpointRecord> = read_record(self.endpoint_path(&r.endpoint_id)).await?;
        ep.filter(|e| e.network == r.network_id).ok_or_else(|| {
            DriverError(format!(
                "endpoint {} of network {} is not known to the switch driver (it was made before a reboot?): \
                 start the container again",
                &r.endpoint_id[..12],
                &r.network_id[..12]
            ))
        })
    }

    pub(super) async fn save_endpoint(&self, ep: &EndpointRecord) -> Result<(), DriverError> {
        write_record(self.endpoint_path(&ep.endpoint), ep).await
    }
}

/// CreateEndpoint: the address Docker gives, checked against the network's segment, and a
/// MAC (Docker's, or one chosen here and told to Docker: the reply has only the fields
/// Docker did not give, as the protocol wants).
pub(super) async fn create(d: &Driver, req: CreateRequest) -> Reply {
    let r = EndpointRef { network_id: req.network_id, endpoint_id: req.endpoint_id };
    r.check()?;
    let net = network::ensure(d, &r.network_id).await?;
    let iface = req.interface.ok_or_else(|| DriverError("Docker gave the endpoint no interface".into()))?;
    if !iface.address_ipv6.is_empty() {
        return Err(DriverError("IPv6 is not supported by the switch driver".into()));
    }
    if iface.address.is_empty() {
        return Err(DriverError("Docker's IPAM gave the endpoint no IPv4 address".into()));
    }
    let address: Cidr = iface.address.parse()?;
    if !net.gateway.contains(address.addr) || address.addr == net.gateway.addr {
        return Err(DriverError(format!("address {address} is not a container's on segment {}", net.gateway)));
    }
    let given = !iface.mac_address.is_empty();
    let mac = if given { iface.mac_address.parse::<Mac>()?.validate_station()? } else { mac_of(address.addr) };
    let ep = EndpointRecord { network: r.network_id, endpoint: r.endpoint_id, address, mac, published: vec![] };
    d.save_endpoint(&ep).await?;
    Ok(if given { json!({}) } else { json!({ "Interface": { "MacAddress": mac.to_string() } }) })
}

/// The MAC of a container at `addr` when Docker gives none, derived from the address as
/// Docker's own bridge driver does (02:42 and the address's four bytes): a container that
/// takes over an address another had gets the same MAC, so the neighbour entries the host and
/// the other containers have for the address stay right. With a random MAC they were stale
/// for seconds (until the kernel probed the old MAC and gave up): pings and forwarded
/// connections to a reused address went to a MAC no port had.
fn mac_of(addr: std::net::Ipv4Addr) -> Mac {
    let [a, b, c, d] = addr.octets();
    Mac([0x02, 0x42, a, b, c, d])
}

/// DeleteEndpoint: the port if Leave did not take it (a driver restarted in between), and
/// the record. Unknown endpoints are fine: the reboot took them.
pub(super) async fn delete(d: &Driver, r: EndpointRef) -> Reply {
    r.check()?;
    ns::detach(&port_name(&r.endpoint_id), Some(&super::switch_name(&r.network_id))).await?;
    remove_record(d.endpoint_path(&r.endpoint_id)).await?;
    Ok(json!({}))
}

/// EndpointOperInfo: the port, its switch and what is published to it (`docker network
/// inspect` does not show these, but `docker` asks).
pub(super) async fn oper_info(d: &Driver, r: EndpointRef) -> Reply {
    let ep = d.endpoint(&r).await?;
    let published: Vec<Value> = ep
        .published
        .iter()
        .map(|p| json!({ "proto": p.proto, "host_port": p.host_port, "container_port": p.container_port }))
        .collect();
    Ok(json!({ "Value": {
        "switch": super::switch_name(&ep.network),
        "port": port_name(&ep.endpoint),
        "mac": ep.mac.to_string(),
        "published": published,
    }}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mac_from_the_address_as_docker_makes_it() {
        let mac = mac_of("10.195.1.250".parse().unwrap());
        assert_eq!(mac.to_string(), "02:42:0a:c3:01:fa");
        assert!(mac.validate_station().is_ok(), "a locally administered unicast MAC");
    }
}
