//! What names a datapath and what one may lack: the leaf that the state file, the errors,
//! the CLI and the datapaths all use. Opening a datapath of a kind needs every datapath, so
//! `DatapathKind::open` lives with them in `datapath/`.
use serde::{Deserialize, Serialize};

/// How a switch moves frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DatapathKind {
    /// TC/TCX eBPF program on each port (default; fastest for TCP).
    #[default]
    Tc,
    /// Native XDP eBPF program on each port (no skb per frame; TSO off on the ports).
    Xdp,
    /// An async userspace process on AF_PACKET sockets (kernels without eBPF).
    Userspace,
    /// The kernel's Linux bridge (the classic recipe, as a baseline).
    Bridge,
}

impl DatapathKind {
    /// Every datapath, in the order listings name them.
    pub const ALL: [Self; 4] = [Self::Tc, Self::Xdp, Self::Userspace, Self::Bridge];
}

impl std::fmt::Display for DatapathKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Tc => "tc",
            Self::Xdp => "xdp",
            Self::Userspace => "userspace",
            Self::Bridge => "bridge",
        })
    }
}

/// What a datapath may lack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capability {
    /// DNAT of uplink ports to namespaces, masquerade, hairpin and host-local access.
    PortForwarding,
    /// Fill levels and eviction counts of the MAC and connection tables.
    TableCounters,
    /// Log records streamed from the datapath.
    Log,
    /// Events (drops, learned stations, moves) streamed from the datapath.
    Events,
    /// A tunnel port (VXLAN) to the switches of other hosts.
    Tunnel,
    /// Copies of frames with the datapath's verdict.
    Capture,
}

impl std::fmt::Display for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::PortForwarding => "port forwarding (it runs in eBPF)",
            Self::TableCounters => "table counters",
            Self::Log => "a datapath log",
            Self::Events => "datapath events (switch monitor)",
            Self::Tunnel => "tunnel ports (VXLAN: switch up --vxlan)",
            Self::Capture => "packet capture with verdicts (switch capture)",
        })
    }
}
