//! `switch monitor`: the datapath's events (drops with their reason, new stations, moves,
//! connections NAT creates), stations aged out and connections expired or evicted (seen in
//! a look at the tables once a second), and ports added and removed, live.
//!
//! Events cost the datapath only while someone listens, so they are on only then (see
//! `readers`).
//!
//! Port events need no kernel: the monitor watches the switch's port records (the state file,
//! read without the lock every `PORT_POLL`), which also tells it which namespace each
//! interface index in a kernel event belongs to.
use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    time::{Duration, Instant, SystemTime},
};

use serde::Serialize;
use switch_common::{
    events::{
        DROP_ICMP_FOREIGN, DROP_INVALID_SOURCE, DROP_MAC_LIMIT, DROP_MALFORMED, DROP_MASQ_SHARE, DROP_NAT_REFUSED,
        DROP_NOT_PEER, DROP_ROUTER_GUARD, DROP_SAME_PORT, DROP_SPOOFED_ARP, DROP_SPOOFED_IP, DROP_SPOOFED_MAC,
        DROP_SPOOFED_ND, DROP_TAGGED, DROP_UNSOLICITED, Event, FRAME_F_IPV4, FRAME_F_PORTS, FrameSummary, KIND_DROP,
        KIND_LEARN, KIND_MOVE, KIND_NAT, NAT_FORWARD, NAT_MASQUERADE,
    },
    nat::{PROTO_TCP, PROTO_UDP},
};
use tokio::sync::mpsc;

use super::readers::{self, Reader, Stream};
use crate::{
    datapath::{Datapath, DatapathEvents, TablesNow},
    error::{Error, Result},
    names::{Mac, validate_name},
    state::{PortState, State, Store},
    sys::{blocking, clock::now_ns, host},
};

/// How often the port records are read for port events.
const PORT_POLL: Duration = Duration::from_millis(250);
/// How often the tables are read for ageing and expiry events.
const TABLE_POLL: Duration = Duration::from_secs(1);

/// What an event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A frame the datapath dropped, with the reason.
    Drop,
    /// A station the switch learned (a new source MAC on a port).
    Learn,
    /// A known station seen on another port than before.
    Move,
    /// A station the switch forgot: not heard from for the ageing time.
    Age,
    /// A connection of NAT created (to a forwarded port, or masqueraded), expired (idle for
    /// its state's timeout) or evicted (the table made room for a newer one).
    Nat,
    /// A port added to or removed from the switch.
    Port,
}

/// Which events a monitor shows.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only these kinds (empty: every kind).
    pub kinds: Vec<EventKind>,
    /// Only events of this namespace's port (moves: to or from it).
    pub namespace: Option<String>,
}

impl Filter {
    fn wants(&self, e: &MonitorEvent) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&e.kind))
            && self.namespace.as_ref().is_none_or(|ns| {
                e.namespace.as_ref() == Some(ns) || e.from.as_ref().is_some_and(|f| &f.namespace == ns)
            })
    }
}

/// A port as events name it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PortRef {
    /// The namespace behind the port (`host` for the gateway).
    pub namespace: String,
    /// The port's host-side interface.
    pub interface: String,
    /// The pod or container a runtime runs behind it (`namespace/name` for a pod), as `switch
    /// ports` shows it.
    pub workload: Option<String>,
}

/// A port as event lines show it: `namespace/interface`, and the workload behind it in
/// parentheses when a runtime named one (`dk-4d7b09175a6e/sdk4d7b0-4eb036 (web)`).
pub fn port_text(namespace: &str, interface: &str, workload: Option<&str>) -> String {
    match workload {
        Some(w) => format!("{namespace}/{interface} ({w})"),
        None => format!("{namespace}/{interface}"),
    }
}

impl std::fmt::Display for PortRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&port_text(&self.namespace, &self.interface, self.workload.as_deref()))
    }
}

impl PortRef {
    /// How events name port `p`.
    pub(crate) fn of(p: &PortState) -> Self {
        Self { namespace: p.owner.clone(), interface: p.host_if.clone(), workload: p.workload_name() }
    }

    /// A port the switch does not know (any more): only its interface index.
    pub(crate) fn unknown(ifindex: u32) -> Self {
        Self { namespace: "?".into(), interface: format!("if{ifindex}"), workload: None }
    }

    /// Whether `self` and `other` are the same port (the workload is a label that may come
    /// after the port: labelling a port neither adds nor removes it).
    fn same_port(&self, other: &Self) -> bool {
        (&self.namespace, &self.interface) == (&other.namespace, &other.interface)
    }
}

/// One event as shown to users.
#[derive(Clone, Debug, Serialize)]
pub struct MonitorEvent {
    /// When it happened (UTC, RFC 3339 with milliseconds).
    pub time: String,
    /// What happened.
    pub kind: EventKind,
    /// Why a frame was dropped (`malformed`, `invalid-source`, `same-port`, `spoofed-mac`,
    /// `spoofed-ip`, `spoofed-arp`, `tagged`, `mac-limit`, `not-peer`, `nat-refused`,
    /// `masquerade-share`, `unsolicited-routed`, `icmp-foreign`);
    /// `forward` or `masquerade` for a new NAT connection, `expired` or `evicted` for one that
    /// ended; `added` or `removed` for a port.
    pub reason: Option<&'static str>,
    /// Namespace of the port (None: an interface the switch no longer knows).
    pub namespace: Option<String>,
    /// The port's host-side interface (`if<N>` if the switch no longer knows it).
    pub interface: String,
    /// The pod or container a runtime runs behind the port (`namespace/name` for a pod), as
    /// `switch ports` shows it.
    pub workload: Option<String>,
    /// Moves: the port the station left.
    pub from: Option<PortRef>,
    /// Age: the station (MAC) forgotten.
    pub station: Option<String>,
    /// NAT: what the connection is translated to (the destination of a forward, the source
    /// of a masqueraded connection).
    pub nat: Option<NatTarget>,
    /// Events the datapath left out just before this one (rate limit, or the monitor fell
    /// behind).
    pub suppressed: u32,
    /// The frame (kernel events).
    pub frame: Option<Frame>,
}

/// An address and port NAT translates to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct NatTarget {
    /// Address.
    pub addr: Ipv4Addr,
    /// Port (the identifier of an ICMP echo).
    pub port: u16,
}

/// What an event says about its frame.
#[derive(Clone, Debug, Serialize)]
pub struct Frame {
    /// Length in bytes.
    pub len: u32,
    /// Source MAC (absent for a runt).
    pub src_mac: Option<String>,
    /// Destination MAC.
    pub dst_mac: Option<String>,
    /// EtherType, e.g. `0x0800`.
    pub ethertype: Option<String>,
    /// IPv4 source.
    pub src_ip: Option<Ipv4Addr>,
    /// IPv4 destination.
    pub dst_ip: Option<Ipv4Addr>,
    /// IP protocol number.
    pub proto: Option<u8>,
    /// TCP/UDP source port.
    pub src_port: Option<u16>,
    /// TCP/UDP destination port.
    pub dst_port: Option<u16>,
}

impl From<&FrameSummary> for Frame {
    fn from(f: &FrameSummary) -> Self {
        let eth = f.ethertype != 0 || f.src != [0; 6];
        let ipv4 = f.flags & FRAME_F_IPV4 != 0;
        let ports = f.flags & FRAME_F_PORTS != 0;
        Self {
            len: f.len,
            src_mac: eth.then(|| Mac(f.src).to_string()),
            dst_mac: eth.then(|| Mac(f.dst).to_string()),
            ethertype: eth.then(|| format!("0x{:04x}", f.ethertype)),
            // Addresses are as on the wire: their bytes in memory order are the octets.
            src_ip: ipv4.then(|| Ipv4Addr::from(f.saddr.to_ne_bytes())),
            dst_ip: ipv4.then(|| Ipv4Addr::from(f.daddr.to_ne_bytes())),
            proto: ipv4.then_some(f.proto),
            src_port: ports.then_some(f.sport),
            dst_port: ports.then_some(f.dport),
        }
    }
}

/// The name of a drop reason.
pub(crate) fn reason_name(reason: u16) -> &'static str {
    match reason {
        DROP_MALFORMED => "malformed",
        DROP_INVALID_SOURCE => "invalid-source",
        DROP_SAME_PORT => "same-port",
        DROP_SPOOFED_MAC => "spoofed-mac",
        DROP_SPOOFED_IP => "spoofed-ip",
        DROP_SPOOFED_ARP => "spoofed-arp",
        DROP_MAC_LIMIT => "mac-limit",
        DROP_NOT_PEER => "not-peer",
        DROP_NAT_REFUSED => "nat-refused",
        DROP_UNSOLICITED => "unsolicited-routed",
        DROP_TAGGED => "tagged",
        DROP_ICMP_FOREIGN => "icmp-foreign",
        DROP_MASQ_SHARE => "masquerade-share",
        DROP_SPOOFED_ND => "spoofed-nd",
        DROP_ROUTER_GUARD => "router-guard",
        _ => "unknown",
    }
}

/// `t` as RFC 3339 UTC with milliseconds.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let d = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        d.year(),
        u8::from(d.month()),
        d.day(),
        d.hour(),
        d.minute(),
        d.second(),
        d.millisecond()
    )
}

/// The wall-clock time of CLOCK_MONOTONIC instant `mono_ns`.
pub(crate) fn wall_time(mono_ns: u64) -> SystemTime {
    SystemTime::now() - Duration::from_nanos(now_ns().saturating_sub(mono_ns))
}

/// The switch's ports by host ifindex, as the state records them now (uplinks too: NAT events
/// happen on them; their "namespace" is the interface).
pub(crate) type Ports = BTreeMap<u32, PortRef>;

pub(crate) fn ports_of(state: &State, switch: &str) -> Ports {
    state.ports(switch).filter(|p| p.ready && p.host_ifindex != 0).map(|p| (p.host_ifindex, PortRef::of(p))).collect()
}

/// Ports of `switch` being made (recorded, not ready yet) whose interface exists already, by
/// its index: a port's first frames (its namespace's announcement as it comes up) reach the
/// datapath before its record is ready, yet the record says whose they are.
fn being_made(state: &State, switch: &str) -> Ports {
    state
        .ports(switch)
        .filter(|p| !p.ready && p.kind.is_switched())
        .filter_map(|p| {
            let index = nix::net::if_::if_nametoindex(p.host_if.as_str()).ok()?;
            Some((index, PortRef::of(p)))
        })
        .collect()
}

/// How long a kernel event of a port being made waits for the port's record to be ready (so
/// the port's `added` comes first); after that it is shown anyway, named from the record.
const HOLD: Duration = Duration::from_secs(2);

/// Kernel events waiting to be shown, in the order they came: the first waits while a port
/// it names is being made, and every later one behind it (events keep their order).
#[derive(Default)]
struct Held(std::collections::VecDeque<(Event, Instant)>);

impl Held {
    /// The interface indexes `e` names.
    fn names(e: &Event) -> impl Iterator<Item = u32> {
        std::iter::once(e.ifindex).chain((e.kind == KIND_MOVE).then_some(e.other_ifindex))
    }

    /// Whether `e` names a port that `ports` lacks: one to look at the records for.
    fn unknown(e: &Event, ports: &Ports) -> bool {
        Self::names(e).any(|i| !ports.contains_key(&i))
    }

    /// The events that may be shown now, in order, with the names to show them with: the
    /// ready ports', and the records' of ports still being made (an event held past `HOLD`).
    fn release(&mut self, ports: &Ports, making: &Ports, now: Instant) -> (Vec<Event>, Ports) {
        let mut out = vec![];
        while let Some((e, since)) = self.0.front() {
            let waits = Self::names(e).any(|i| !ports.contains_key(&i) && making.contains_key(&i));
            if waits && now.duration_since(*since) < HOLD {
                break;
            }
            out.push(*e);
            self.0.pop_front();
        }
        let mut names = making.clone();
        names.extend(ports.iter().map(|(i, p)| (*i, p.clone())));
        (out, names)
    }
}

/// A kernel event, named with `ports`.
fn resolve(e: &Event, ports: &Ports) -> Option<MonitorEvent> {
    let kind = match e.kind {
        KIND_DROP => EventKind::Drop,
        KIND_LEARN => EventKind::Learn,
        KIND_MOVE => EventKind::Move,
        KIND_NAT => EventKind::Nat,
        _ => return None,
    };
    let reason = match kind {
        EventKind::Drop => Some(reason_name(e.reason)),
        EventKind::Nat => Some(match e.reason {
            NAT_FORWARD => "forward",
            NAT_MASQUERADE => "masquerade",
            _ => "unknown",
        }),
        _ => None,
    };
    let port = ports.get(&e.ifindex);
    Some(MonitorEvent {
        time: rfc3339(wall_time(e.ts_ns)),
        kind,
        reason,
        namespace: port.map(|p| p.namespace.clone()),
        interface: port.map_or_else(|| format!("if{}", e.ifindex), |p| p.interface.clone()),
        workload: port.and_then(|p| p.workload.clone()),
        station: None,
        from: (kind == EventKind::Move)
            .then(|| ports.get(&e.other_ifindex).cloned().unwrap_or_else(|| PortRef::unknown(e.other_ifindex))),
        nat: (kind == EventKind::Nat)
            .then(|| NatTarget { addr: Ipv4Addr::from(e.nat_addr.to_ne_bytes()), port: e.nat_port }),
        suppressed: e.suppressed,
        frame: Some(Frame::from(&e.frame)),
    })
}

/// Port events for the difference between `old` and `new`.
fn port_changes(old: &Ports, new: &Ports) -> Vec<MonitorEvent> {
    let event = |p: &PortRef, reason| MonitorEvent {
        time: rfc3339(SystemTime::now()),
        kind: EventKind::Port,
        reason: Some(reason),
        namespace: Some(p.namespace.clone()),
        interface: p.interface.clone(),
        workload: p.workload.clone(),
        from: None,
        station: None,
        nat: None,
        suppressed: 0,
        frame: None,
    };
    let differs = |ports: &Ports, i: &u32, p: &PortRef| !ports.get(i).is_some_and(|q| q.same_port(p));
    let gone = old.iter().filter(|(i, p)| differs(new, i, p)).map(|(_, p)| event(p, "removed"));
    let added = new.iter().filter(|(i, p)| differs(old, i, p)).map(|(_, p)| event(p, "added"));
    gone.chain(added).collect()
}

/// The ports of switch `switch` by the address of their namespace (NAT's connections name
/// the namespace by its address).
fn ports_by_addr(state: &State, switch: &str) -> BTreeMap<Ipv4Addr, PortRef> {
    state.ports(switch).filter_map(|p| Some((p.ip?.addr, PortRef::of(p)))).collect()
}

/// Stations that aged out and connections that expired or were evicted between two looks at
/// the tables, `old` and `new`. Only what was live at the first look counts: a station is
/// aged when it is expired at the second, or gone after its time (a program deleted it when
/// it next looked it up); a station gone before its time went with its port or was evicted,
/// which is not ageing. A connection is expired likewise, and evicted when it is gone before
/// its time (the LRU made room for a newer one).
fn expiries(old: &TablesNow, new: &TablesNow, ports: &Ports, addrs: &BTreeMap<Ipv4Addr, PortRef>) -> Vec<MonitorEvent> {
    let time = rfc3339(SystemTime::now());
    let blank = |kind, reason, port: Option<&PortRef>| MonitorEvent {
        time: time.clone(),
        kind,
        reason,
        namespace: port.map(|p| p.namespace.clone()),
        interface: port.map_or_else(|| "-".to_owned(), |p| p.interface.clone()),
        workload: port.and_then(|p| p.workload.clone()),
        from: None,
        station: None,
        nat: None,
        suppressed: 0,
        frame: None,
    };
    let mut events = vec![];
    for (mac, e) in old.stations.iter().filter(|(_, e)| !e.is_expired(old.now_ns, old.ageing_ns)) {
        let aged = match new.stations.get(mac) {
            Some(now) => now.is_expired(new.now_ns, new.ageing_ns),
            None => e.is_expired(new.now_ns, new.ageing_ns),
        };
        if aged {
            let port = ports.get(&e.ifindex);
            events.push(MonitorEvent { station: Some(Mac(*mac).to_string()), ..blank(EventKind::Age, None, port) });
        }
    }
    for (key, e) in old.connections.iter().filter(|(_, e)| !e.is_expired(old.now_ns)) {
        let reason = match new.connections.get(key) {
            Some(now) if now.is_expired(new.now_ns) => "expired",
            Some(_) => continue,
            None if e.is_expired(new.now_ns) => "expired",
            None => "evicted",
        };
        let to = Ipv4Addr::from(e.addr.to_ne_bytes());
        let ports_known = key.proto == PROTO_TCP || key.proto == PROTO_UDP;
        let frame = Frame {
            len: 0,
            src_mac: None,
            dst_mac: None,
            ethertype: None,
            src_ip: Some(Ipv4Addr::from(key.src.to_ne_bytes())),
            dst_ip: Some(Ipv4Addr::from(key.dst.to_ne_bytes())),
            proto: Some(key.proto),
            src_port: ports_known.then_some(key.sport),
            dst_port: ports_known.then_some(key.dport),
        };
        events.push(MonitorEvent {
            nat: Some(NatTarget { addr: to, port: e.port }),
            frame: Some(frame),
            ..blank(EventKind::Nat, Some(reason), addrs.get(&to))
        });
    }
    events
}

/// Shows the events of switch `switch` that `filter` wants, each through `show`, until `stop`
/// resolves; `started` runs once events are on and being read.
pub async fn follow(
    switch: &str,
    filter: Filter,
    show: impl FnMut(&MonitorEvent) + Send + 'static,
    started: impl FnOnce() + Send + 'static,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    validate_name("switch name", switch)?;
    let check = |state: &State| match &filter.namespace {
        Some(ns) if !state.ports(switch).any(|p| &p.owner == ns) => {
            Err(Error::invalid("namespace", ns.clone(), format!("it has no port on switch '{switch}'")))
        }
        _ => Ok(()),
    };
    let turn_on = async |dp: &(dyn Datapath + 'static), ()| dp.require_events()?.set_events(true).await;
    let (reader, state) = Reader::join(switch, Stream::Events, check, turn_on).await?;

    let (tx, rx) = mpsc::unbounded_channel();
    // The datapath rate-limits its events, so the queue stays short.
    let sink = Box::new(move |e: Event| {
        let _ = tx.send(e);
    });
    let stop = readers::or_removed(switch, stop);
    let events = reader.dp.require_events()?;
    let streamed = events.stream(sink, Box::new(started), Box::pin(stop));
    // Ageing and expiry come from looks at the tables, made only if the filter wants them.
    let wants_tables =
        filter.kinds.is_empty() || filter.kinds.iter().any(|k| matches!(k, EventKind::Age | EventKind::Nat));
    let tables = if wants_tables { Some(events.tables_now().await?) } else { None };
    let printer = Printer {
        switch: switch.to_owned(),
        filter,
        show,
        ports: ports_of(&state, switch),
        making: Ports::new(),
        held: Held::default(),
        left_out: 0,
        tables,
    };
    let (streamed, ()) = tokio::join!(streamed, printer.run(rx, events));
    reader.leave().await?;
    streamed
}

/// What `follow` shows, and what it names the kernel's events with.
struct Printer<S> {
    switch: String,
    filter: Filter,
    show: S,
    /// The ready ports, as the last look at the records found them.
    ports: Ports,
    /// Ports being made (not ready yet) whose interfaces exist.
    making: Ports,
    /// Kernel events waiting for a port being made to be ready.
    held: Held,
    /// What the datapath left out of events the filter did not want: carried to the next
    /// event shown, so a filter loses no count.
    left_out: u32,
    /// The last look at the tables (`None`: the filter wants no ageing or expiry).
    tables: Option<TablesNow>,
}

impl<S: FnMut(&MonitorEvent)> Printer<S> {
    /// Shows what comes until the reader stops (`rx` closes).
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Event>, events: &dyn DatapathEvents) {
        let mut tick = tokio::time::interval(PORT_POLL);
        let mut table_tick = tokio::time::interval(TABLE_POLL);
        loop {
            tokio::select! {
                e = rx.recv() => match e {
                    Some(e) => self.kernel_event(e).await,
                    // The reader stopped: everything it read is shown, held or not.
                    None => {
                        self.release(Instant::now() + HOLD);
                        return;
                    }
                },
                _ = tick.tick() => {
                    self.look().await;
                    self.release(Instant::now());
                }
                _ = table_tick.tick(), if self.tables.is_some() => self.look_at_tables(events).await,
            }
        }
    }

    /// Shows `e` once the ports it names are known.
    async fn kernel_event(&mut self, e: Event) {
        // A port newer than the last look: its first frames may come before the next tick.
        // Looking now names them, after their port's event; a port whose record is not ready
        // yet (its namespace announcing itself as it comes up) holds them until it is.
        if self.held.0.is_empty() && Held::unknown(&e, &self.ports) {
            self.look().await;
        }
        let now = Instant::now();
        self.held.0.push_back((e, now));
        self.release(now);
    }

    /// Port events for what changed in the records since the last look.
    async fn look(&mut self) {
        let of = self.switch.clone();
        // A state being rewritten is read again at the next look.
        let Ok((state, made)) = blocking(move || {
            let state = Store::peek(host::state_dir())?;
            let made = being_made(&state, &of);
            Ok((state, made))
        })
        .await
        else {
            return;
        };
        let now = ports_of(&state, &self.switch);
        for v in port_changes(&self.ports, &now) {
            self.show_if_wanted(&v);
        }
        self.ports = now;
        self.making = made;
    }

    /// Shows the held events that may go now.
    fn release(&mut self, now: Instant) {
        let (events, names) = self.held.release(&self.ports, &self.making, now);
        for e in &events {
            let Some(mut v) = resolve(e, &names) else { continue };
            // What the datapath left out rides on whichever event got through next.
            v.suppressed += std::mem::take(&mut self.left_out);
            if self.filter.wants(&v) {
                (self.show)(&v);
            } else {
                self.left_out = v.suppressed;
            }
        }
    }

    /// Ageing and expiry events for what changed in the tables since the last look.
    async fn look_at_tables(&mut self, events: &dyn DatapathEvents) {
        // A look that fails (a switch going down) is made again at the next tick.
        let (Ok(new), Ok(state)) = (events.tables_now().await, blocking(|| Store::peek(host::state_dir())).await)
        else {
            return;
        };
        let old = self.tables.replace(new).expect("looked at only with tables");
        let addrs = ports_by_addr(&state, &self.switch);
        for v in expiries(&old, self.tables.as_ref().expect("just set"), &self.ports, &addrs) {
            self.show_if_wanted(&v);
        }
    }

    fn show_if_wanted(&mut self, v: &MonitorEvent) {
        if self.filter.wants(v) {
            (self.show)(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(ns: &str) -> PortRef {
        PortRef { namespace: ns.into(), interface: format!("s{ns}"), workload: None }
    }

    #[test]
    fn kernel_events_are_named_and_summarised() {
        let ports: Ports = [(7, port("red")), (9, port("blue"))].into();
        let frame = FrameSummary {
            len: 60,
            ethertype: 0x0800,
            proto: 17,
            flags: FRAME_F_IPV4 | FRAME_F_PORTS,
            dst: [0xff; 6],
            src: [2, 0, 0, 0, 0, 1],
            saddr: u32::from_ne_bytes([10, 0, 0, 9]),
            daddr: u32::from_ne_bytes([10, 0, 0, 2]),
            sport: 5000,
            dport: 53,
        };
        let e = Event { kind: KIND_MOVE, ifindex: 7, other_ifindex: 9, frame, ts_ns: now_ns(), ..Default::default() };
        let v = resolve(&e, &ports).unwrap();
        assert_eq!((v.kind, v.namespace.as_deref(), v.from), (EventKind::Move, Some("red"), Some(port("blue"))));
        let f = v.frame.unwrap();
        assert_eq!(f.src_ip, Some(Ipv4Addr::new(10, 0, 0, 9)));
        assert_eq!((f.src_port, f.dst_port, f.ethertype.as_deref()), (Some(5000), Some(53), Some("0x0800")));
        let drop = Event { kind: KIND_DROP, reason: DROP_SPOOFED_ARP, ifindex: 3, ..e };
        let v = resolve(&drop, &ports).unwrap();
        assert_eq!((v.reason, v.namespace, v.interface.as_str()), (Some("spoofed-arp"), None, "if3"));
        let runt = resolve(&Event { frame: FrameSummary { len: 9, ..Default::default() }, ..drop }, &ports).unwrap();
        assert!(runt.frame.unwrap().src_mac.is_none());
    }

    #[test]
    fn events_of_a_port_being_made_wait_for_its_record_in_order() {
        let ready: Ports = [(7, port("red"))].into();
        let making: Ports = [(9, port("blue"))].into();
        let at = |ifindex, kind| Event { kind, ifindex, other_ifindex: 7, ..Default::default() };
        let t0 = Instant::now();
        let mut held = Held::default();
        // blue's announcement, then a frame of red: both wait (red's keeps its place).
        held.0.push_back((at(9, KIND_LEARN), t0));
        held.0.push_back((at(7, KIND_LEARN), t0));
        let (out, _) = held.release(&ready, &making, t0);
        assert!(out.is_empty() && held.0.len() == 2);
        // blue is ready: both go, in order, blue's named with its namespace.
        let both: Ports = [(7, port("red")), (9, port("blue"))].into();
        let (out, names) = held.release(&both, &Ports::new(), t0);
        assert_eq!(out.iter().map(|e| e.ifindex).collect::<Vec<_>>(), [9, 7]);
        assert_eq!(resolve(&out[0], &names).unwrap().namespace.as_deref(), Some("blue"));
        // A record that never gets ready: shown after HOLD, still named from the record.
        held.0.push_back((at(9, KIND_MOVE), t0));
        assert!(held.release(&ready, &making, t0 + HOLD / 2).0.is_empty());
        let (out, names) = held.release(&ready, &making, t0 + HOLD);
        let v = resolve(&out[0], &names).unwrap();
        assert_eq!((v.namespace.as_deref(), v.from.map(|f| f.namespace)), (Some("blue"), Some("red".to_owned())));
        // An interface no record knows is not waited for.
        held.0.push_back((at(11, KIND_LEARN), t0));
        assert_eq!(held.release(&ready, &making, t0).0.len(), 1);
        assert!(Held::unknown(&at(11, KIND_LEARN), &ready) && !Held::unknown(&at(7, KIND_MOVE), &ready));
    }

    #[test]
    fn filters_and_port_changes() {
        let before: Ports = [(7, port("red"))].into();
        let after: Ports = [(9, port("blue"))].into();
        let changes = port_changes(&before, &after);
        let seen: Vec<_> = changes.iter().map(|c| (c.reason.unwrap(), c.namespace.clone().unwrap())).collect();
        assert_eq!(seen, vec![("removed", "red".to_owned()), ("added", "blue".to_owned())]);
        let only_blue = Filter { kinds: vec![EventKind::Port], namespace: Some("blue".into()) };
        assert_eq!(changes.iter().filter(|c| only_blue.wants(c)).count(), 1);
        let drops = Filter { kinds: vec![EventKind::Drop], namespace: None };
        assert!(!changes.iter().any(|c| drops.wants(c)));
        assert!(rfc3339(SystemTime::UNIX_EPOCH + Duration::from_millis(1_500)) == "1970-01-01T00:00:01.500Z");
    }

    /// A port's workload names its events (the port's and a move's), as `switch ports` shows
    /// it; labelling a port later neither adds nor removes it.
    #[test]
    fn the_workload_names_the_events_of_its_port() {
        let web = PortRef { workload: Some("default/web-0".into()), ..port("web") };
        let labelled: Ports = [(7, web.clone()), (9, port("blue"))].into();
        let move_ = Event { kind: KIND_MOVE, ifindex: 9, other_ifindex: 7, ..Default::default() };
        let v = resolve(&move_, &labelled).unwrap();
        assert_eq!((v.workload, v.from.as_ref()), (None, Some(&web)));
        assert_eq!(web.to_string(), "web/sweb (default/web-0)");
        let drop = Event { kind: KIND_DROP, ifindex: 7, ..Default::default() };
        assert_eq!(resolve(&drop, &labelled).unwrap().workload.as_deref(), Some("default/web-0"));
        let unlabelled: Ports = [(7, port("web")), (9, port("blue"))].into();
        assert!(port_changes(&unlabelled, &labelled).is_empty(), "a label is no port change");
        let added = port_changes(&Ports::new(), &labelled);
        assert_eq!(added[0].workload.as_deref(), Some("default/web-0"));
    }
}
