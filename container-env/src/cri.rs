//! The CRI gRPC API of a containerd with its CRI plugin on ([`containerd::Env::create_cri`]):
//! pods and containers made the way kubelet makes them (RunPodSandbox, CreateContainer,
//! StartContainer, ... of `runtime.v1.RuntimeService`), through the `k8s-cri` crate's
//! generated client over the daemon's Unix socket.
//!
//! Like the rest of the crate it blocks: every call runs to its end on a runtime of the
//! client's own (one thread), so tests and the bench's blocking threads use it as they use
//! `ctr`. A restarted daemon is reached again with [`Client::connect`].
//!
//! [`containerd::Env::create_cri`]: crate::containerd::Env::create_cri
use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
pub use k8s_cri::v1 as api;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::{Error, Result};

/// A CRI client of one daemon.
pub struct Client {
    rt: tokio::runtime::Runtime,
    api: RuntimeServiceClient<Channel>,
}

/// A published port of a pod (`hostPort` in a pod spec).
#[derive(Clone, Copy, Debug)]
pub struct HostPort {
    /// The port on the host.
    pub host: u16,
    /// The port in the pod.
    pub container: u16,
    /// UDP rather than TCP.
    pub udp: bool,
}

/// What a pod is, as kubelet describes it in RunPodSandbox (the fields a CNI plugin sees).
#[derive(Clone, Debug)]
pub struct Pod {
    /// The pod's Kubernetes namespace (`K8S_POD_NAMESPACE`).
    pub namespace: String,
    /// The pod's name (`K8S_POD_NAME`).
    pub name: String,
    /// The pod's UID (`K8S_POD_UID`).
    pub uid: String,
    /// Published ports (`runtimeConfig.portMappings`).
    pub ports: Vec<HostPort>,
    /// Parent cgroup of the pod's containers, `/NAME` (see `Env::create_cri`).
    pub cgroup_parent: String,
    /// Where the CRI plugin writes the containers' logs.
    pub log_directory: PathBuf,
}

impl Pod {
    /// The pod's sandbox configuration.
    pub fn config(&self) -> api::PodSandboxConfig {
        let ports = self.ports.iter().map(|p| api::PortMapping {
            protocol: if p.udp { api::Protocol::Udp } else { api::Protocol::Tcp } as i32,
            container_port: p.container.into(),
            host_port: p.host.into(),
            host_ip: String::new(),
        });
        api::PodSandboxConfig {
            metadata: Some(api::PodSandboxMetadata {
                name: self.name.clone(),
                uid: self.uid.clone(),
                namespace: self.namespace.clone(),
                attempt: 0,
            }),
            hostname: self.name.clone(),
            log_directory: self.log_directory.to_string_lossy().into_owned(),
            port_mappings: ports.collect(),
            linux: Some(api::LinuxPodSandboxConfig { cgroup_parent: self.cgroup_parent.clone(), ..Default::default() }),
            ..Default::default()
        }
    }
}

/// Why a call failed, in one line.
fn failed(call: &'static str) -> impl FnOnce(tonic::Status) -> Error {
    move |s| Error::Cri { call, status: format!("{:?}: {}", s.code(), s.message()) }
}

impl Client {
    /// Connects to the CRI API on `socket` (a containerd socket with the CRI plugin on).
    pub fn connect(socket: &Path) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::io("starting the CRI client's runtime"))?;
        let path = socket.to_owned();
        // The URI is not used: every connection goes to the socket.
        let endpoint = Endpoint::from_static("http://[::]:0");
        let channel = rt
            .block_on(endpoint.connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
            })))
            .map_err(|e| Error::Cri { call: "connect", status: format!("{}: {e}", socket.display()) })?;
        Ok(Self { rt, api: RuntimeServiceClient::new(channel) })
    }

    /// The runtime's name and version (`Version`): whether CRI answers.
    pub fn version(&mut self) -> Result<String> {
        let r = self.rt.block_on(self.api.version(api::VersionRequest { version: "v1".into() }));
        let v = r.map_err(failed("Version"))?.into_inner();
        Ok(format!("{} {} (CRI {})", v.runtime_name, v.runtime_version, v.runtime_api_version))
    }

    /// Whether the runtime says its network is ready (`Status`, condition `NetworkReady`): the
    /// CRI plugin has loaded a CNI configuration.
    pub fn network_ready(&mut self) -> Result<bool> {
        let r = self.rt.block_on(self.api.status(api::StatusRequest { verbose: false }));
        let status = r.map_err(failed("Status"))?.into_inner().status.unwrap_or_default();
        Ok(status.conditions.iter().any(|c| c.r#type == "NetworkReady" && c.status))
    }

    /// RunPodSandbox: the pod's sandbox, its network made by the CNI plugin; returns its ID.
    pub fn run_pod(&mut self, config: &api::PodSandboxConfig) -> Result<String> {
        let req = api::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() };
        let r = self.rt.block_on(self.api.run_pod_sandbox(req)).map_err(failed("RunPodSandbox"))?;
        Ok(r.into_inner().pod_sandbox_id)
    }

    /// PodSandboxStatus: the pod's state (`SANDBOX_READY`, ...) and its IP address (from the
    /// CNI plugin's result).
    pub fn pod_status(&mut self, pod: &str) -> Result<(String, String)> {
        let req = api::PodSandboxStatusRequest { pod_sandbox_id: pod.into(), verbose: false };
        let r = self.rt.block_on(self.api.pod_sandbox_status(req)).map_err(failed("PodSandboxStatus"))?;
        let status = r.into_inner().status.unwrap_or_default();
        let state = api::PodSandboxState::try_from(status.state).map(|s| s.as_str_name()).unwrap_or("?");
        Ok((state.to_owned(), status.network.map(|n| n.ip).unwrap_or_default()))
    }

    /// ListPodSandbox: the IDs of every pod.
    pub fn pods(&mut self) -> Result<Vec<String>> {
        let r = self.rt.block_on(self.api.list_pod_sandbox(api::ListPodSandboxRequest { filter: None }));
        Ok(r.map_err(failed("ListPodSandbox"))?.into_inner().items.into_iter().map(|p| p.id).collect())
    }

    /// StopPodSandbox: its containers stopped, its network torn down (the CNI DEL).
    pub fn stop_pod(&mut self, pod: &str) -> Result<()> {
        let req = api::StopPodSandboxRequest { pod_sandbox_id: pod.into() };
        self.rt.block_on(self.api.stop_pod_sandbox(req)).map_err(failed("StopPodSandbox")).map(drop)
    }

    /// RemovePodSandbox: the pod and its containers gone.
    pub fn remove_pod(&mut self, pod: &str) -> Result<()> {
        let req = api::RemovePodSandboxRequest { pod_sandbox_id: pod.into() };
        self.rt.block_on(self.api.remove_pod_sandbox(req)).map_err(failed("RemovePodSandbox")).map(drop)
    }

    /// CreateContainer + StartContainer: container `name` of pod `pod` (made with `config`)
    /// running `command` in `image`; returns its ID.
    pub fn start_container(
        &mut self,
        pod: &str,
        config: &api::PodSandboxConfig,
        name: &str,
        image: &str,
        command: &[&str],
    ) -> Result<String> {
        let container = api::ContainerConfig {
            metadata: Some(api::ContainerMetadata { name: name.into(), attempt: 0 }),
            image: Some(api::ImageSpec { image: image.into(), ..Default::default() }),
            command: command.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}.log"),
            linux: Some(api::LinuxContainerConfig::default()),
            ..Default::default()
        };
        let req = api::CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(container),
            sandbox_config: Some(config.clone()),
        };
        let r = self.rt.block_on(self.api.create_container(req)).map_err(failed("CreateContainer"))?;
        let id = r.into_inner().container_id;
        let req = api::StartContainerRequest { container_id: id.clone() };
        self.rt.block_on(self.api.start_container(req)).map_err(failed("StartContainer"))?;
        Ok(id)
    }

    /// ExecSync: runs `cmd` in container `container` (at most `timeout_secs`); its exit code,
    /// stdout and stderr.
    pub fn exec(&mut self, container: &str, cmd: &[&str], timeout_secs: i64) -> Result<(i32, String, String)> {
        let req = api::ExecSyncRequest {
            container_id: container.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: timeout_secs,
        };
        let r = self.rt.block_on(self.api.exec_sync(req)).map_err(failed("ExecSync"))?.into_inner();
        let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
        Ok((r.exit_code, text(r.stdout), text(r.stderr)))
    }
}
