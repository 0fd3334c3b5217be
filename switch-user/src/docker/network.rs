//! CreateNetwork and DeleteNetwork: a Docker network is a switch whose gateway is the one
//! Docker's IPAM chose, with the options given by `docker network create -o`. The options are
//! kept (`DATA_DIR/networks/ID.json`) so the switch can be made again where Docker knows the
//! network and the host does not (after a reboot: Docker does not call CreateNetwork again).
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{
    Driver, DriverError, Reply, check_id, firewall, read_record, record_path, remove_record, switch_name, write_record,
};
use crate::{controller::switch, kind::DatapathKind, names::Cidr};

/// Where Docker puts the options of `-o KEY=VALUE`.
const GENERIC: &str = "com.docker.network.generic";
/// Docker's own name of the MTU option (`-o com.docker.network.driver.mtu=N`), taken too.
const DOCKER_MTU: &str = "com.docker.network.driver.mtu";

/// The options a network takes (`-o`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct NetOptions {
    /// `uplink=IFACE[,IFACE...]`: where `-p` answers and outbound traffic leaves.
    pub uplinks: Vec<String>,
    /// `datapath=tc|xdp|userspace|bridge`.
    pub datapath: Option<DatapathKind>,
    /// `masquerade=false` turns it off.
    pub masquerade: bool,
    /// `port-security=false` turns it off (containers that carry other stations).
    pub port_security: bool,
    /// `mtu=N`: the containers' interfaces.
    pub mtu: Option<u32>,
}

/// What the driver keeps of a network.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct NetworkRecord {
    /// Docker's network ID.
    pub id: String,
    /// The gateway Docker's IPAM chose, with the subnet's prefix.
    pub gateway: Cidr,
    /// The options it was made with.
    pub options: NetOptions,
}

impl NetworkRecord {
    pub fn switch(&self) -> String {
        switch_name(&self.id)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct CreateRequest {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(default)]
    options: Map<String, Value>,
    #[serde(rename = "IPv4Data", default)]
    ipv4_data: Option<Vec<IpamData>>,
    #[serde(rename = "IPv6Data", default)]
    ipv6_data: Option<Vec<IpamData>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IpamData {
    #[serde(default)]
    pool: String,
    #[serde(default)]
    gateway: String,
}

#[derive(Deserialize)]
pub(super) struct NetworkRef {
    #[serde(rename = "NetworkID")]
    network_id: String,
}

fn bool_option(key: &str, v: &str) -> Result<bool, DriverError> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(DriverError(format!("option {key}={v}: true or false"))),
    }
}

/// The options of `-o`; anything else is refused, not ignored (a typo must not make a
/// network other than the one asked for).
pub(super) fn parse_options(generic: &Map<String, Value>) -> Result<NetOptions, DriverError> {
    let mut o = NetOptions { uplinks: vec![], datapath: None, masquerade: true, port_security: true, mtu: None };
    for (key, value) in generic {
        let v = value.as_str().ok_or_else(|| DriverError(format!("option {key}: not a string")))?;
        match key.as_str() {
            "uplink" => o.uplinks.extend(v.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned)),
            "datapath" => {
                o.datapath = Some(
                    serde_json::from_value(json!(v))
                        .map_err(|_| DriverError(format!("option datapath={v}: one of tc, xdp, userspace, bridge")))?,
                );
            }
            "masquerade" => o.masquerade = bool_option(key, v)?,
            "port-security" => o.port_security = bool_option(key, v)?,
            "mtu" | DOCKER_MTU => {
                let mtu = v.parse().ok().filter(|m| (68..=65_535).contains(m));
                o.mtu = Some(mtu.ok_or_else(|| DriverError(format!("option {key}={v}: a number from 68 to 65535")))?);
            }
            other => {
                return Err(DriverError(format!(
                    "unknown option '{other}' (the switch driver takes uplink, datapath, masquerade, port-security, mtu)"
                )));
            }
        }
    }
    Ok(o)
}

/// The gateway of the one IPv4 pool (IPv6 is not switched by this driver).
fn gateway(req: &CreateRequest) -> Result<Cidr, DriverError> {
    if req.ipv6_data.as_ref().is_some_and(|d| !d.is_empty())
        || req.options.get("com.docker.network.enable_ipv6").and_then(Value::as_bool) == Some(true)
    {
        return Err(DriverError(
            "IPv6 is not supported by the switch driver (create the network without --ipv6)".into(),
        ));
    }
    let pools = req.ipv4_data.as_deref().unwrap_or_default();
    let [pool] = pools else {
        return Err(DriverError(format!("the switch driver takes one IPv4 subnet, not {}", pools.len())));
    };
    if pool.gateway.is_empty() {
        return Err(DriverError(format!("Docker's IPAM gave subnet {} no gateway", pool.pool)));
    }
    Ok(pool.gateway.parse()?)
}

fn up_options(net: &NetworkRecord) -> switch::UpOptions {
    switch::UpOptions {
        name: net.switch(),
        datapath: net.options.datapath,
        gateway: Some(net.gateway),
        uplinks: net.options.uplinks.clone(),
        no_masquerade: !net.options.masquerade,
        ..Default::default()
    }
}

/// CreateNetwork: the switch, then its record (a switch whose record cannot be written is
/// taken down again).
pub(super) async fn create(d: &Driver, req: CreateRequest) -> Reply {
    check_id("network", &req.network_id)?;
    let empty = Map::new();
    let generic = match req.options.get(GENERIC) {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => return Err(DriverError(format!("{GENERIC} is not a map of options"))),
    };
    let net = NetworkRecord { id: req.network_id.clone(), gateway: gateway(&req)?, options: parse_options(generic)? };
    switch::up(up_options(&net)).await?;
    let finished = async {
        firewall::allow(&net.switch()).await?;
        write_record(record_path(&d.networks(), &net.id), &net).await
    };
    if let Err(e) = finished.await {
        let _ = firewall::revoke(&net.switch()).await;
        let _ = switch::down(&net.switch()).await;
        return Err(e);
    }
    Ok(json!({}))
}

/// DeleteNetwork: the switch and the record (gone already is fine).
pub(super) async fn delete(d: &Driver, req: NetworkRef) -> Reply {
    check_id("network", &req.network_id)?;
    switch::down(&switch_name(&req.network_id)).await?;
    firewall::revoke(&switch_name(&req.network_id)).await?;
    remove_record(record_path(&d.networks(), &req.network_id)).await?;
    Ok(json!({}))
}

/// The record of network `id`, with its switch made again if the host lost it (a reboot).
pub(super) async fn ensure(d: &Driver, id: &str) -> Result<NetworkRecord, DriverError> {
    check_id("network", id)?;
    let net: NetworkRecord = read_record(record_path(&d.networks(), id)).await?.ok_or_else(|| {
        DriverError(format!(
            "network {} is not known to the switch driver (no record in {}): remove it and create it again",
            &id[..12],
            d.networks().display()
        ))
    })?;
    let up = switch::list().await?.into_iter().any(|s| s.name == net.switch() && s.ready);
    if !up {
        tracing::info!("making switch {} of network {} again from its record", net.switch(), &id[..12]);
        switch::up(up_options(&net)).await?;
        firewall::allow(&net.switch()).await?;
    }
    Ok(net)
}

impl Driver {
    fn networks(&self) -> std::path::PathBuf {
        self.data_dir.join("networks")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(v: Value) -> Result<NetOptions, DriverError> {
        parse_options(v.as_object().unwrap())
    }

    #[test]
    fn options_are_taken_or_refused() {
        let o = opts(json!({"uplink": "eth1, eth2", "datapath": "xdp", "masquerade": "false", "mtu": "1400"})).unwrap();
        assert_eq!(o.uplinks, ["eth1", "eth2"]);
        assert_eq!(o.datapath, Some(DatapathKind::Xdp));
        assert!(!o.masquerade && o.port_security);
        assert_eq!(o.mtu, Some(1400));
        assert_eq!(opts(json!({DOCKER_MTU: "9000"})).unwrap().mtu, Some(9000));
        let defaults = opts(json!({})).unwrap();
        assert!(defaults.masquerade && defaults.port_security && defaults.uplinks.is_empty());
        for (bad, says) in [
            (json!({"uplnk": "eth1"}), "unknown option 'uplnk'"),
            (json!({"datapath": "ebpf"}), "one of tc, xdp"),
            (json!({"mtu": "67"}), "from 68 to 65535"),
            (json!({"port-security": "no"}), "true or false"),
            (json!({"mtu": 1400}), "not a string"),
        ] {
            let e = opts(bad.clone()).unwrap_err().0;
            assert!(e.contains(says) && !e.contains('\n'), "{bad}: {e}");
        }
    }
}
