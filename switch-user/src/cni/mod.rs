//! The CNI plugin `switch-cni`: container runtimes (podman, containerd, Kubernetes) connect
//! the namespaces they make to a switch through it.
//!
//! ```text
//!  runtime ──exec──► switch-cni  (CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME,
//!                      │          CNI_ARGS, CNI_PATH in the environment; the network
//!                      │          config on stdin; the result or an error as JSON on stdout)
//!                      ├─► IPAM plugin (host-local, ...) found on CNI_PATH: the address
//!                      ├─► controller::switch::up     the network's switch, idempotently
//!                      ├─► controller::ns::attach     a port of kind "adopted": a veth into
//!                      │                              the runtime's namespace
//!                      └─► controller::forward        published ports (portMappings)
//! ```
//! The plugin is the controller library in another binary: the same state, lock and
//! datapaths as the `switch` CLI, which sees and can inspect everything the plugin made.
//! Spec versions 0.3.0, 0.3.1, 0.4.0, 1.0.0 and 1.1.0; commands ADD, DEL, CHECK, VERSION,
//! and 1.1's GC and STATUS. Run with arguments instead (`switch-cni install`), the binary
//! puts itself into a runtime's directories (`install`, `conflist`).
mod add;
mod check;
pub mod conflist;
mod del;
mod gc;
pub mod install;
mod ipam;
mod routes;
pub mod spec;

use std::path::PathBuf;

pub use spec::CniError;
use spec::{Code, NetConf};

use crate::{
    names::{NS_IFNAME, cni_port_name},
    state::{Attachment, PortKind, Runtime, Workload},
};

/// The versions of the spec this plugin speaks.
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The plugin's environment: what the runtime passes in `CNI_*` variables.
#[derive(Clone, Debug, Default)]
pub struct Env {
    /// `CNI_COMMAND`.
    pub command: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS` (empty on some DELs).
    pub netns: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS`: `K=V;K=V`.
    pub args: String,
    /// `CNI_PATH`: where IPAM plugins are.
    pub path: String,
}

impl Env {
    /// The variables of this process.
    pub fn from_process() -> Self {
        let var = |k: &str| std::env::var(k).unwrap_or_default();
        Self {
            command: var("CNI_COMMAND"),
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
            args: var("CNI_ARGS"),
            path: var("CNI_PATH"),
        }
    }

    /// `CNI_ARGS` value of `key` (e.g. `IP`, `MAC`): the first `key=VALUE` pair, surrounding
    /// blanks ignored; an empty value counts as absent.
    fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .split(';')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// Who runs behind the attachment, as the runtime says in `CNI_ARGS`: a pod
    /// (`K8S_POD_NAMESPACE` and `K8S_POD_NAME`, as CRI runtimes send them), or a container by
    /// its name (podman sends `K8S_POD_NAME` alone); `None` without a name.
    fn workload(&self) -> Option<Workload> {
        let name = self.arg("K8S_POD_NAME")?;
        Some(Workload { namespace: self.arg("K8S_POD_NAMESPACE").map(str::to_owned), name: name.to_owned() })
    }

    /// Checks the variables every command but VERSION needs.
    fn require(&self, netns: bool) -> Result<(), CniError> {
        let missing = |what: &str| CniError::new(Code::InvalidEnv, format!("{what} is not set"));
        if self.container_id.is_empty() {
            return Err(missing("CNI_CONTAINERID"));
        }
        validate_container_id(&self.container_id)?;
        if self.ifname.is_empty() {
            return Err(missing("CNI_IFNAME"));
        }
        if netns && self.netns.is_empty() {
            return Err(missing("CNI_NETNS"));
        }
        Ok(())
    }

    fn netns_path(&self) -> PathBuf {
        PathBuf::from(&self.netns)
    }

    /// The attachment the command names: (network, container ID, interface).
    fn attachment(&self, conf: &NetConf) -> Attachment {
        Attachment {
            runtime: Runtime::Cni,
            network: conf.name.clone(),
            container_id: self.container_id.clone(),
            ifname: self.ifname.clone(),
        }
    }

    /// The name of the attachment's port (see `names::cni_port_name`).
    fn port_name(&self) -> String {
        cni_port_name(&self.container_id, &self.ifname)
    }
}

/// The port the plugin made for `env`'s attachment on `conf`'s network, with the forwards to
/// it: the port of the attachment's name whose record names the same attachment (a port of
/// that name made by `switch ns attach`, or for another network, is not this one's).
///
/// A port an older switch-cni made records no attachment: it named an `eth0` attachment by
/// its container ID alone, on its network's switch. Such a port is still this attachment's,
/// so that DEL and CHECK find the containers that ran before an upgrade (as the older plugin
/// did, it cannot be told from an `ns attach` port named like the container ID). GC does not
/// take this path: it removes only ports that say they are its network's.
async fn our_port(
    env: &Env,
    conf: &NetConf,
) -> Result<Option<(crate::state::PortState, Vec<crate::state::ForwardState>)>, CniError> {
    let found = crate::controller::ns::attached(&env.port_name(), Some(conf.switch_name())).await?;
    let attachment = env.attachment(conf);
    Ok(found.filter(|(p, _)| match &p.attachment {
        Some(a) => *a == attachment,
        None => p.kind == PortKind::Adopted && env.ifname == NS_IFNAME && p.owner == env.container_id,
    }))
}

/// Longest container ID taken (runtimes make 64 hex digits, nerdctl prefixes its namespace).
const CONTAINER_ID_MAX: usize = 1024;

/// A container ID as the spec allows it: letters, digits, `_`, `.` and `-`, starting with a
/// letter or digit. Its length is not limited to a name's: names derived from it are.
fn validate_container_id(id: &str) -> Result<(), CniError> {
    let bad = |why: &str| Err(CniError::new(Code::InvalidEnv, format!("invalid container ID '{id}': {why}")));
    if id.len() > CONTAINER_ID_MAX {
        return bad(&format!("longer than {CONTAINER_ID_MAX} characters"));
    }
    if !id.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return bad("must start with a letter or digit");
    }
    if let Some(c) = id.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))) {
        return bad(&format!("character {c:?} not allowed (use letters, digits, '_', '.', '-')"));
    }
    Ok(())
}

/// Runs one plugin invocation: `Ok(Some(json))` is printed on stdout, `Ok(None)` prints
/// nothing (DEL, CHECK), `Err` is printed as the spec's error JSON (and the exit status is 1).
pub async fn run(env: &Env, stdin: &[u8]) -> Result<Option<serde_json::Value>, CniError> {
    if env.command.is_empty() {
        return Err(CniError::new(
            Code::InvalidEnv,
            "CNI_COMMAND is not set (a runtime sets it; to install the plugin, see switch-cni --help)",
        ));
    }
    if env.command == "VERSION" {
        return Ok(Some(spec::version_result()));
    }
    let raw: serde_json::Value = serde_json::from_slice(stdin)
        .map_err(|e| CniError::new(Code::Decode, format!("the network configuration is not JSON: {e}")))?;
    let conf = NetConf::parse(raw.clone())?;
    let out = match env.command.as_str() {
        "ADD" => add::add(env, &conf, stdin).await.map(Some),
        "DEL" => del::del(env, &conf, stdin).await.map(|()| None),
        "CHECK" => check::check(env, &conf, stdin).await.map(|()| None),
        "GC" => gc::gc(env, &conf, &raw).await.map(|()| None),
        // Ready when the host can run a switch at all (root, bpffs, kernel; else 50: "the
        // plugin is not available") and the IPAM plugin says it is ready too.
        "STATUS" => match crate::sys::preflight::check() {
            Ok(()) => ipam::status(env, &conf, stdin).await.map(|()| None),
            Err(e) => Err(CniError { code: 50, ..CniError::new(Code::Switch, e.to_string()) }),
        },
        other => Err(CniError::new(Code::InvalidEnv, format!("unknown CNI_COMMAND '{other}'"))),
    };
    out.map_err(|e| e.in_version(&conf.cni_version))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(args: &str) -> Env {
        Env { args: args.into(), ..Default::default() }
    }

    fn pod(ns: &str, name: &str) -> Option<Workload> {
        Some(Workload { namespace: Some(ns.into()), name: name.into() })
    }

    #[test]
    fn workload_of_a_pod_as_cri_sends_it() {
        let cri = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;\
                   K8S_POD_INFRA_CONTAINER_ID=0123abcd;K8S_POD_UID=8f2c1a3e-1111-2222-3333-444455556666";
        assert_eq!(env(cri).workload(), pod("default", "web-0"));
        // Order, blanks and an empty trailing pair do not matter.
        assert_eq!(
            env(" K8S_POD_NAME = web-0 ;K8S_POD_NAMESPACE=kube-system;;").workload(),
            pod("kube-system", "web-0")
        );
    }

    #[test]
    fn workload_of_a_named_container_or_none() {
        // podman: the container's name only.
        let podman = Some(Workload { namespace: None, name: "web".into() });
        assert_eq!(env("IgnoreUnknown=1;K8S_POD_NAME=web").workload(), podman);
        assert_eq!(env("IgnoreUnknown=1;K8S_POD_NAME=web;K8S_POD_NAMESPACE=").workload(), podman);
        for none in ["", "IgnoreUnknown=1", "K8S_POD_NAMESPACE=default", "K8S_POD_NAME=", "K8S_POD_NAME", "garbage;;="]
        {
            assert_eq!(env(none).workload(), None, "{none:?}");
        }
        // A key is matched whole, not as a prefix or suffix.
        assert_eq!(env("X_K8S_POD_NAME=a;K8S_POD_NAMEX=b").workload(), None);
    }

    #[test]
    fn arg_takes_the_first_pair_and_values_with_equals() {
        assert_eq!(env("MAC=02:00:00:00:00:01;MAC=02:00:00:00:00:02").arg("MAC"), Some("02:00:00:00:00:01"));
        assert_eq!(env("K=a=b").arg("K"), Some("a=b"));
    }
}
