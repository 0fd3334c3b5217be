//! Delegation to the IPAM plugin the configuration names (`ipam.type`, found on `CNI_PATH`):
//! it gets the same configuration on stdin and the same environment, with the command.
use std::{path::PathBuf, process::Stdio};

use serde_json::Value;
use tokio::io::AsyncWriteExt as _;

use super::{
    Env,
    spec::{CniError, Code, NetConf},
};

/// The IPAM plugin's name, if the configuration has one.
fn plugin(conf: &NetConf) -> Result<Option<String>, CniError> {
    let Some(ipam) = &conf.ipam else { return Ok(None) };
    let kind = ipam.get("type").and_then(Value::as_str).unwrap_or_default();
    // A name, not a path: the plugin is looked up on CNI_PATH only.
    if kind.is_empty() || kind.contains('/') || kind.starts_with('.') {
        return Err(CniError::new(Code::InvalidConfig, format!("ipam type '{kind}' is not a plugin name")));
    }
    Ok(Some(kind.to_owned()))
}

/// The configuration as the IPAM plugin can take it: a 1.1.0 configuration goes as 1.0.0
/// (the same result format) to a plugin that does not speak 1.1.0, as Debian's host-local
/// (from containernetworking-plugins 1.1) does not; anything else as it came.
async fn speakable(env: &Env, path: &std::path::Path, conf: &NetConf, stdin: &[u8]) -> Result<Vec<u8>, CniError> {
    if conf.cni_version != "1.1.0" || speaks_1_1(env, path).await? {
        return Ok(stdin.to_vec());
    }
    let mut raw: Value = serde_json::from_slice(stdin)
        .map_err(|e| CniError::new(Code::Decode, format!("the network configuration is not JSON: {e}")))?;
    raw["cniVersion"] = Value::from("1.0.0");
    Ok(raw.to_string().into_bytes())
}

/// Whether the plugin at `path` speaks spec 1.1.0 (its VERSION says so).
async fn speaks_1_1(env: &Env, path: &std::path::Path) -> Result<bool, CniError> {
    let out = tokio::process::Command::new(path)
        .env("CNI_COMMAND", "VERSION")
        .env("CNI_PATH", &env.path)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| CniError::new(Code::Ipam, format!("running {}: {e}", path.display())))?;
    let versions: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    Ok(versions["supportedVersions"].as_array().is_some_and(|v| v.iter().any(|v| v == "1.1.0")))
}

/// STATUS (spec 1.1) of the configuration's IPAM plugin, if it has one that speaks 1.1.0
/// (one that does not, as Debian's host-local, has no STATUS: it counts as ready). Its error
/// is passed on as it came.
pub async fn status(env: &Env, conf: &NetConf, stdin: &[u8]) -> Result<(), CniError> {
    let Some(name) = plugin(conf)? else { return Ok(()) };
    if conf.cni_version != "1.1.0" || !speaks_1_1(env, &find(env, &name)?).await? {
        return Ok(());
    }
    exec(env, conf, "STATUS", stdin).await.map(drop)
}

/// Where `name` is on `CNI_PATH`.
fn find(env: &Env, name: &str) -> Result<PathBuf, CniError> {
    env.path.split(':').filter(|d| !d.is_empty()).map(|d| PathBuf::from(d).join(name)).find(|p| p.is_file()).ok_or_else(
        || CniError::new(Code::InvalidEnv, format!("IPAM plugin '{name}' not found on CNI_PATH '{}'", env.path)),
    )
}

/// Runs the IPAM plugin with `command` (ADD, DEL, CHECK) and the original configuration
/// `stdin`, in `env`'s container. `Ok(None)` when the configuration has no IPAM. ADD returns
/// the plugin's result.
pub async fn exec(env: &Env, conf: &NetConf, command: &str, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    let Some(name) = plugin(conf)? else { return Ok(None) };
    let path = find(env, &name)?;
    let stdin = speakable(env, &path, conf, stdin).await?;
    let run = |command: &str| {
        let mut c = tokio::process::Command::new(&path);
        c.env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &env.container_id)
            .env("CNI_NETNS", &env.netns)
            .env("CNI_IFNAME", &env.ifname)
            .env("CNI_ARGS", &env.args)
            .env("CNI_PATH", &env.path);
        c
    };
    let mut child = run(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CniError::new(Code::Ipam, format!("running {}: {e}", path.display())))?;
    let mut input = child.stdin.take().expect("piped");
    input.write_all(&stdin).await.map_err(|e| CniError::new(Code::Ipam, format!("writing to {name}: {e}")))?;
    drop(input);
    let out = child.wait_with_output().await.map_err(|e| CniError::new(Code::Ipam, format!("running {name}: {e}")))?;
    let parsed: Option<Value> = serde_json::from_slice(&out.stdout).ok();
    if !out.status.success() {
        // Its own error, code and all, goes back to the runtime as it came.
        let e = parsed.unwrap_or_default();
        let msg = e.get("msg").and_then(Value::as_str).map_or_else(
            || format!("{name} {command} failed: {}", String::from_utf8_lossy(&out.stderr).trim()),
            |m| format!("{name}: {m}"),
        );
        let code = e.get("code").and_then(Value::as_u64).map_or(Code::Ipam as u32, |c| c as u32);
        return Err(CniError { code, msg, details: String::new(), cni_version: "1.0.0".into() });
    }
    if command != "ADD" {
        return Ok(Some(Value::Null));
    }
    parsed.map(Some).ok_or_else(|| CniError::new(Code::Ipam, format!("{name} ADD printed no JSON result")))
}

/// Where host-local keeps the leases of networks that do not say (`ipam.dataDir`).
const HOST_LOCAL_DIR: &str = "/var/lib/cni/networks";

/// The attachments (container ID, interface) holding a lease of `conf`'s network, for the
/// IPAM plugin whose leases can be read: host-local, one file per address in
/// `DATADIR/NETWORK`, holding the container ID and (since plugins 0.8) the interface on a
/// second line. Nothing for other plugins, or when the directory cannot be read.
pub fn leases(conf: &NetConf) -> Vec<(String, String)> {
    let Some(ipam) = conf.ipam.as_ref().filter(|i| i.get("type").and_then(Value::as_str) == Some("host-local")) else {
        return vec![];
    };
    let data_dir = ipam.get("dataDir").and_then(Value::as_str).unwrap_or(HOST_LOCAL_DIR);
    let Ok(entries) = std::fs::read_dir(PathBuf::from(data_dir).join(&conf.name)) else { return vec![] };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().parse::<std::net::IpAddr>().is_ok())
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|text| {
            let mut lines = text.lines().map(str::trim);
            let id = lines.next().filter(|id| !id.is_empty())?.to_owned();
            Some((id, lines.next().unwrap_or(crate::names::NS_IFNAME).to_owned()))
        })
        .collect()
}
