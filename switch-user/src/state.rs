//! What the controller made, recorded in `/run/switch/state.json`.
//!
//! The kernel objects (namespaces, veths, pinned maps and links) are the truth for the
//! datapath; this file records what they mean (which namespace is which port, its address) and
//! what a command was in the middle of. Entries are written as `ready: false` *before* the
//! kernel objects are made, so a command killed half-way leaves a record that the next mutating
//! command of the same switch uses to clean up (see `controller::intent`). `/run` is a tmpfs, like bpffs: both are empty
//! after a reboot, so the two never disagree about a boot.
//!
//! Every command holds an exclusive `flock` on `/run/switch/lock` while it reads, changes and
//! writes the state, so concurrent CLI calls are serialised.
use std::{
    collections::BTreeMap,
    fs::{self, File},
    net::Ipv4Addr,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    error::{Context as _, Error, Result},
    kind::DatapathKind,
    names::{Cidr, Cidr6, Mac},
    sys::{files, process::ProcessId},
};

/// How known unicast leaves the switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Redirect {
    /// `bpf_redirect_peer`: straight into the target namespace's ingress (fastest).
    Peer,
    /// `bpf_redirect` to the egress of the target's host-side veth.
    Egress,
}

impl std::fmt::Display for Redirect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Peer => "peer",
            Self::Egress => "egress",
        })
    }
}

fn default_max_learned() -> u32 {
    switch_common::DEFAULT_MAX_LEARNED
}

/// One switch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchState {
    /// Dynamic FDB entries expire after this many seconds.
    pub ageing_secs: u64,
    /// How known unicast is redirected (tc datapath).
    pub redirect: Redirect,
    /// How frames are moved.
    #[serde(default)]
    pub datapath: DatapathKind,
    /// Namespaces' outbound TCP/UDP leaves the uplinks with the uplink's address.
    #[serde(default)]
    pub masquerade: bool,
    /// The host routes into and out of the segment freely (`up --routable`); otherwise only
    /// forwarded ports, replies of the segment's own connections and the host reach it.
    #[serde(default)]
    pub routable: bool,
    /// New stations a port without a bound MAC may learn per ageing period (0: no limit).
    #[serde(default = "default_max_learned")]
    pub max_learned: u32,
    /// Microseconds the userspace datapath's lanes keep polling for frames after the last one
    /// before they sleep (`up --busy-poll`; 0: they sleep at once).
    #[serde(default)]
    pub busy_poll_us: u32,
    /// Host sysctls the switch changed, with the value each had before (`down` writes it
    /// back). Recorded before the write, so a crash in between still restores it.
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
    /// `switch logs` processes reading the datapath log (logging is on while any lives; the
    /// next mutating command turns it off if they were all killed).
    #[serde(default)]
    pub log_followers: Vec<ProcessId>,
    /// `switch monitor` processes reading the datapath's events (events are on while any
    /// lives; the next mutating command turns them off if they were all killed).
    #[serde(default)]
    pub monitors: Vec<ProcessId>,
    /// The `switch capture` process copying frames (at most one: the datapath has one
    /// capture filter; the capture is on while it lives).
    #[serde(default)]
    pub captures: Vec<ProcessId>,
    /// False while `up` is making it.
    pub ready: bool,
}

/// What is behind a port. Everything about a port that differs by kind (whether it is
/// switched, its datapath flags, who owns the namespace, how it is labelled) is a method here,
/// never a guess from an interface name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortKind {
    /// A namespace made by `switch ns add`: the switch owns it and deletes it with the port.
    Namespace,
    /// A namespace someone else made (a container runtime): the switch made only the veth
    /// pair, and leaves the namespace alone when the port goes.
    Adopted,
    /// The host's own port: a veth pair whose far end carries the gateway address. Its
    /// traffic is routed by the host, so it may carry any source address (`PORT_F_HOST`).
    Gateway,
    /// A host interface where forwarded traffic arrives from outside. It is not switched (no
    /// slot): the port-forwarding programs sit on it.
    Uplink,
    /// The switch's collect-metadata VXLAN device, reaching the switches of other hosts (its
    /// peers, `PortState::tunnel`) over an underlay interface: stations behind it are learned
    /// with the peer they are at, floods go to every peer, nothing from it goes back into it.
    Tunnel,
}

impl PortKind {
    /// Whether frames are switched to and from the port (it has a slot in the port array).
    pub fn is_switched(self) -> bool {
        !matches!(self, Self::Uplink)
    }

    /// Whether the switch made the namespace behind the port (and so deletes it).
    pub fn owns_namespace(self) -> bool {
        matches!(self, Self::Namespace)
    }

    /// Flags of the port in the datapath's port array.
    pub fn datapath_flags(self) -> u32 {
        match self {
            Self::Gateway => switch_common::PORT_F_HOST,
            Self::Tunnel => switch_common::PORT_F_TUNNEL,
            _ => 0,
        }
    }
}

impl std::fmt::Display for PortKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Namespace => "namespace",
            Self::Adopted => "adopted",
            Self::Gateway => "gateway",
            Self::Uplink => "uplink",
            Self::Tunnel => "tunnel",
        })
    }
}

/// A port of a switch, whatever its kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortState {
    /// The switch.
    pub switch: String,
    /// What is behind the port.
    pub kind: PortKind,
    /// Who is behind it, as listings show it: the namespace (namespace, adopted), `host`
    /// (gateway), the interface (uplink).
    pub owner: String,
    /// The switch's end: the interface the datapath is attached to.
    pub host_if: String,
    /// Interface index of `host_if`, 0 until it exists.
    pub host_ifindex: u32,
    /// The far end of the veth pair: `eth0` in the namespace, or the gateway's host end.
    /// Empty for an uplink.
    pub peer_if: String,
    /// Slot in the switch's port array (switched ports only).
    pub slot: Option<u32>,
    /// Address of `peer_if` (the gateway's: the host's address on the segment).
    pub ip: Option<Cidr>,
    /// IPv6 address of `peer_if`, if it has one (IPv6 is on behind the port only then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Cidr6>,
    /// MAC of `peer_if` (as requested, or as the kernel chose once created).
    pub mac: Option<Mac>,
    /// Network namespace cookie of the namespace (0 if unknown or the host).
    #[serde(default)]
    pub netns_cookie: u64,
    /// Where the namespace is, when not at `/run/netns/OWNER` (an adopted one: a container
    /// runtime's `/run/netns/cni-…`, or `/proc/PID/ns/net`).
    #[serde(default)]
    pub netns_path: Option<String>,
    /// MTU of the veth pair, if asked for (the kernel's default, 1500, otherwise).
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Port security: a namespace port accepts only its own MAC, address and ARP claims (off
    /// for ports that carry other stations, e.g. a nested bridge). The gateway's MAC is
    /// always reserved for it; the gateway itself is not checked (it carries routed traffic).
    #[serde(default = "on")]
    pub port_security: bool,
    /// The tunnel's settings and peers (kind `Tunnel` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelState>,
    /// The attachment the port is, when a container runtime's plugin made it (`switch-cni`,
    /// the Docker driver; kind `Adopted` only): what the runtime names it by. `None` for every
    /// other port (`switch ns attach`'s included).
    /// (Recorded as `cni` before Docker's attachments were: read under either name.)
    #[serde(default, alias = "cni", skip_serializing_if = "Option::is_none")]
    pub attachment: Option<Attachment>,
    /// The namespace's end of the veth pair was left on the host, named `peer_if`, for the
    /// runtime to move into its namespace itself (Docker's Join): nothing is set up inside it
    /// (the runtime gives it its address and routes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub handed_over: bool,
    /// The workload a container runtime says is behind the port (a Kubernetes pod, a Docker
    /// container), as listings show it. A label only: ports are never found by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<Workload>,
    /// False while a command is making it; a record left false by a killed command is rolled
    /// back by the next mutating command of the switch.
    pub ready: bool,
}

/// The container runtime interface a port's attachment was made through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// A CNI plugin invocation (`switch-cni`: podman, containerd, Kubernetes).
    #[default]
    Cni,
    /// Docker's network driver protocol (`switch docker-plugin`).
    Docker,
}

impl Runtime {
    fn is_cni(&self) -> bool {
        *self == Self::Cni
    }
}

/// An attachment made for a container runtime: the tuple the runtime names it by in every
/// call. CNI: (network name, `CNI_CONTAINERID`, `CNI_IFNAME`); Docker: (network ID, endpoint
/// ID, the container end's name the driver gave it on the host, which Docker renames `ethN`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// Which interface of which runtime (CNI when not recorded: records before Docker).
    #[serde(default, skip_serializing_if = "Runtime::is_cni")]
    pub runtime: Runtime,
    /// The network's name (CNI: `name` of its configuration; Docker: its network ID).
    pub network: String,
    /// `CNI_CONTAINERID`; Docker's endpoint ID.
    pub container_id: String,
    /// `CNI_IFNAME`: the interface in the container; Docker: the container end's name before
    /// Docker moves it.
    pub ifname: String,
}

/// Who a container runtime runs behind a port: a Kubernetes pod (`namespace/name`, from
/// `K8S_POD_NAMESPACE` and `K8S_POD_NAME` in `CNI_ARGS`) or a container by its name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    /// The Kubernetes namespace of a pod; `None` for a plain container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The pod's or the container's name.
    pub name: String,
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// What a tunnel port is: a VXLAN segment over an underlay interface, and its peers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelState {
    /// VXLAN network identifier.
    pub vni: u32,
    /// UDP port of the VXLAN traffic (4789, the IANA port, unless told otherwise).
    pub udp_port: u16,
    /// The host interface the encapsulated traffic goes over.
    pub underlay: String,
    /// The local VTEP address: the underlay's IPv4 address when the tunnel was made.
    pub local: Ipv4Addr,
    /// MTU of the tunnel and of the switch's namespaces: the underlay's minus the VXLAN
    /// overhead (`VXLAN_OVERHEAD`), so no encapsulated packet is too big for the underlay.
    pub mtu: u32,
    /// The other hosts' VTEP addresses: where floods are replicated to and the only sources
    /// frames are taken from.
    #[serde(default)]
    pub peers: Vec<Ipv4Addr>,
}

/// Bytes VXLAN over IPv4 adds to a frame: outer IPv4 (20), UDP (8), VXLAN (8) and the inner
/// Ethernet header (14), which the inner MTU does not count.
pub const VXLAN_OVERHEAD: u32 = 50;

/// Serde's default for flags that are on unless said otherwise.
fn on() -> bool {
    true
}

impl PortState {
    /// The workload behind the port as every listing shows it (`switch ports`, `forward
    /// list`, `stats`, `monitor`, `capture`): a container's name, a pod's `namespace/name`;
    /// `None` when no runtime named one.
    pub fn workload_name(&self) -> Option<String> {
        self.workload.as_ref().map(ToString::to_string)
    }

    /// The port as the datapath's port array has it: flags (kind and port security) and what
    /// it is bound to. A binding needs the MAC, so a port whose MAC is not known yet is bound
    /// to nothing.
    pub fn datapath_port(&self) -> switch_common::Port {
        use switch_common::{PORT_F_BIND_IP, PORT_F_BIND_MAC};
        let mut flags = self.kind.datapath_flags();
        if let Some(mac) = self.mac {
            // The gateway's MAC is reserved for it (no namespace may claim it), but the host is
            // not checked: it routes traffic of any source, and may change its MAC.
            let reserved = match self.kind {
                PortKind::Namespace | PortKind::Adopted if self.port_security => {
                    flags |= PORT_F_BIND_MAC | PORT_F_BIND_IP;
                    true
                }
                PortKind::Gateway => true,
                _ => false,
            };
            if reserved {
                let ip = self.ip.map_or(0, |c| u32::from_ne_bytes(c.addr.octets()));
                // The gateway's prefix is the segment: what tells the datapath a station's
                // address from one the host routes in from elsewhere (`HostFlow`).
                let prefix = if self.kind == PortKind::Gateway { self.ip.map_or(0, |c| c.prefix) } else { 0 };
                return switch_common::Port { flags, ip, mac: mac.0, prefix, ..Default::default() };
            }
        }
        switch_common::Port { flags, ..Default::default() }
    }

    /// The IPv6 addresses the datapath binds the port to: for a port bound to its addresses
    /// (see `datapath_port`), and for the gateway (whose addresses no tunnel peer may claim),
    /// its address (none: all zero) and the link-local address of its MAC. `None` for a port
    /// that is bound to none.
    pub fn datapath_addrs6(&self) -> Option<switch_common::PortAddrs6> {
        use switch_common::ipv6;
        let mac = self.mac?;
        let bound = match self.kind {
            PortKind::Namespace | PortKind::Adopted => self.port_security,
            PortKind::Gateway => true,
            _ => false,
        };
        if !bound {
            return None;
        }
        Some(switch_common::PortAddrs6 {
            ip: self.ip6.map_or([0; 4], |c| ipv6::words(c.addr.octets())),
            link_local: ipv6::words(ipv6::link_local(mac.0)),
        })
    }

    /// The port's addresses as listings show them: IPv4, then IPv6, comma-separated.
    pub fn addresses(&self) -> String {
        let v4 = self.ip.map(|c| c.to_string());
        let v6 = self.ip6.map(|c| c.to_string());
        [v4, v6].into_iter().flatten().collect::<Vec<_>>().join(",")
    }

    /// The port's namespace, for ports behind a namespace.
    pub fn namespace(&self) -> Option<&str> {
        matches!(self.kind, PortKind::Namespace | PortKind::Adopted).then_some(self.owner.as_str())
    }

    /// The namespace file of a port behind a namespace.
    pub fn netns_file(&self) -> Option<std::path::PathBuf> {
        let ns = self.namespace()?;
        Some(self.netns_path.as_ref().map_or_else(|| crate::sys::netns::path(ns), std::path::PathBuf::from))
    }
}

/// A direct veth link from a namespace to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkState {
    /// The namespace at the other end.
    pub peer: String,
    /// Interface name in this namespace.
    pub ifname: String,
    /// Address of this end.
    pub ip: Cidr,
}

/// A namespace made by this tool (its switch port, if any, is in `State::ports`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NsState {
    /// Its direct links.
    #[serde(default)]
    pub links: Vec<LinkState>,
    /// False while `ns add` or `link` is making it.
    pub ready: bool,
}

/// Transport protocol of a forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Self::Tcp => switch_common::nat::PROTO_TCP,
            Self::Udp => switch_common::nat::PROTO_UDP,
        }
    }
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        })
    }
}

/// A port forward: host ports `host_first..=host_last` to the same number of ports of a
/// namespace, starting at `ns_first`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardState {
    /// The switch whose uplinks answer.
    pub switch: String,
    /// Protocol.
    pub proto: Proto,
    /// First host port.
    pub host_first: u16,
    /// Last host port.
    pub host_last: u16,
    /// Target namespace.
    pub ns: String,
    /// First target port.
    pub ns_first: u16,
    /// Counter index in the datapath.
    pub rule: u16,
    /// False while `forward add` writes its entries (see `PortState::ready`).
    #[serde(default)]
    pub ready: bool,
}

/// Format of the state file this build reads and writes. 2: one table of ports of every kind
/// (1 kept namespace ports inside the namespaces and the gateway and uplinks in the switch).
pub const STATE_VERSION: u32 = 2;

/// Everything the controller made.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Format of the file (`STATE_VERSION`; missing in format 1).
    #[serde(default)]
    pub version: u32,
    /// Switches by name.
    #[serde(default)]
    pub switches: BTreeMap<String, SwitchState>,
    /// Namespaces made by this tool, by name.
    #[serde(default)]
    pub namespaces: BTreeMap<String, NsState>,
    /// Every port of every switch, of every kind: the one table listings, slots, flags,
    /// counters and FDB labels derive from.
    #[serde(default)]
    pub ports: Vec<PortState>,
    /// Port forwards.
    #[serde(default)]
    pub forwards: Vec<ForwardState>,
}

impl State {
    /// Ports of `switch`, of every kind.
    pub fn ports<'a>(&'a self, switch: &'a str) -> impl Iterator<Item = &'a PortState> + 'a {
        self.ports.iter().filter(move |p| p.switch == switch)
    }

    /// Ports of `switch` that frames are switched to (every kind but uplinks), ready ones.
    pub fn switched_ports<'a>(&'a self, switch: &'a str) -> impl Iterator<Item = &'a PortState> + 'a {
        self.ports(switch).filter(|p| p.kind.is_switched() && p.ready)
    }

    /// The port of `kind` owned by `owner` on `switch`.
    pub fn port<'a>(&'a self, switch: &str, kind: PortKind, owner: &str) -> Option<&'a PortState> {
        self.ports.iter().filter(|p| p.switch == switch).find(|p| p.kind == kind && p.owner == owner)
    }

    /// The port of namespace `ns` (made or adopted), on whichever switch.
    pub fn ns_port(&self, ns: &str) -> Option<&PortState> {
        self.ports.iter().find(|p| p.namespace() == Some(ns))
    }

    /// The tunnel port of `switch`.
    pub fn tunnel(&self, switch: &str) -> Option<&PortState> {
        self.ports.iter().filter(|p| p.switch == switch).find(|p| p.kind == PortKind::Tunnel)
    }

    /// The gateway port of `switch`.
    pub fn gateway(&self, switch: &str) -> Option<&PortState> {
        self.ports.iter().filter(|p| p.switch == switch).find(|p| p.kind == PortKind::Gateway)
    }

    /// The host's address on `switch`'s segment.
    pub fn gateway_cidr(&self, switch: &str) -> Option<Cidr> {
        self.gateway(switch).and_then(|g| g.ip)
    }

    /// The host's IPv6 address on `switch`'s segment, if its gateway has one.
    pub fn gateway_cidr6(&self, switch: &str) -> Option<Cidr6> {
        self.gateway(switch).and_then(|g| g.ip6)
    }

    /// Names of the uplinks of `switch`.
    pub fn uplinks(&self, switch: &str) -> Vec<String> {
        self.ports(switch).filter(|p| p.kind == PortKind::Uplink).map(|p| p.host_if.clone()).collect()
    }

    /// The lowest slot of `switch`'s port array that no port holds.
    pub fn free_slot(&self, switch: &str) -> Option<u32> {
        let used: Vec<u32> = self.ports(switch).filter_map(|p| p.slot).collect();
        (0..switch_common::MAX_PORTS).find(|s| !used.contains(s))
    }

    /// Removes the port record of `kind`/`owner` on `switch`.
    pub fn remove_port(&mut self, switch: &str, kind: PortKind, owner: &str) {
        self.ports.retain(|p| !(p.switch == switch && p.kind == kind && p.owner == owner));
    }

    /// The port record of `kind`/`owner` on `switch`, to change it.
    pub fn port_mut(&mut self, switch: &str, kind: PortKind, owner: &str) -> Option<&mut PortState> {
        self.ports.iter_mut().find(|p| p.switch == switch && p.kind == kind && p.owner == owner)
    }

    /// The switch, or `UnknownSwitch`.
    pub fn switch(&self, name: &str) -> Result<&SwitchState> {
        self.switches.get(name).ok_or_else(|| Error::UnknownSwitch(name.to_owned()))
    }
}

/// The state file, locked for the lifetime of this value.
pub struct Store {
    dir: PathBuf,
    _lock: File,
}

impl Store {
    /// Opens the store in `dir` and takes the lock (waits for other commands to finish).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        // Root's alone: another local user could otherwise read the state, or open the lock
        // (read access is enough for flock) and hold every command back forever.
        files::private_dir(&dir)?;
        let lock_path = dir.join("lock");
        let lock = files::open_private(&lock_path, false)?;
        // SAFETY: flock on a file descriptor we own; blocks until other commands are done.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error()).context(format!("locking {}", lock_path.display()));
        }
        Ok(Self { dir, _lock: lock })
    }

    fn path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// Reads the state; a missing file is an empty state.
    pub fn load(&self) -> Result<State> {
        read(self.path())
    }

    /// Reads the state in `dir` WITHOUT the lock, for a long-running reader that only watches
    /// (`switch monitor`): every save is an atomic rename, so it sees one whole state, though
    /// possibly one a command is still working on (records not `ready` yet).
    pub fn peek(dir: impl AsRef<Path>) -> Result<State> {
        read(dir.as_ref().join("state.json"))
    }

    /// Writes the state atomically (a fresh 0600 temporary file, fsync, rename).
    pub fn save(&self, state: &State) -> Result<()> {
        let bytes =
            serde_json::to_vec_pretty(&State { version: STATE_VERSION, ..state.clone() }).expect("state serialises");
        files::write_private_atomic(&self.path(), &bytes)
    }
}

/// The state file at `path`; a missing file is an empty state.
fn read(path: PathBuf) -> Result<State> {
    {
        match fs::read(&path) {
            Ok(bytes) => {
                let state: State = serde_json::from_slice(&bytes).map_err(|e| Error::State {
                    path: path.clone(),
                    reason: format!("{e} (move it away to start from a clean state)"),
                })?;
                let empty = state.switches.is_empty() && state.namespaces.is_empty() && state.ports.is_empty();
                if state.version != STATE_VERSION && !empty {
                    return Err(Error::State {
                        path,
                        reason: format!(
                            "written in format {} by another version of switch (this one reads format {STATE_VERSION}); \
                             remove its switches with that version's 'switch down', or move the file away",
                            state.version.max(1)
                        ),
                    });
                }
                Ok(state)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e).context(format!("reading {}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(switch: &str, kind: PortKind, owner: &str, slot: Option<u32>) -> PortState {
        PortState {
            switch: switch.into(),
            kind,
            owner: owner.into(),
            host_if: format!("s{owner}"),
            host_ifindex: 7,
            peer_if: "eth0".into(),
            slot,
            ip: Some("192.168.15.1/24".parse().unwrap()),
            ip6: None,
            mac: Some("02:00:00:00:00:01".parse().unwrap()),
            netns_cookie: 0,
            netns_path: None,
            mtu: None,
            port_security: true,
            tunnel: None,
            attachment: None,
            handed_over: false,
            workload: None,
            ready: true,
        }
    }

    #[test]
    fn round_trip_and_lock() {
        let dir = std::env::temp_dir().join(format!("switch-state-test-{}", std::process::id()));
        let store = Store::open(&dir).unwrap();
        assert_eq!(store.load().unwrap(), State::default());
        let mut st = State::default();
        st.switches.insert(
            "sw0".into(),
            SwitchState {
                ageing_secs: 300,
                redirect: Redirect::Peer,
                datapath: DatapathKind::Tc,
                masquerade: false,
                routable: false,
                max_learned: 1024,
                busy_poll_us: 0,
                sysctls: [("/proc/sys/net/ipv4/conf/up0/forwarding".to_owned(), "0".to_owned())].into(),
                log_followers: vec![ProcessId::current()],
                monitors: vec![ProcessId::current()],
                captures: vec![],
                ready: true,
            },
        );
        st.namespaces.insert("red".into(), NsState { links: vec![], ready: true });
        st.ports.push(port("sw0", PortKind::Namespace, "red", Some(0)));
        let tunnel = TunnelState {
            vni: 42,
            udp_port: 4789,
            underlay: "eth1".into(),
            local: Ipv4Addr::new(10, 0, 0, 1),
            mtu: 1450,
            peers: vec![Ipv4Addr::new(10, 0, 0, 2)],
        };
        st.ports.push(PortState { tunnel: Some(tunnel), ..port("sw0", PortKind::Tunnel, "vxlan42", Some(1)) });
        store.save(&st).unwrap();
        assert_eq!(store.load().unwrap(), State { version: STATE_VERSION, ..st.clone() });
        assert_eq!(st.tunnel("sw0").and_then(|p| p.tunnel.as_ref()).map(|t| t.peers.len()), Some(1));
        assert_eq!(st.tunnel("sw0").unwrap().datapath_port().flags, switch_common::PORT_F_TUNNEL);
        // A file of another format is refused with one clear line, not misread.
        let old = r#"{"switches":{"sw0":{"ageing_secs":300,"redirect":"peer","ready":true}},"namespaces":{}}"#;
        fs::write(dir.join("state.json"), old).unwrap();
        let e = store.load().unwrap_err().to_string();
        assert!(e.contains("format 1") && e.contains("another version"), "{e}");
        assert!(matches!(st.switch("nope"), Err(Error::UnknownSwitch(_))));
        fs::write(dir.join("state.json"), b"{not json").unwrap();
        assert!(matches!(store.load(), Err(Error::State { .. })));
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_attachment_recorded_as_cni_reads_as_the_attachment() {
        let p = port("sw0", PortKind::Adopted, "ctr1", Some(0));
        let mut v = serde_json::to_value(&p).unwrap();
        assert!(v.get("attachment").is_none() && v.get("cni").is_none(), "none recorded: {v}");
        v["cni"] = serde_json::json!({ "network": "net", "container_id": "ctr1", "ifname": "eth0" });
        let read: PortState = serde_json::from_value(v).unwrap();
        let a = read.attachment.expect("read from the old name");
        assert_eq!((a.runtime, a.network.as_str(), a.ifname.as_str()), (Runtime::Cni, "net", "eth0"));
        let again = serde_json::to_value(PortState { attachment: Some(a), ..p }).unwrap();
        assert!(again.get("attachment").is_some() && again.get("cni").is_none(), "{again}");
    }

    #[test]
    fn every_kind_of_port_in_one_table() {
        let mut st = State::default();
        st.ports.push(port("sw0", PortKind::Namespace, "red", Some(0)));
        st.ports.push(PortState {
            ip: Some("192.168.15.254/24".parse().unwrap()),
            ..port("sw0", PortKind::Gateway, "host", Some(1))
        });
        st.ports.push(PortState { host_if: "up0".into(), ..port("sw0", PortKind::Uplink, "up0", None) });
        st.ports.push(PortState { ready: false, ..port("sw0", PortKind::Adopted, "ctr1", Some(3)) });
        st.ports.push(port("sw1", PortKind::Namespace, "blue", Some(0)));
        assert_eq!(st.ports("sw0").count(), 4);
        // Uplinks are not switched, unfinished ports are not yet.
        let switched: Vec<&str> = st.switched_ports("sw0").map(|p| p.owner.as_str()).collect();
        assert_eq!(switched, ["red", "host"]);
        assert_eq!(st.free_slot("sw0"), Some(2), "slots of every kind are taken");
        assert_eq!(st.gateway_cidr("sw0").unwrap().to_string(), "192.168.15.254/24");
        assert_eq!(st.uplinks("sw0"), ["up0"]);
        assert_eq!(st.ns_port("ctr1").unwrap().kind, PortKind::Adopted);
        assert!(st.ns_port("host").is_none(), "the gateway is not a namespace");
        // Flags and ownership come from the kind, never from a name.
        assert_eq!(PortKind::Gateway.datapath_flags(), switch_common::PORT_F_HOST);
        assert_eq!(PortKind::Namespace.datapath_flags(), 0);
        assert!(PortKind::Namespace.owns_namespace() && !PortKind::Adopted.owns_namespace());
        st.remove_port("sw0", PortKind::Uplink, "up0");
        assert!(st.uplinks("sw0").is_empty());
    }
}
