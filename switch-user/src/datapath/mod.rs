//! The datapaths: what moves frames between a switch's ports, behind one trait.
//!
//! | datapath  | folder       | switch object                   | a port is                          |
//! |-----------|--------------|---------------------------------|------------------------------------|
//! | tc        | `ebpf/`      | pinned TC program + maps        | a clsact filter + map entries      |
//! | xdp       | `ebpf/`      | pinned XDP program + maps       | a pinned XDP link + map entries    |
//! | userspace | `userspace/` | a `switch run` process          | an AF_PACKET socket in the process |
//! | bridge    | `bridge/`    | a Linux bridge                  | the host veth enslaved to it       |
//!
//! The commands (`controller/`) only talk to [`Datapath`]. What some datapaths can do and
//! others cannot (port forwarding, table counters, a datapath log, events, packet capture,
//! tunnel ports: see [`Capability`]) is a capability: the trait's accessor returns `None`
//! where it is missing and its `require_*` turns that into the one error every command uses.
//! Settings of `switch up` that only some datapaths take (`--redirect`, `--busy-poll`) are
//! declared by each datapath (`Datapath::takes`) and checked in `settings`. Adding a datapath
//! means one new folder and one arm in [`DatapathKind::open`].
pub mod bridge;
pub mod ebpf;
pub mod settings;
pub mod userspace;

use std::{collections::HashMap, net::Ipv4Addr, time::Duration};

use async_trait::async_trait;
use settings::Setting;
use switch_common::{FwdStats, PortStats};

use crate::{
    error::{Error, Result},
    kind::{Capability, DatapathKind},
    names::{Cidr, Mac},
    state::{ForwardState, PortState, SwitchState},
};

// The kind is a leaf (`crate::kind`) that the state file and the errors name too; opening one
// needs every datapath, so it is done here.
impl DatapathKind {
    /// The datapath of switch `name`.
    pub fn open(self, name: &str) -> Box<dyn Datapath> {
        match self {
            Self::Tc => Box::new(ebpf::Ebpf::new(name, ebpf::Program::Tc)),
            Self::Xdp => Box::new(ebpf::Ebpf::new(name, ebpf::Program::Xdp)),
            Self::Userspace => Box::new(userspace::Userspace::new(name)),
            Self::Bridge => Box::new(bridge::Bridge::new(name)),
        }
    }
}

/// An FDB entry, whatever datapath it comes from.
#[derive(Clone, Debug)]
pub struct FdbEntryView {
    /// Station MAC.
    pub mac: Mac,
    /// Host-side interface index of its port.
    pub ifindex: u32,
    /// Static (operator-made) entry.
    pub is_static: bool,
    /// Time since the station was last seen (dynamic entries).
    pub age: Option<Duration>,
    /// A station behind the tunnel port: the peer (VTEP) it is at.
    pub remote: Option<Ipv4Addr>,
}

/// Counters of a port. The bridge's come from the host veth's interface counters, which know
/// no flooding or drop reasons: `detailed` is false there.
#[derive(Clone, Copy, Debug, Default)]
pub struct PortCounters {
    /// The counters that exist.
    pub stats: PortStats,
    /// Whether flooded/dropped/malformed/tx_errors are real.
    pub detailed: bool,
}

/// Fill level of one table of the datapath.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableFill {
    /// Live entries.
    pub entries: u64,
    /// Entries in the table, expired ones included (they hold room until replaced).
    pub present: u64,
    /// Most entries the table holds.
    pub capacity: u64,
    /// Entries ever added.
    pub added: u64,
    /// Entries deleted by the programs or the controller.
    pub removed: u64,
    /// Entries the table could not take.
    pub refused: u64,
}

impl TableFill {
    /// Entries the kernel evicted: whatever was added and is neither removed nor present. A
    /// packet may add an entry between the counters and the walk: never below zero.
    pub fn evicted(&self) -> u64 {
        self.added.saturating_sub(self.removed).saturating_sub(self.present)
    }
}

impl dyn Datapath {
    /// Port forwarding, or the error every command gives for a datapath without it.
    pub fn require_forwarding(&self) -> Result<&dyn PortForwarding> {
        self.forwarding().ok_or_else(|| self.unsupported(Capability::PortForwarding))
    }

    /// Table counters, or the error.
    pub fn require_tables(&self) -> Result<&dyn Tables> {
        self.tables().ok_or_else(|| self.unsupported(Capability::TableCounters))
    }

    /// The datapath log, or the error.
    pub fn require_log(&self) -> Result<&dyn DatapathLog> {
        self.log().ok_or_else(|| self.unsupported(Capability::Log))
    }

    /// The tunnel port's peers, or the error.
    pub fn require_tunnel(&self) -> Result<&dyn Tunnels> {
        self.tunnel().ok_or_else(|| self.unsupported(Capability::Tunnel))
    }

    /// The datapath's events, or the error.
    pub fn require_events(&self) -> Result<&dyn DatapathEvents> {
        self.events().ok_or_else(|| self.unsupported(Capability::Events))
    }

    /// The datapath's packet capture, or the error.
    pub fn require_capture(&self) -> Result<&dyn DatapathCapture> {
        self.capture().ok_or_else(|| self.unsupported(Capability::Capture))
    }

    /// The one wording of a missing capability: "switch 'x' uses the bridge datapath; only tc
    /// and xdp have a datapath log".
    fn unsupported(&self, capability: Capability) -> Error {
        Error::Unsupported {
            switch: self.switch().to_owned(),
            datapath: self.kind(),
            capability,
            with: self.kinds_that(|dp| dp.has(capability)),
        }
    }

    /// The datapaths of which `test` holds, in words: "tc and xdp".
    fn kinds_that(&self, test: impl Fn(&dyn Datapath) -> bool) -> String {
        let with: Vec<String> = DatapathKind::ALL
            .iter()
            .filter(|k| test(k.open(self.switch()).as_ref()))
            .map(ToString::to_string)
            .collect();
        with.join(" and ")
    }
}

/// A switch's datapath: everything a command needs from it, for every kind alike. Methods
/// that change something are idempotent and tolerate what a crashed command left.
#[async_trait]
pub trait Datapath: Send + Sync {
    /// Which datapath this is.
    fn kind(&self) -> DatapathKind;

    /// The switch's name.
    fn switch(&self) -> &str;

    /// Makes the switch object, replacing leftovers. On failure nothing of it is left.
    async fn create(&self, sw: &SwitchState) -> Result<()>;

    /// Whether the switch object is there and working.
    async fn healthy(&self) -> Result<bool>;

    /// Removes the switch object. Idempotent.
    async fn destroy(&self) -> Result<()>;

    /// Whether anything of the switch object exists.
    async fn exists(&self) -> Result<bool>;

    /// Where the switch object lives, for people (the pin directory of an eBPF datapath).
    fn location(&self) -> Option<String> {
        None
    }

    /// Whether a switch object found gone can be made again with its ports as they are
    /// recorded (a userspace process that died). Otherwise the switch must be taken down and
    /// made again.
    fn remakeable(&self) -> bool {
        false
    }

    /// Prepares the far end of a port's veth (in the namespace: runs on the namespace's thread)
    /// before the port is attached.
    fn prepare_peer(&self, _ifname: &str) -> Result<()> {
        Ok(())
    }

    /// Plugs `port` (its `host_ifindex` is set) into the switch. Runs before the host end
    /// goes up, so no frame is ever handled by the host stack instead.
    async fn attach_port(&self, port: &PortState) -> Result<()>;

    /// Unplugs `port`; tolerant of anything already gone.
    async fn detach_port(&self, port: &PortState) -> Result<()>;

    /// Every live FDB entry. `ports` maps the host ifindex of each port to the MAC of its host
    /// end (the bridge lists those too; they are left out). Entries of other interfaces are
    /// left out too.
    async fn fdb(&self, ports: HashMap<u32, Mac>) -> Result<Vec<FdbEntryView>>;

    /// Adds a static entry: `mac` is behind the port whose host end is `ifindex`.
    async fn fdb_add(&self, mac: Mac, ifindex: u32) -> Result<()>;

    /// Deletes the entry of `mac`; returns whether there was one. `ports` are the host
    /// ifindexes of the switch's ports.
    async fn fdb_del(&self, mac: Mac, ports: &[u32]) -> Result<bool>;

    /// Counters of each of `ports`, in their order (one pass over the datapath's counters).
    async fn stats(&self, ports: &[PortState]) -> Result<Vec<PortCounters>>;

    /// Port forwarding, if the datapath has it.
    fn forwarding(&self) -> Option<&dyn PortForwarding> {
        None
    }

    /// Table counters, if the datapath has them.
    fn tables(&self) -> Option<&dyn Tables> {
        None
    }

    /// A datapath log, if the datapath has one.
    fn log(&self) -> Option<&dyn DatapathLog> {
        None
    }

    /// Events of the datapath, if it has them.
    fn events(&self) -> Option<&dyn DatapathEvents> {
        None
    }

    /// Packet capture, if the datapath has it.
    fn capture(&self) -> Option<&dyn DatapathCapture> {
        None
    }

    /// The tunnel port's peers, if the datapath has tunnel ports.
    fn tunnel(&self) -> Option<&dyn Tunnels> {
        None
    }

    /// Whether the datapath takes `setting` of `switch up`.
    fn takes(&self, _setting: Setting) -> bool {
        false
    }

    /// Whether the datapath has capability `cap`.
    fn has(&self, cap: Capability) -> bool {
        match cap {
            Capability::Tunnel => self.tunnel().is_some(),
            Capability::PortForwarding => self.forwarding().is_some(),
            Capability::TableCounters => self.tables().is_some(),
            Capability::Log => self.log().is_some(),
            Capability::Events => self.events().is_some(),
            Capability::Capture => self.capture().is_some(),
        }
    }
}

/// What the port-forwarding programs need to know about the uplinks and the segment.
#[derive(Clone, Debug)]
pub struct UplinkSetup {
    /// Uplink interfaces by name.
    pub uplinks: Vec<String>,
    /// The host's address on the segment.
    pub gateway: Cidr,
    /// The gateway's host end (the fast path of replies sits on it).
    pub gateway_if: String,
    /// Source-NAT the namespaces' outbound traffic.
    pub masquerade: bool,
}

/// Counters of the forwards of one switch, read in one pass.
#[derive(Clone, Debug, Default)]
pub struct ForwardCounters {
    /// Packets/bytes/connections per rule.
    pub per_rule: HashMap<u16, FwdStats>,
    /// Connections in the table now, per rule.
    pub active: HashMap<u16, u64>,
}

/// Port forwarding (DNAT on the uplinks, masquerade, hairpin and host-local access).
#[async_trait]
pub trait PortForwarding: Send + Sync {
    /// Attaches the forwarding programs to the uplinks and the gateway and (re)writes what
    /// they need: configuration, uplink addresses. Idempotent; also refreshes addresses.
    async fn setup_uplinks(&self, setup: &UplinkSetup) -> Result<()>;

    /// Takes the forwarding programs off uplink `ifname` (tolerant of it being gone).
    async fn detach_uplink(&self, ifname: &str) -> Result<()>;

    /// Lets sockets of the namespace with `cookie` reach forwards through the uplink addresses.
    async fn allow_netns(&self, cookie: u64) -> Result<()>;

    /// Writes the entries of forward `f` to target address `target`. `written` runs after
    /// each port of the range (fault tests stop there).
    async fn write(&self, f: &ForwardState, target: Ipv4Addr, written: fn() -> Result<()>) -> Result<()>;

    /// Removes the entries of forward `f` (entries not there are fine).
    async fn remove(&self, f: &ForwardState) -> Result<()>;

    /// Counters of `rules`, with one walk of the connection table for all of them.
    async fn counters(&self, rules: &[u16]) -> Result<ForwardCounters>;

    /// Deletes every connection-table entry of `addr` (as an end of the connection or as what
    /// an entry translates to): a port that goes takes its connections with it, so a new
    /// namespace or container given the address later starts with none (stale UDP entries
    /// after a container restart are a classic of iptables port mapping). Returns how many.
    async fn forget_connections(&self, addr: Ipv4Addr) -> Result<usize>;
}

/// The peers of a switch's tunnel port (the port itself is attached and detached like any
/// other, with its settings in `PortState::tunnel`).
#[async_trait]
pub trait Tunnels: Send + Sync {
    /// Makes `peers` the peer list: floods are replicated to them, and the tunnel takes frames
    /// from them only.
    async fn set_peers(&self, peers: &[Ipv4Addr]) -> Result<()>;

    /// Forgets the stations learned at peer `addr`; returns how many there were.
    async fn forget_peer(&self, addr: Ipv4Addr) -> Result<usize>;

    /// New stations learned from each peer in its current window (its share of
    /// `--max-learned`). A peer missing has no window: a switch pinned by an older binary.
    async fn learned(&self) -> Result<HashMap<Ipv4Addr, u32>>;
}

/// Fill levels of the datapath's tables.
#[async_trait]
pub trait Tables: Send + Sync {
    /// The MAC table and the connection table, in that order, as (name, fill).
    async fn fill(&self) -> Result<Vec<(&'static str, TableFill)>>;

    /// The drops that belong to no port, with no walk of the tables but the unanswered
    /// connections' (for its evictions).
    async fn drops(&self) -> Result<SwitchDrops>;
}

/// Drops of packets that came from no port: routed in from outside, or refused by NAT.
/// Datapaths without them (userspace, bridge) have none.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SwitchDrops {
    /// Outbound connections refused: no masquerade port free, or the connection table
    /// refused the entry. Their packets were dropped, never sent untranslated.
    pub nat_refused: u64,
    /// Packets routed towards the segment that nothing asked for (not to a forwarded port,
    /// not a reply of the segment's connections, or from another interface than an uplink).
    pub unsolicited_routed: u64,
    /// Connections not answered yet that newer ones pushed out of their budget (a flood of
    /// SYNs, say); answered connections are never pushed out by them.
    pub unreplied_evicted: u64,
    /// ICMP errors refused at an uplink: quoting a connection that is not theirs (to or from
    /// another namespace than the connection's), or a private address with no translation.
    pub icmp_refused: u64,
    /// New outbound connections refused because their namespace already held its share of
    /// the masquerade ports towards that remote.
    pub masquerade_share: u64,
}

/// A datapath log. Logging costs on every frame, so it is on only while someone reads it.
#[async_trait]
pub trait DatapathLog: Send + Sync {
    /// Turns the datapath's logging on or off.
    async fn set_logging(&self, on: bool) -> Result<()>;

    /// Streams the log's records as `LEVEL message` lines on stdout until `stop` resolves;
    /// `started` runs once the log is being read.
    async fn stream(
        &self,
        started: Box<dyn FnOnce() + Send>,
        stop: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    ) -> Result<()>;
}

/// Events of the datapath (`switch monitor`). Like the log, they cost only while someone
/// listens, so they are on only then.
#[async_trait]
pub trait DatapathEvents: Send + Sync {
    /// Turns the datapath's events on or off.
    async fn set_events(&self, on: bool) -> Result<()>;

    /// The dynamic stations and NAT's connections now, read without changing anything:
    /// `switch monitor` tells stations aging out and connections expiring or being evicted
    /// from two of these (the programs age lazily, so no program sees it happen).
    async fn tables_now(&self) -> Result<TablesNow>;

    /// Hands every event to `sink` until `stop` resolves; `started` runs once the events are
    /// being read.
    async fn stream(
        &self,
        sink: Box<dyn FnMut(switch_common::events::Event) + Send>,
        started: Box<dyn FnOnce() + Send>,
        stop: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    ) -> Result<()>;
}

/// A datapath's dynamic stations and connections at one moment (`DatapathEvents::tables_now`).
#[derive(Clone, Debug, Default)]
pub struct TablesNow {
    /// When, on the programs' clock (CLOCK_MONOTONIC ns).
    pub now_ns: u64,
    /// The switch's ageing time.
    pub ageing_ns: u64,
    /// Dynamic MAC table entries.
    pub stations: HashMap<[u8; 6], switch_common::FdbEntry>,
    /// Connections, each by its entry for packets from outside (`CT_DNAT`: the destination
    /// it names is the namespace's side).
    pub connections: HashMap<switch_common::CtKey, switch_common::CtEntry>,
}

/// Takes each item of a datapath's ring buffer, as its bytes.
pub type RingSink = Box<dyn for<'a> FnMut(&'a [u8]) + Send>;

/// Packet capture (`switch capture`): copies of the frames a filter wants, with the
/// datapath's verdict. Like events, it costs only while a capture runs.
#[async_trait]
pub trait DatapathCapture: Send + Sync {
    /// Starts copying the frames `filter` wants, or stops (`None`).
    async fn set_capture(&self, filter: Option<switch_common::capture::Filter>) -> Result<()>;

    /// Hands every record (a `capture::Header` and the frame's first bytes) to `sink` until
    /// `stop` resolves; `started` runs once records are being read.
    async fn stream(
        &self,
        sink: RingSink,
        started: Box<dyn FnOnce() + Send>,
        stop: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    ) -> Result<()>;
}

/// Removes every kind of switch object `name` may have, whichever datapath it had: after a
/// crash, the record that said which may be gone. (tc and xdp share their pins: the second
/// finds nothing left, which `destroy` tolerates.)
pub async fn destroy_any(name: &str) -> Result<()> {
    for kind in DatapathKind::ALL {
        kind.open(name).destroy().await?;
    }
    Ok(())
}

/// Whether switch `name` has a switch object of any datapath.
pub async fn exists_any(name: &str) -> Result<bool> {
    for kind in DatapathKind::ALL {
        if kind.open(name).exists().await? {
            return Ok(true);
        }
    }
    Ok(false)
}
