//! The CNI spec's data: the network configuration a runtime passes, results in each
//! version's format, errors with the spec's codes.
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::Deserialize;
use serde_json::{Value, json};

use super::SUPPORTED_VERSIONS;
use crate::{
    Error,
    names::{Cidr, Cidr6, Mac},
};

/// The spec's error codes (and this plugin's own, from 100).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// The config's `cniVersion` is not one this plugin speaks.
    IncompatibleVersion = 1,
    /// A `CNI_*` variable is missing or wrong.
    InvalidEnv = 4,
    /// The config is not JSON.
    Decode = 6,
    /// The config is JSON but not a valid network configuration for this plugin.
    InvalidConfig = 7,
    /// Transient: the caller may try again.
    TryAgain = 11,
    /// The switch refused (its message says why).
    Switch = 100,
    /// The IPAM plugin could not be run or answered nonsense.
    Ipam = 101,
    /// What CHECK found wrong.
    Check = 102,
}

/// An error as the spec prints it on stdout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniError {
    /// The spec's code.
    pub code: u32,
    /// One line.
    pub msg: String,
    /// More, if any.
    pub details: String,
    /// The version the error is reported in.
    pub cni_version: String,
}

impl CniError {
    /// An error with `code`.
    pub fn new(code: Code, msg: impl Into<String>) -> Self {
        Self { code: code as u32, msg: msg.into(), details: String::new(), cni_version: "1.0.0".into() }
    }

    /// The same error, reported in the config's version (if this plugin speaks it).
    pub fn in_version(mut self, v: &str) -> Self {
        if SUPPORTED_VERSIONS.contains(&v) {
            self.cni_version = v.to_owned();
        }
        self
    }

    /// The JSON the spec wants on stdout.
    pub fn to_json(&self) -> Value {
        json!({ "cniVersion": self.cni_version, "code": self.code, "msg": self.msg, "details": self.details })
    }
}

impl From<Error> for CniError {
    fn from(e: Error) -> Self {
        let code = match e {
            Error::Invalid { .. } | Error::Conflict { .. } => Code::InvalidConfig,
            _ => Code::Switch,
        };
        Self::new(code, e.to_string())
    }
}

/// `uplink`: one interface or several.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Uplinks {
    /// One.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// A published port (`runtimeConfig.portMappings`, one per port: runtimes expand ranges).
///
/// containerd's CRI plugin (go-cni, which has no JSON tags on its struct) sends the Go field
/// names, `{"HostPort":8080,"ContainerPort":80,"Protocol":"tcp","HostIP":""}`; the reference
/// plugins read them because Go's JSON decoding ignores case. Both spellings are taken.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// The host's port.
    #[serde(alias = "HostPort")]
    pub host_port: u16,
    /// The container's.
    #[serde(alias = "ContainerPort")]
    pub container_port: u16,
    /// `tcp` or `udp`.
    #[serde(default = "tcp", alias = "Protocol")]
    pub protocol: String,
    /// The host address it answers on ("" or 0.0.0.0: every uplink address).
    #[serde(default, rename = "hostIP", alias = "HostIP")]
    pub host_ip: String,
}

fn tcp() -> String {
    "tcp".into()
}

/// What the runtime passes for capabilities the plugin declares.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    /// `portMappings`.
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    /// `mac`: the container's MAC.
    #[serde(default)]
    pub mac: Option<String>,
    /// `ips`: addresses asked for (passed on to IPAM, which honours them).
    #[serde(default)]
    pub ips: Vec<String>,
}

/// The network configuration (the keys this plugin reads; others are ignored, as the spec
/// wants).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    /// Spec version of the config (and of the result).
    pub cni_version: String,
    /// Network name.
    pub name: String,
    /// `switch-cni`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The switch (made if it is not up): defaults to the network's name.
    #[serde(default)]
    pub switch: Option<String>,
    /// The host's address on the segment (CIDR); defaults to the IPAM result's gateway.
    #[serde(default)]
    pub gateway: Option<String>,
    /// `tc` (default), `xdp`, `userspace` or `bridge`.
    #[serde(default)]
    pub datapath: Option<String>,
    /// Where published ports answer.
    #[serde(default)]
    pub uplink: Option<Uplinks>,
    /// Masquerade outbound traffic (default true).
    #[serde(default)]
    pub ip_masq: Option<bool>,
    /// MTU of the containers' interfaces.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Port security (default true).
    #[serde(default)]
    pub port_security: Option<bool>,
    /// The IPAM plugin's configuration (`type` names it).
    #[serde(default)]
    pub ipam: Option<Value>,
    /// Capability arguments.
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    /// The previous plugin's result, when chained (and CHECK's).
    #[serde(default)]
    pub prev_result: Option<Value>,
    /// DNS settings for the result (`nameservers`, `domain`, `search`, `options`); IPAM's
    /// when not set.
    #[serde(default)]
    pub dns: Option<Value>,
}

impl NetConf {
    /// Parses and checks a configuration.
    pub fn parse(raw: Value) -> Result<Self, CniError> {
        let conf: NetConf = serde_json::from_value(raw)
            .map_err(|e| CniError::new(Code::InvalidConfig, format!("invalid network configuration: {e}")))?;
        if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
            return Err(CniError::new(
                Code::IncompatibleVersion,
                format!(
                    "cniVersion {} is not supported (supported: {})",
                    conf.cni_version,
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }
        Ok(conf)
    }

    /// The switch's name: `switch`, or the network's name.
    pub fn switch_name(&self) -> &str {
        self.switch.as_deref().unwrap_or(&self.name)
    }

    /// The uplinks, as a list.
    pub fn uplinks(&self) -> Vec<String> {
        match &self.uplink {
            None => vec![],
            Some(Uplinks::One(u)) => vec![u.clone()],
            Some(Uplinks::Many(v)) => v.clone(),
        }
    }

    /// `mtu`, checked.
    pub fn mtu(&self) -> Result<Option<u32>, CniError> {
        match self.mtu {
            Some(m) if !(68..=65_535).contains(&m) => {
                Err(CniError::new(Code::InvalidConfig, format!("mtu {m} is not between 68 and 65535")))
            }
            m => Ok(m),
        }
    }

    /// The container's MAC: `runtimeConfig.mac`, else `MAC=` in `CNI_ARGS`.
    pub fn mac(&self, args_mac: Option<&str>) -> Result<Option<Mac>, CniError> {
        match self.runtime_config.mac.as_deref().or(args_mac).filter(|m| !m.is_empty()) {
            None => Ok(None),
            Some(m) => m.parse().map(Some).map_err(|e: Error| CniError::new(Code::InvalidConfig, e.to_string())),
        }
    }
}

/// The address an IPAM plugin (or a previous plugin) handed out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The container's address.
    pub address: Cidr,
    /// The segment's gateway, if the IPAM result names one.
    pub gateway: Option<Ipv4Addr>,
    /// The container's IPv6 address, when IPAM gives one too (host-local with an IPv6
    /// range beside the IPv4 one).
    pub address6: Option<Cidr6>,
    /// The IPv6 segment's gateway, if the IPAM result names one.
    pub gateway6: Option<Ipv6Addr>,
    /// DNS settings, passed through.
    pub dns: Value,
    /// The result's routes, as given.
    pub routes: Vec<Value>,
}

/// Reads the first IPv4 address of a result of any supported version, and the first IPv6
/// address if it has one.
pub fn lease_of(result: &Value) -> Result<Lease, CniError> {
    let bad = |why: &str| CniError::new(Code::Ipam, format!("the IPAM result {why}: {result}"));
    let ips = result.get("ips").and_then(Value::as_array).ok_or_else(|| bad("has no ips"))?;
    let family = |v6: bool| {
        ips.iter().find(|ip| ip.get("address").and_then(Value::as_str).is_some_and(|a| a.contains(':') == v6))
    };
    let ip = family(false).ok_or_else(|| bad("has no IPv4 address"))?;
    let address: Cidr =
        ip["address"].as_str().unwrap_or_default().parse().map_err(|_| bad("has an address that is not a CIDR"))?;
    let gateway = gateway_of(ip).map_err(|_| bad("has a gateway that is not an address"))?;
    let (address6, gateway6) = match family(true) {
        Some(ip) => {
            let a: Cidr6 = ip["address"]
                .as_str()
                .unwrap_or_default()
                .parse()
                .map_err(|_| bad("has an IPv6 address that is not a CIDR"))?;
            (Some(a), gateway_of(ip).map_err(|_| bad("has an IPv6 gateway that is not an address"))?)
        }
        None => (None, None),
    };
    let routes = result.get("routes").and_then(Value::as_array).cloned().unwrap_or_default();
    let dns = result.get("dns").cloned().unwrap_or_else(|| json!({}));
    Ok(Lease { address, gateway, address6, gateway6, dns, routes })
}

/// The `gateway` of a result's address entry, if it names one.
fn gateway_of<A: std::str::FromStr>(ip: &Value) -> Result<Option<A>, A::Err> {
    ip.get("gateway").and_then(Value::as_str).map(str::parse).transpose()
}

/// The address of a result on the container's interface `ifname` (the result of a chain may
/// hold other plugins' addresses too); the first IPv4 address if none says it is on it.
pub fn lease_on(result: &Value, ifname: &str) -> Result<Lease, CniError> {
    let on_it = |ip: &&Value| {
        let i = ip.get("interface").and_then(Value::as_u64).and_then(|i| result.get("interfaces")?.get(i as usize));
        i.is_some_and(|i| i["name"] == ifname && i.get("sandbox").is_some())
    };
    let mine: Vec<Value> =
        result.get("ips").and_then(Value::as_array).into_iter().flatten().filter(on_it).cloned().collect();
    if mine.is_empty() {
        return lease_of(result);
    }
    let mut narrowed = result.clone();
    narrowed["ips"] = Value::Array(mine);
    lease_of(&narrowed)
}

/// What ADD made: the host's end of the port, the container's interface, its MAC and the
/// namespace file.
pub struct Plugged<'a> {
    /// The host's end.
    pub host_if: &'a str,
    /// The container's interface (`CNI_IFNAME`).
    pub ifname: &'a str,
    /// Its MAC.
    pub mac: &'a str,
    /// `CNI_NETNS`.
    pub netns: &'a str,
    /// Whether the container's default route is the attachment's (via the gateway).
    pub default_route: bool,
}

/// `r[key]` as a list (made one if it is missing or something else).
fn list<'a>(r: &'a mut Value, key: &str) -> &'a mut Vec<Value> {
    if !r[key].is_array() {
        r[key] = json!([]);
    }
    r[key].as_array_mut().expect("made a list")
}

/// Whether `v` is a DNS setting that says something (not missing, not `{}`).
fn says_something(v: &Value) -> bool {
    v.as_object().is_some_and(|o| !o.is_empty())
}

/// The ADD result in `conf`'s version: the previous plugin's result (`prevResult`), if any,
/// kept and extended with the host's and the container's interface, the address on the
/// container's (added, or, if it came from `prevResult`, pointed at the container's
/// interface), the default route via the gateway and IPAM's other routes, and DNS: the
/// configuration's `dns`, else the previous result's, else IPAM's.
pub fn add_result(conf: &NetConf, plugged: &Plugged<'_>, lease: &Lease) -> Value {
    let version = conf.cni_version.as_str();
    let mut r = conf.prev_result.clone().filter(Value::is_object).unwrap_or_else(|| json!({}));
    r["cniVersion"] = json!(version);
    let interfaces = list(&mut r, "interfaces");
    let index = interfaces.len() + 1;
    interfaces.push(json!({ "name": plugged.host_if }));
    interfaces.push(json!({ "name": plugged.ifname, "mac": plugged.mac, "sandbox": plugged.netns }));
    let ips = list(&mut r, "ips");
    let v4 = (lease.address.to_string(), lease.gateway.map(|g| g.to_string()), "4");
    let v6 = lease.address6.map(|a| (a.to_string(), lease.gateway6.map(|g| g.to_string()), "6"));
    for (address, gateway, family) in [Some(v4), v6].into_iter().flatten() {
        if let Some(ip) = ips.iter_mut().find(|ip| ip["address"] == address.as_str()) {
            ip["interface"] = json!(index);
            continue;
        }
        let mut ip = json!({ "address": address, "interface": index });
        if let Some(g) = gateway {
            ip["gateway"] = json!(g);
        }
        // Before 1.0.0 every address said its IP version.
        if version.starts_with("0.") {
            ip["version"] = json!(family);
        }
        ips.push(ip);
    }
    let default_route =
        |gw: Option<String>, dst: &str| gw.filter(|_| plugged.default_route).map(|g| json!({ "dst": dst, "gw": g }));
    let default = default_route(lease.gateway.map(|g| g.to_string()), "0.0.0.0/0");
    let default6 = default_route(lease.gateway6.filter(|_| lease.address6.is_some()).map(|g| g.to_string()), "::/0");
    let routes = list(&mut r, "routes");
    // IPAM's default routes (host-local's usual `{"dst": "0.0.0.0/0"}`, `{"dst": "::/0"}`)
    // are the gateway's, there if the attachment made them.
    let others = lease.routes.iter().filter(|x| x["dst"] != "0.0.0.0/0" && x["dst"] != "::/0");
    for route in default.iter().chain(&default6).chain(others) {
        if !routes.contains(route) {
            routes.push(route.clone());
        }
    }
    let dns = [conf.dns.as_ref(), r.get("dns"), Some(&lease.dns)].into_iter().flatten().find(|d| says_something(d));
    let dns = dns.cloned().unwrap_or_else(|| json!({}));
    r["dns"] = dns;
    r
}

/// VERSION's answer.
pub fn version_result() -> Value {
    json!({ "cniVersion": "1.1.0", "supportedVersions": SUPPORTED_VERSIONS })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(v: Value) -> Result<NetConf, CniError> {
        NetConf::parse(v)
    }

    #[test]
    fn configs_are_checked() {
        let ok = conf(json!({"cniVersion": "0.4.0", "name": "net", "type": "switch-cni", "unknown": 1})).unwrap();
        assert_eq!((ok.switch_name(), ok.uplinks()), ("net", vec![]));
        let e = conf(json!({"cniVersion": "0.2.0", "name": "n", "type": "switch-cni"})).unwrap_err();
        assert_eq!(e.code, Code::IncompatibleVersion as u32);
        let e = conf(json!({"name": "n", "type": "switch-cni"})).unwrap_err();
        assert_eq!(e.code, Code::InvalidConfig as u32, "{e:?}");
        let many = conf(json!({"cniVersion": "1.0.0", "name": "n", "type": "t", "uplink": ["a", "b"]})).unwrap();
        assert_eq!(many.uplinks(), ["a", "b"]);
        let bad = conf(json!({"cniVersion": "1.0.0", "name": "n", "type": "t", "mtu": 20})).unwrap();
        assert!(bad.mtu().is_err());
    }

    #[test]
    fn port_mappings_in_both_spellings() {
        let with = |m: Value| {
            let c = json!({"cniVersion": "1.0.0", "name": "n", "type": "t", "runtimeConfig": {"portMappings": [m]}});
            conf(c).map(|c| c.runtime_config.port_mappings)
        };
        let want =
            vec![PortMapping { host_port: 8080, container_port: 80, protocol: "tcp".into(), host_ip: "".into() }];
        // podman, the spec's examples.
        assert_eq!(with(json!({"hostPort": 8080, "containerPort": 80, "protocol": "tcp"})).unwrap(), want);
        // containerd's CRI plugin (go-cni), as it was seen sending them.
        let cri = json!({"HostPort": 8080, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""});
        assert_eq!(with(cri).unwrap(), want);
        assert!(with(json!({"containerPort": 80})).is_err(), "a mapping without a host port is taken");
    }

    #[test]
    fn results_follow_the_version() {
        let lease = Lease {
            address: "10.1.0.5/24".parse().unwrap(),
            gateway: Some([10, 1, 0, 1].into()),
            address6: None,
            gateway6: None,
            dns: json!({}),
            routes: vec![json!({ "dst": "0.0.0.0/0", "gw": "10.1.0.1" })],
        };
        let plugged = Plugged {
            host_if: "sx",
            ifname: "eth0",
            mac: "02:00:00:00:00:01",
            netns: "/run/netns/x",
            default_route: true,
        };
        let version = |v: &str| conf(json!({"cniVersion": v, "name": "n", "type": "switch-cni"})).unwrap();
        let old = add_result(&version("0.4.0"), &plugged, &lease);
        assert_eq!(old["ips"][0]["version"], "4");
        assert_eq!(old["interfaces"][1]["sandbox"], "/run/netns/x");
        let new = add_result(&version("1.0.0"), &plugged, &lease);
        assert!(new["ips"][0].get("version").is_none());
        assert_eq!(new["routes"][0]["gw"], "10.1.0.1");
        assert_eq!(lease_of(&new).unwrap(), lease);
    }

    #[test]
    fn dual_stack_results_carry_both_families() {
        // host-local with an IPv4 and an IPv6 range, as it answers (1.0.0).
        let ipam = json!({
            "cniVersion": "1.0.0",
            "ips": [
                { "address": "10.1.0.5/24", "gateway": "10.1.0.1" },
                { "address": "fd00:1::5/64", "gateway": "fd00:1::1" },
            ],
            "routes": [{ "dst": "0.0.0.0/0" }, { "dst": "::/0" }],
            "dns": {},
        });
        let lease = lease_of(&ipam).unwrap();
        assert_eq!(lease.address6, Some("fd00:1::5/64".parse().unwrap()));
        assert_eq!(lease.gateway6, Some("fd00:1::1".parse().unwrap()));
        let plugged = Plugged {
            host_if: "sx",
            ifname: "eth0",
            mac: "02:00:00:00:00:01",
            netns: "/run/netns/x",
            default_route: true,
        };
        let version = |v: &str| conf(json!({"cniVersion": v, "name": "n", "type": "switch-cni"})).unwrap();
        let r = add_result(&version("1.0.0"), &plugged, &lease);
        let ips: Vec<(&str, &str)> = r["ips"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| (i["address"].as_str().unwrap(), i["gateway"].as_str().unwrap()))
            .collect();
        assert_eq!(ips, [("10.1.0.5/24", "10.1.0.1"), ("fd00:1::5/64", "fd00:1::1")]);
        assert_eq!(
            r["routes"],
            json!([{ "dst": "0.0.0.0/0", "gw": "10.1.0.1" }, { "dst": "::/0", "gw": "fd00:1::1" }])
        );
        let old = add_result(&version("0.4.0"), &plugged, &lease);
        assert_eq!((old["ips"][0]["version"].as_str(), old["ips"][1]["version"].as_str()), (Some("4"), Some("6")));
        let back = lease_of(&r).unwrap();
        assert_eq!((back.address, back.address6, back.gateway6), (lease.address, lease.address6, lease.gateway6));
        // An IPv6-only result is refused (the switch needs an IPv4 segment).
        let only6 = json!({ "ips": [{ "address": "fd00:1::5/64" }] });
        assert!(lease_of(&only6).unwrap_err().msg.contains("no IPv4 address"));
    }

    #[test]
    fn a_previous_result_is_extended() {
        let lease = Lease {
            address: "10.1.0.5/24".parse().unwrap(),
            gateway: Some([10, 1, 0, 1].into()),
            address6: None,
            gateway6: None,
            dns: json!({ "nameservers": ["10.1.0.53"] }),
            routes: vec![json!({ "dst": "0.0.0.0/0" }), json!({ "dst": "10.9.0.0/16" })],
        };
        let plugged = Plugged {
            host_if: "sx",
            ifname: "net1",
            mac: "02:00:00:00:00:01",
            netns: "/run/netns/x",
            default_route: true,
        };
        let prev = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{ "name": "eth0", "sandbox": "/run/netns/x" }],
            "ips": [{ "address": "10.2.0.5/24", "interface": 0 }],
            "routes": [{ "dst": "10.2.0.0/16" }],
        });
        let c = json!({"cniVersion": "1.0.0", "name": "n", "type": "t", "prevResult": prev, "dns": {"search": ["x"]}});
        let r = add_result(&conf(c).unwrap(), &plugged, &lease);
        let names: Vec<&str> =
            r["interfaces"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["eth0", "sx", "net1"]);
        assert_eq!((r["ips"][0]["interface"].as_u64(), r["ips"][1]["interface"].as_u64()), (Some(0), Some(2)));
        assert_eq!(r["ips"][1]["address"], "10.1.0.5/24");
        let dsts: Vec<&str> = r["routes"].as_array().unwrap().iter().map(|x| x["dst"].as_str().unwrap()).collect();
        assert_eq!(dsts, ["10.2.0.0/16", "0.0.0.0/0", "10.9.0.0/16"]);
        assert_eq!(r["dns"], json!({"search": ["x"]}), "the configuration's dns wins");
        assert_eq!(lease_on(&r, "net1").unwrap().address, lease.address);
        assert_eq!(lease_on(&r, "eth0").unwrap().address.to_string(), "10.2.0.5/24");
    }

    #[test]
    fn ipam_results_without_an_ipv4_address_are_refused() {
        assert!(lease_of(&json!({"ips": []})).is_err());
        assert!(lease_of(&json!({"ips": [{"address": "fd00::1/64"}]})).is_err());
        assert!(lease_of(&json!({"ips": [{"address": "10.0.0.1"}]})).is_err());
    }
}
