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

/// Where `name` is on `CNI_PATH`.
fn find(env: &Env, name: &str) -> Result<PathBuf, CniError> {
    env.path.split(':').filter(|d| !d.is_empty()).map(|d| PathBuf::from(d).join(name)).find(|p| p.is_file()).ok_or_else(
        || CniError::new(Code::InvalidEnv, format!("IPAM plugin '{name}' not found on CNI_PATH '{}'", env.path)),
    )
}

/// Runs the IPAM plugin with `command` (ADD, DEL, CHECK) and the original configuration
/// `stdin`. `Ok(None)` when the configuration has no IPAM. ADD returns the plugin's result.
pub async fn exec(env: &Env, conf: &NetConf, command: &str, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    let Some(name) = plugin(conf)? else { return Ok(None) };
    let path = find(env, &name)?;
    let mut child = tokio::process::Command::new(&path)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CniError::new(Code::Ipam, format!("running {}: {e}", path.display())))?;
    let mut input = child.stdin.take().expect("piped");
    input.write_all(stdin).await.map_err(|e| CniError::new(Code::Ipam, format!("writing to {name}: {e}")))?;
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
