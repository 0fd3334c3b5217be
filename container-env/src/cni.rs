//! The CNI network configurations the environments write: the reference chain podman makes
//! itself (bridge + portmap) and this project's switch-cni, both with host-local addresses.
use std::path::Path;

use serde_json::{Value, json};

/// A conflist named `name` of `plugins`, in the version podman 4.3 writes.
pub fn conflist(name: &str, plugins: Value) -> Value {
    json!({"cniVersion": "0.4.0", "name": name, "plugins": plugins})
}

/// host-local addresses from `subnet`, with `gateway` as the default route, reserved in
/// `data_dir` (not /var/lib/cni/networks: the reservations are checked, and go with the
/// environment).
pub fn host_local(data_dir: &Path, subnet: &str, gateway: &str) -> Value {
    json!({
        "type": "host-local",
        "dataDir": data_dir,
        "routes": [{"dst": "0.0.0.0/0"}],
        "ranges": [[{"subnet": subnet, "gateway": gateway}]],
    })
}

/// [`host_local`] with an IPv6 range beside the IPv4 one (`ranges: [[v4], [v6]]`): a
/// dual-stack network, each container given one address of each family, both default routes.
pub fn host_local_dual(data_dir: &Path, (subnet, gateway): (&str, &str), (subnet6, gateway6): (&str, &str)) -> Value {
    json!({
        "type": "host-local",
        "dataDir": data_dir,
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
        "ranges": [[{"subnet": subnet, "gateway": gateway}], [{"subnet": subnet6, "gateway": gateway6}]],
    })
}

/// Podman's own recipe (what `podman network create` writes), with portmap: the baseline
/// every comparison of switch-cni is made against. `ipam` as [`host_local`] makes it.
pub fn bridge_portmap(bridge: &str, ipam: Value) -> Value {
    json!([
        {"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": true, "hairpinMode": true, "ipam": ipam},
        {"type": "portmap", "capabilities": {"portMappings": true}},
    ])
}

/// switch-cni on switch `switch`, its published ports answering on host interface `uplink`
/// (the outside's way in); podman passes it the ports, addresses and MACs asked for.
pub fn switch_cni(switch: &str, uplink: &str, ipam: Value) -> Value {
    json!([{
        "type": "switch-cni",
        "switch": switch,
        "uplink": uplink,
        "capabilities": {"portMappings": true, "mac": true, "ips": true},
        "ipam": ipam,
    }])
}
