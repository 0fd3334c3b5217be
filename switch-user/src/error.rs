//! The controller library's error type. Every variant renders as one line a user can act on.
use std::{io, path::PathBuf};

/// Result alias for the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the controller can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The process is not root (needs CAP_SYS_ADMIN and CAP_NET_ADMIN).
    #[error("switch must run as root: it creates namespaces and loads eBPF programs")]
    NotRoot,
    /// `/sys/fs/bpf` is not a bpffs mount.
    #[error("bpffs is not mounted at /sys/fs/bpf (mount it with: mount -t bpf bpf /sys/fs/bpf)")]
    NoBpffs,
    /// The kernel lacks a feature the datapath needs.
    #[error("kernel {release} cannot run the switch: {missing}")]
    KernelTooOld {
        /// `uname -r` of the running kernel.
        release: String,
        /// What is missing, in words.
        missing: String,
    },
    /// A value given on the command line is not acceptable.
    #[error("invalid {what} '{value}': {reason}")]
    Invalid {
        /// What the value is (e.g. "CIDR", "MAC address", "namespace name").
        what: &'static str,
        /// The value as given.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// The named switch does not exist.
    #[error("switch '{0}' does not exist (create it with: switch up --switch {0})")]
    UnknownSwitch(String),
    /// The named namespace is not managed by this tool.
    #[error("namespace '{0}' is not managed by switch (see: switch ns list)")]
    UnknownNamespace(String),
    /// A namespace with that name exists already.
    #[error("namespace '{name}' already exists{detail}")]
    NamespaceExists {
        /// The namespace.
        name: String,
        /// Where it comes from, with a leading separator, or empty.
        detail: String,
    },
    /// Another namespace on the same switch has the address.
    #[error("address {ip} is already used by namespace '{ns}' on switch '{switch}'")]
    DuplicateIp {
        /// The address, without prefix length.
        ip: String,
        /// The namespace holding it.
        ns: String,
        /// The switch.
        switch: String,
    },
    /// A port of the switch (or another switch's gateway) has the MAC address.
    #[error("MAC address {mac} is already used by {holder}")]
    DuplicateMac {
        /// The address.
        mac: String,
        /// Who holds it, in words: "namespace 'red' on switch 'sw0'", "the gateway of switch
        /// 'sw0'", "port 3 of the switch".
        holder: String,
    },
    /// Every port slot of the switch is taken.
    #[error("switch '{0}' has no free port (at most {max} ports)", max = switch_common::MAX_PORTS)]
    SwitchFull(String),
    /// A switch exists with other settings than requested.
    #[error("switch '{name}' is already up with {detail}; run 'switch down --switch {name}' first to change it")]
    Conflict {
        /// The switch.
        name: String,
        /// What differs.
        detail: String,
    },
    /// The switch's datapath lacks what the command needs.
    #[error("switch '{switch}' uses the {datapath} datapath; only {with} have {capability}")]
    Unsupported {
        /// The switch.
        switch: String,
        /// Its datapath.
        datapath: crate::kind::DatapathKind,
        /// What it lacks.
        capability: crate::kind::Capability,
        /// The datapaths that have it, in words ("tc and xdp").
        with: String,
    },
    /// A netlink request failed.
    #[error("{context}: {source}")]
    Netlink {
        /// What was being done.
        context: String,
        /// The kernel's or the library's answer.
        #[source]
        source: rtnetlink::Error,
    },
    /// A system call or file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Loading, pinning, attaching or a map operation failed.
    #[error("{context}: {source}")]
    Bpf {
        /// What was being done.
        context: String,
        /// The aya error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The state file cannot be read or written.
    #[error("state file {}: {reason}", path.display())]
    State {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A child command could not be run or failed.
    #[error("{0}")]
    Command(String),
}

impl Error {
    /// An `Invalid` error.
    pub fn invalid(what: &'static str, value: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid { what, value: value.into(), reason: reason.into() }
    }

    /// Exit status for the CLI: 2 for bad input (nothing was changed), 1 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Invalid { .. }
            | Self::UnknownSwitch(_)
            | Self::UnknownNamespace(_)
            | Self::NamespaceExists { .. }
            | Self::DuplicateIp { .. }
            | Self::DuplicateMac { .. }
            | Self::Conflict { .. }
            | Self::Unsupported { .. } => 2,
            _ => 1,
        }
    }
}

/// Adds context to fallible operations of the various error sources.
pub trait Context<T> {
    /// Wraps the error with `context`.
    fn context(self, context: impl Into<String>) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, io::Error> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|source| Error::Io { context: context.into(), source })
    }
}

impl<T> Context<T> for std::result::Result<T, nix::Error> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|e| Error::Io { context: context.into(), source: io::Error::from(e) })
    }
}

impl<T> Context<T> for std::result::Result<T, rtnetlink::Error> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|source| Error::Netlink { context: context.into(), source })
    }
}

/// Wraps aya errors (`EbpfError`, `ProgramError`, `MapError`, `PinError`, `LinkError`, ...).
pub(crate) fn bpf<E: std::error::Error + Send + Sync + 'static>(context: impl Into<String>) -> impl FnOnce(E) -> Error {
    let context = context.into();
    move |e| Error::Bpf { context, source: Box::new(e) }
}
