//! Private container-runtime environments on this host, for `switch bench` and the
//! integration tests, and the host state the runtimes change, recorded and given back.
//!
//! Every environment lives in a directory of its own under the temporary directory: its
//! configuration, storage, CNI configuration and IPAM state, and a [`ledger`] of what it made
//! on the host outside that directory (interfaces, network namespaces, switches, networks
//! whose iptables rules name them). Whoever removes it, its own tear-down or the next run
//! after a killed one ([`workdir::stale`]), finds everything there. Nothing is read from or
//! written to the machine's own runtime configuration.
//!
//! The shape, one module per runtime on top of shared pieces:
//! - [`podman`]: podman with a test-only `containers.conf` and storage;
//! - [`containerd`]: a private containerd daemon driven through `ctr`, with its CRI plugin off,
//!   or on (`Env::create_cri`: kubelet's containerd, its CNI directories and sandbox image of
//!   its own), driven over gRPC by `cri` (feature `cri`: the k8s-cri client);
//! - [`docker`]: a private dockerd (its own data root, exec root, socket) with its iptables
//!   on, its `docker import`ed busybox, and the host state it changes ([`docker::WATCH`]);
//! - [`daemon`]: a runtime daemon as a child process (containerd, dockerd);
//! - [`host`]: the host-wide state runtimes and their plugins change (forwarding sysctls,
//!   iptables chains and nat tables, built-in directories), recorded before the first runtime
//!   call and given back after the last, also across processes;
//! - [`image`]: the busybox-static image, without a registry;
//! - [`cni`]: the network configurations (bridge + portmap, switch-cni);
//! - [`kube_proxy`]: the rules kube-proxy writes for Services (iptables and nftables modes);
//! - [`iptables`], [`nat_tables`], [`workdir`], [`ledger`], [`command`]: the helpers.
//!
//! A CRI environment is [`containerd`] with the CRI plugin on (its CNI directories and a
//! sandbox image of its own) driven over gRPC.
//!
//! Everything here blocks (it runs runtime commands and waits for them): async callers run it
//! on a blocking thread; commands they time themselves are built here ([`podman::Env::command`])
//! and run by them.
pub mod cni;
pub mod command;
pub mod containerd;
#[cfg(feature = "cri")]
pub mod cri;
pub mod daemon;
pub mod docker;
mod error;
pub mod host;
pub mod image;
pub mod iptables;
pub mod kube_proxy;
pub mod ledger;
pub mod nat_tables;
pub mod podman;
pub mod workdir;

pub use error::{Error, Result};

/// A path as a TOML basic string (the paths written here are plain ASCII).
pub fn toml_str(p: &std::path::Path) -> Result<String> {
    let s = p.to_string_lossy();
    if s.contains(['"', '\\']) || !s.is_ascii() {
        return Err(Error::NotToml(s.into_owned()));
    }
    Ok(format!("\"{s}\""))
}
