//! What the controller made, recorded in `/run/switch/state.json`.
//!
//! The kernel objects (namespaces, veths, pinned maps and links) are the truth for the
//! datapath; this file records what they mean (which namespace is which port, its address) and
//! what a command was in the middle of. Entries are written as `ready: false` *before* the
//! kernel objects are made, so a command killed half-way leaves a record that the next `up`,
//! `ns add`, `ns del` or `down` uses to clean up. `/run` is a tmpfs, like bpffs: both are empty
//! after a reboot, so the two never disagree about a boot.
//!
//! Every command holds an exclusive `flock` on `/run/switch/lock` while it reads, changes and
//! writes the state, so concurrent CLI calls are serialised.
use std::{
    collections::BTreeMap,
    fs::{self, File, OpenOptions},
    io::Write as _,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    error::{Context as _, Error, Result},
    names::{Cidr, Mac},
};

/// Default directory of the state file and its lock.
pub const STATE_DIR: &str = "/run/switch";

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

/// How a switch moves frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Datapath {
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

impl Datapath {
    /// Whether the datapath is an eBPF program with pinned maps.
    pub fn is_ebpf(self) -> bool {
        matches!(self, Self::Tc | Self::Xdp)
    }
}

impl std::fmt::Display for Datapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Tc => "tc",
            Self::Xdp => "xdp",
            Self::Userspace => "userspace",
            Self::Bridge => "bridge",
        })
    }
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
    pub datapath: Datapath,
    /// The host's address on the switch's segment, if the switch has one.
    #[serde(default)]
    pub gateway: Option<GatewayState>,
    /// Host interfaces where forwarded traffic arrives from outside.
    #[serde(default)]
    pub uplinks: Vec<String>,
    /// Namespaces' outbound TCP/UDP leaves the uplinks with the uplink's address.
    #[serde(default)]
    pub masquerade: bool,
    /// False while `up` is making it.
    pub ready: bool,
}

/// The host's own port on a switch: a veth pair whose host end carries the gateway address
/// and whose other end is a port of the switch like any namespace's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayState {
    /// The host's address and the segment's prefix.
    pub cidr: Cidr,
    /// Host end (carries `cidr`).
    pub host_if: String,
    /// Switch end (the port).
    pub port_if: String,
    /// Slot of the port.
    pub slot: u32,
}

/// A namespace's port on a switch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortState {
    /// The switch.
    pub switch: String,
    /// Host end of the veth pair (the switch port).
    pub host_if: String,
    /// Interface index of `host_if`, 0 until it exists.
    pub host_ifindex: u32,
    /// Namespace end of the veth pair.
    pub ns_if: String,
    /// Slot in the switch's port array.
    pub slot: u32,
    /// Address of `ns_if`.
    pub ip: Cidr,
    /// MAC of `ns_if` (as requested, or as the kernel chose once created).
    pub mac: Option<Mac>,
    /// Network namespace cookie of the namespace (0 if unknown).
    #[serde(default)]
    pub netns_cookie: u64,
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

/// A namespace made by this tool.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NsState {
    /// Its switch port, if it is on a switch.
    pub port: Option<PortState>,
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
}

/// Everything the controller made.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Switches by name.
    #[serde(default)]
    pub switches: BTreeMap<String, SwitchState>,
    /// Namespaces by name.
    #[serde(default)]
    pub namespaces: BTreeMap<String, NsState>,
    /// Port forwards.
    #[serde(default)]
    pub forwards: Vec<ForwardState>,
}

impl State {
    /// Ports of `switch`, as (namespace, port).
    pub fn ports<'a>(&'a self, switch: &'a str) -> impl Iterator<Item = (&'a String, &'a PortState)> + 'a {
        self.namespaces.iter().filter_map(move |(n, s)| s.port.as_ref().filter(|p| p.switch == switch).map(|p| (n, p)))
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
        fs::create_dir_all(&dir).context(format!("creating {}", dir.display()))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .context(format!("opening {}", lock_path.display()))?;
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
        let path = self.path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::State { path, reason: format!("{e} (move it away to start from a clean state)") }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e).context(format!("reading {}", path.display())),
        }
    }

    /// Writes the state atomically (temporary file, fsync, rename).
    pub fn save(&self, state: &State) -> Result<()> {
        let path = self.path();
        let tmp = self.dir.join("state.json.tmp");
        let bytes = serde_json::to_vec_pretty(state).expect("state serialises");
        let mut f = File::create(&tmp).context(format!("writing {}", tmp.display()))?;
        f.write_all(&bytes).and_then(|()| f.sync_all()).context(format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, &path).context(format!("replacing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                datapath: Datapath::Tc,
                gateway: None,
                uplinks: vec![],
                masquerade: false,
                ready: true,
            },
        );
        st.namespaces.insert(
            "red".into(),
            NsState {
                port: Some(PortState {
                    switch: "sw0".into(),
                    host_if: "sred-000001".into(),
                    host_ifindex: 7,
                    ns_if: "eth0".into(),
                    slot: 0,
                    ip: "192.168.15.1/24".parse().unwrap(),
                    mac: Some("02:00:00:00:00:01".parse().unwrap()),
                    netns_cookie: 0,
                }),
                links: vec![],
                ready: true,
            },
        );
        store.save(&st).unwrap();
        assert_eq!(store.load().unwrap(), st);
        assert_eq!(st.ports("sw0").count(), 1);
        assert_eq!(st.ports("sw1").count(), 0);
        assert!(matches!(st.switch("nope"), Err(Error::UnknownSwitch(_))));
        fs::write(dir.join("state.json"), b"{not json").unwrap();
        assert!(matches!(store.load(), Err(Error::State { .. })));
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }
}
