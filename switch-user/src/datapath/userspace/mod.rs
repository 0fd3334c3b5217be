//! The userspace datapath: an async (tokio) switch process for kernels without eBPF, and the
//! switch's slow path. See `engine` (frame switching) and `control` (the unix-socket protocol
//! the CLI uses to add ports and read the FDB and counters), `daemon` (the process around
//! them) and `runner` (`switch run`, in the foreground or as the daemon).
pub mod control;
pub mod daemon;
pub mod engine;
pub mod runner;

use std::collections::HashMap;

use async_trait::async_trait;
use control::{Request, Response};

use super::{Datapath, FdbEntryView, PortCounters, settings::Setting};
use crate::{
    error::{Error, Result},
    kind::DatapathKind,
    names::Mac,
    state::{PortState, SwitchState},
};

/// The userspace datapath of one switch, as the CLI sees it: a process it talks to over the
/// control socket.
pub struct Userspace {
    name: String,
}

impl Userspace {
    /// Switch `name`.
    pub fn new(name: &str) -> Self {
        Self { name: name.to_owned() }
    }

    fn unexpected(other: &Response) -> Error {
        Error::Command(format!("unexpected answer from the userspace switch: {other:?}"))
    }
}

#[async_trait]
impl Datapath for Userspace {
    fn kind(&self) -> DatapathKind {
        DatapathKind::Userspace
    }

    fn switch(&self) -> &str {
        &self.name
    }

    async fn create(&self, sw: &SwitchState) -> Result<()> {
        daemon::spawn(&self.name, &engine::Config::of(sw)).await
    }

    async fn healthy(&self) -> Result<bool> {
        Ok(daemon::alive(&self.name).await)
    }

    async fn destroy(&self) -> Result<()> {
        daemon::stop(&self.name).await
    }

    async fn exists(&self) -> Result<bool> {
        Ok(daemon::pid_path(&self.name).exists())
    }

    fn takes(&self, setting: Setting) -> bool {
        setting == Setting::BusyPoll
    }

    fn remakeable(&self) -> bool {
        // The ports (veths) outlive the process; a new process takes them over.
        true
    }

    async fn attach_port(&self, port: &PortState) -> Result<()> {
        let slot = port.slot.ok_or_else(|| Error::Command(format!("port {} has no slot", port.host_if)))?;
        let d = port.datapath_port();
        let a6 = port.datapath_addrs6().unwrap_or_default();
        let bytes = |w: [u32; 4]| -> [u8; 16] { std::array::from_fn(|i| w[i / 4].to_ne_bytes()[i % 4]) };
        let guard = engine::Guard {
            flags: d.flags,
            mac: d.mac,
            ip: d.ip,
            prefix: d.prefix,
            ip6: bytes(a6.ip),
            link_local: bytes(a6.link_local),
        };
        let req =
            Request::AddPort { slot, ifindex: port.host_ifindex, ifname: port.host_if.clone(), guard: Some(guard) };
        daemon::ask(&self.name, req).await.map(|_| ())
    }

    async fn detach_port(&self, port: &PortState) -> Result<()> {
        // A process that is gone has no ports to take back.
        if let Some(slot) = port.slot
            && daemon::alive(&self.name).await
        {
            daemon::ask(&self.name, Request::DelPort { slot }).await?;
        }
        Ok(())
    }

    async fn fdb(&self, ports: HashMap<u32, Mac>) -> Result<Vec<FdbEntryView>> {
        match daemon::ask(&self.name, Request::Fdb).await? {
            Response::Fdb { entries } => Ok(entries
                .into_iter()
                .filter(|e| ports.contains_key(&e.ifindex))
                .map(|e| FdbEntryView {
                    mac: Mac(e.mac),
                    ifindex: e.ifindex,
                    is_static: e.is_static,
                    age: (!e.is_static).then(|| std::time::Duration::from_nanos(e.age_ns)),
                    remote: None,
                })
                .collect()),
            other => Err(Self::unexpected(&other)),
        }
    }

    async fn fdb_add(&self, mac: Mac, ifindex: u32) -> Result<()> {
        daemon::ask(&self.name, Request::FdbAdd { mac: mac.0, ifindex }).await.map(|_| ())
    }

    async fn fdb_del(&self, mac: Mac, _ports: &[u32]) -> Result<bool> {
        match daemon::ask(&self.name, Request::FdbDel { mac: mac.0 }).await? {
            Response::Deleted { existed } => Ok(existed),
            other => Err(Self::unexpected(&other)),
        }
    }

    async fn stats(&self, ports: &[PortState]) -> Result<Vec<PortCounters>> {
        let mut out = Vec::with_capacity(ports.len());
        for port in ports {
            let Some(slot) = port.slot else {
                out.push(PortCounters::default());
                continue;
            };
            match daemon::ask(&self.name, Request::Stats { slot }).await? {
                Response::Stats { stats } => out.push(PortCounters { stats, detailed: true }),
                other => return Err(Self::unexpected(&other)),
            }
        }
        Ok(out)
    }
}
