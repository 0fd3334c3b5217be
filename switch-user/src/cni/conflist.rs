//! The network configuration `switch-cni install` writes: the user's own conflist, checked, or
//! a default one made from a few options (`Defaults`).
//!
//! The default, for `--subnet 10.244.0.0/16 --range 10.244.1.0/24` (the keys are those of
//! [`NetConf`]; docs/kubernetes.md explains the choice of subnet and range):
//!
//! ```json
//! { "cniVersion": "1.0.0", "name": "switch",
//!   "plugins": [{ "type": "switch-cni", "switch": "switch", "ipMasq": true,
//!     "capabilities": { "portMappings": true, "mac": true, "ips": true },
//!     "ipam": { "type": "host-local", "ranges": [[{ "subnet": "10.244.0.0/16",
//!       "rangeStart": "10.244.1.2", "rangeEnd": "10.244.1.254", "gateway": "10.244.1.1" }]] } }] }
//! ```
use std::{net::Ipv4Addr, path::Path};

use serde::Serialize;
use serde_json::{Value, json};

use super::spec::NetConf;
use crate::{
    error::{Error, Result},
    names::validate_name,
};

/// The plugin's `type`, as a conflist names it.
pub const PLUGIN_TYPE: &str = "switch-cni";

/// The spec version of the default conflist (containerd 1.6 and CRI-O speak it).
const DEFAULT_VERSION: &str = "1.0.0";

/// A subnet as `ADDRESS/PREFIX` with the network address (`10.244.1.0/24`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet {
    /// The network address.
    pub network: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
}

impl std::str::FromStr for Subnet {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: &str| Error::invalid("subnet", s, reason);
        let (a, p) = s.split_once('/').ok_or_else(|| bad("expected NETWORK/PREFIX, e.g. 10.244.1.0/24"))?;
        let network: Ipv4Addr = a.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = p.parse().map_err(|_| bad("prefix length is not a number"))?;
        // /8 is the shortest gateway prefix the switch takes; /30 leaves a gateway and one pod.
        if !(8..=30).contains(&prefix) {
            return Err(bad("prefix length must be between 8 and 30"));
        }
        let subnet = Self { network, prefix };
        if subnet.first() != network {
            return Err(bad(&format!("is not a network address (did you mean {}/{prefix}?)", subnet.first())));
        }
        Ok(subnet)
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Subnet {
    fn mask(self) -> u32 {
        u32::MAX << (32 - self.prefix)
    }

    /// The network address.
    fn first(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) & self.mask())
    }

    /// The broadcast address.
    fn last(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.first()) | !self.mask())
    }

    /// The `n`th address after the network address.
    fn nth(self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.first()) + n)
    }

    fn contains(self, other: Subnet) -> bool {
        other.prefix >= self.prefix && u32::from(other.network) & self.mask() == u32::from(self.first())
    }
}

/// What the default conflist is made from (`switch-cni install` without `--conf`).
#[derive(Clone, Debug)]
pub struct Defaults {
    /// The network's name (`name`): what runtimes and `switch ports` call it.
    pub name: String,
    /// The switch (`switch`); the network's name if unset.
    pub switch: Option<String>,
    /// The pods' segment (host-local's `subnet`).
    pub subnet: Subnet,
    /// The part of the segment this node hands out (the node's pod CIDR); all of it if unset.
    pub range: Option<Subnet>,
    /// `uplink`: where published ports (hostPort) answer.
    pub uplinks: Vec<String>,
    /// `datapath`; the plugin's default (tc) if unset.
    pub datapath: Option<String>,
    /// `mtu` of the pods' interfaces.
    pub mtu: Option<u32>,
    /// `ipMasq`: masquerade the pods' traffic to the outside.
    pub masquerade: bool,
}

impl Defaults {
    /// The conflist as its file holds it, checked as a runtime's configuration would be.
    pub fn conflist(&self) -> Result<Vec<u8>> {
        validate_name("network name", &self.name)?;
        let switch = self.switch.clone().unwrap_or_else(|| self.name.clone());
        validate_name("switch name", &switch)?;
        let range = self.range.unwrap_or(self.subnet);
        if !self.subnet.contains(range) {
            return Err(Error::invalid("range", range.to_string(), format!("is not inside subnet {}", self.subnet)));
        }
        let plugin = Plugin {
            kind: PLUGIN_TYPE,
            switch: &switch,
            datapath: self.datapath.as_deref(),
            uplink: &self.uplinks,
            ip_masq: self.masquerade,
            mtu: self.mtu,
            capabilities: json!({ "portMappings": true, "mac": true, "ips": true }),
            // The gateway is the range's first address; host-local never hands it out.
            ipam: Ipam {
                kind: "host-local",
                ranges: [[Range {
                    subnet: self.subnet.to_string(),
                    range_start: range.nth(2).to_string(),
                    range_end: Ipv4Addr::from(u32::from(range.last()) - 1).to_string(),
                    gateway: range.nth(1).to_string(),
                }]],
            },
        };
        let list = List { cni_version: DEFAULT_VERSION, name: &self.name, plugins: [plugin] };
        let value = serde_json::to_value(&list).expect("the conflist serializes");
        check(&value).map_err(|reason| Error::invalid("network configuration", "(default)", reason))?;
        let mut bytes = serde_json::to_vec_pretty(&list).expect("the conflist serializes");
        bytes.push(b'\n');
        Ok(bytes)
    }
}

// The default conflist's shape: structs rather than a JSON value, so that the file lists the
// keys in the order people read them (a JSON map here sorts them).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct List<'a> {
    cni_version: &'a str,
    name: &'a str,
    plugins: [Plugin<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Plugin<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    switch: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    datapath: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    uplink: &'a [String],
    ip_masq: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtu: Option<u32>,
    capabilities: Value,
    ipam: Ipam,
}

#[derive(Serialize)]
struct Ipam {
    #[serde(rename = "type")]
    kind: &'static str,
    ranges: [[Range; 1]; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Range {
    subnet: String,
    range_start: String,
    range_end: String,
    gateway: String,
}

/// Reads and checks the user's conflist (`--conf FILE`): JSON, a conflist (`cniVersion`,
/// `name`, `plugins`), and a `switch-cni` plugin in it whose keys the plugin takes.
pub fn read_user_conflist(path: &Path) -> Result<Vec<u8>> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| Error::invalid("--conf", &shown, e.to_string()))?;
    let list: Value =
        serde_json::from_slice(&bytes).map_err(|e| Error::invalid("--conf", &shown, format!("not JSON: {e}")))?;
    check(&list).map_err(|reason| Error::invalid("--conf", &shown, reason))?;
    Ok(bytes)
}

/// Whether `list` is a conflist with a `switch-cni` plugin the plugin would take (as a runtime
/// passes it: the list's `cniVersion` and `name` merged into the plugin's keys).
fn check(list: &Value) -> std::result::Result<(), String> {
    let text = |key: &str| list.get(key).and_then(Value::as_str).filter(|s| !s.is_empty());
    let version = text("cniVersion").ok_or("no cniVersion")?;
    let name = text("name").ok_or("no name")?;
    let plugins = list
        .get("plugins")
        .and_then(Value::as_array)
        .ok_or("not a conflist (no \"plugins\" list; a single .conf is not taken)")?;
    let ours = plugins
        .iter()
        .find(|p| p.get("type").and_then(Value::as_str) == Some(PLUGIN_TYPE))
        .ok_or_else(|| format!("no plugin of type {PLUGIN_TYPE} in its plugins"))?;
    let mut conf = ours.clone();
    conf["cniVersion"] = json!(version);
    conf["name"] = json!(name);
    let parsed = NetConf::parse(conf).map_err(|e| e.msg)?;
    parsed.mtu().map_err(|e| e.msg)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults(subnet: &str, range: Option<&str>) -> Defaults {
        Defaults {
            name: "k8s".into(),
            switch: None,
            subnet: subnet.parse().unwrap(),
            range: range.map(|r| r.parse().unwrap()),
            uplinks: vec![],
            datapath: None,
            mtu: None,
            masquerade: true,
        }
    }

    #[test]
    fn subnets_are_network_addresses() {
        assert_eq!("10.244.1.0/24".parse::<Subnet>().unwrap().to_string(), "10.244.1.0/24");
        let e = "10.244.1.1/24".parse::<Subnet>().unwrap_err().to_string();
        assert!(e.contains("did you mean 10.244.1.0/24"), "{e}");
        for bad in ["10.0.0.0/4", "10.0.0.0/31", "10.0.0.0", "x/24"] {
            assert!(bad.parse::<Subnet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_default_hands_out_the_range_with_its_first_address_as_gateway() {
        let bytes = defaults("10.244.0.0/16", Some("10.244.1.0/24")).conflist().unwrap();
        let text = String::from_utf8(bytes).unwrap();
        let order: Vec<usize> = ["cniVersion", "name", "type", "switch", "ipam", "rangeStart", "gateway"]
            .iter()
            .map(|k| text.find(&format!("\"{k}\"")).unwrap())
            .collect();
        assert!(order.is_sorted(), "keys out of reading order: {text}");
        let l: Value = serde_json::from_str(&text).unwrap();
        let r = &l["plugins"][0]["ipam"]["ranges"][0][0];
        assert_eq!(
            (r["subnet"].as_str(), r["rangeStart"].as_str(), r["rangeEnd"].as_str(), r["gateway"].as_str()),
            (Some("10.244.0.0/16"), Some("10.244.1.2"), Some("10.244.1.254"), Some("10.244.1.1"))
        );
        assert_eq!(l["plugins"][0]["switch"], "k8s");
        assert!(defaults("10.244.0.0/16", Some("10.245.1.0/24")).conflist().is_err());
        assert!(defaults("10.244.1.0/24", Some("10.244.0.0/16")).conflist().is_err());
    }

    #[test]
    fn a_conflist_must_name_switch_cni() {
        let ok = json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "portmap"}, {"type": "switch-cni"}]});
        assert!(check(&ok).is_ok());
        let other = json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "bridge"}]});
        assert!(check(&other).unwrap_err().contains("switch-cni"));
        let single = json!({"cniVersion": "1.0.0", "name": "n", "type": "switch-cni"});
        assert!(check(&single).unwrap_err().contains("conflist"));
        let old = json!({"cniVersion": "0.2.0", "name": "n", "plugins": [{"type": "switch-cni"}]});
        assert!(check(&old).is_err());
        let mtu = json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "switch-cni", "mtu": 9}]});
        assert!(check(&mtu).is_err());
    }
}
