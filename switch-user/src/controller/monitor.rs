//! `switch monitor`: the datapath's events (drops with their reason, new stations, moves),
//! and ports added and removed, live.
//!
//! Events cost the datapath only while someone listens, so they are on only then: each
//! monitor records itself (pid and start time) in the switch record and turns events on under
//! the state lock; on the way out it takes itself off and turns them off if it was the last.
//! One killed on the way is noticed by the next mutating command of the switch
//! (`intent::converge`), which turns events off once no recorded monitor lives.
//!
//! Port events need no kernel: the monitor watches the switch's port records (the state file,
//! read without the lock every `PORT_POLL`), which also tells it which namespace each
//! interface index in a kernel event belongs to.
use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    time::{Duration, SystemTime},
};

use serde::Serialize;
use switch_common::events::{
    DROP_INVALID_SOURCE, DROP_MAC_LIMIT, DROP_MALFORMED, DROP_NOT_PEER, DROP_SAME_PORT, DROP_SPOOFED_ARP,
    DROP_SPOOFED_IP, DROP_SPOOFED_MAC, Event, FRAME_F_IPV4, FRAME_F_PORTS, FrameSummary, KIND_DROP, KIND_LEARN,
    KIND_MOVE, KIND_NAT, NAT_FORWARD, NAT_MASQUERADE,
};
use tokio::sync::mpsc;

use super::{blocking, datapath_of, intent, lock};
use crate::{
    datapath::ebpf::maps::now_ns,
    error::{Error, Result},
    names::{Mac, validate_name},
    state::{State, Store},
    sys::{host, process::ProcessId},
};

/// How often the port records are read for port events.
const PORT_POLL: Duration = Duration::from_millis(250);

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
    /// A connection created by NAT: to a forwarded port, or masqueraded.
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
}

/// One event as shown to users.
#[derive(Clone, Debug, Serialize)]
pub struct MonitorEvent {
    /// When it happened (UTC, RFC 3339 with milliseconds).
    pub time: String,
    /// What happened.
    pub kind: EventKind,
    /// Why a frame was dropped (`malformed`, `invalid-source`, `same-port`, `spoofed-mac`,
    /// `spoofed-ip`, `spoofed-arp`, `mac-limit`); `forward` or `masquerade` for a NAT
    /// connection; `added` or `removed` for a port.
    pub reason: Option<&'static str>,
    /// Namespace of the port (None: an interface the switch no longer knows).
    pub namespace: Option<String>,
    /// The port's host-side interface (`if<N>` if the switch no longer knows it).
    pub interface: String,
    /// Moves: the port the station left.
    pub from: Option<PortRef>,
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
fn reason_name(reason: u16) -> &'static str {
    match reason {
        DROP_MALFORMED => "malformed",
        DROP_INVALID_SOURCE => "invalid-source",
        DROP_SAME_PORT => "same-port",
        DROP_SPOOFED_MAC => "spoofed-mac",
        DROP_SPOOFED_IP => "spoofed-ip",
        DROP_SPOOFED_ARP => "spoofed-arp",
        DROP_MAC_LIMIT => "mac-limit",
        DROP_NOT_PEER => "not-peer",
        _ => "unknown",
    }
}

/// `t` as RFC 3339 UTC with milliseconds.
fn rfc3339(t: SystemTime) -> String {
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
fn wall_time(mono_ns: u64) -> SystemTime {
    SystemTime::now() - Duration::from_nanos(now_ns().saturating_sub(mono_ns))
}

/// The switch's ports by host ifindex, as the state records them now (uplinks too: NAT events
/// happen on them; their "namespace" is the interface).
type Ports = BTreeMap<u32, PortRef>;

fn ports_of(state: &State, switch: &str) -> Ports {
    state
        .ports(switch)
        .filter(|p| p.ready && p.host_ifindex != 0)
        .map(|p| (p.host_ifindex, PortRef { namespace: p.owner.clone(), interface: p.host_if.clone() }))
        .collect()
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
        from: (kind == EventKind::Move).then(|| {
            ports
                .get(&e.other_ifindex)
                .cloned()
                .unwrap_or_else(|| PortRef { namespace: "?".into(), interface: format!("if{}", e.other_ifindex) })
        }),
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
        from: None,
        nat: None,
        suppressed: 0,
        frame: None,
    };
    let gone = old.iter().filter(|(i, p)| new.get(i) != Some(p)).map(|(_, p)| event(p, "removed"));
    let added = new.iter().filter(|(i, p)| old.get(i) != Some(p)).map(|(_, p)| event(p, "added"));
    gone.chain(added).collect()
}

/// Shows the events of switch `switch` that `filter` wants, each through `show`, until `stop`
/// resolves; `started` runs once events are on and being read.
pub async fn follow(
    switch: &str,
    filter: Filter,
    mut show: impl FnMut(&MonitorEvent) + Send + 'static,
    started: impl FnOnce() + Send + 'static,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    validate_name("switch name", switch)?;
    let me = ProcessId::current();
    let (dp, mut ports) = {
        // The lock only while the record and the flag change: monitoring must not hold back
        // other commands.
        let store = lock().await?;
        let mut state = store.load()?;
        let dp = datapath_of(&state, switch)?;
        dp.require_events()?;
        if let Some(ns) = &filter.namespace
            && !state.ports(switch).any(|p| &p.owner == ns)
        {
            return Err(Error::invalid("namespace", ns.clone(), format!("it has no port on switch '{switch}'")));
        }
        intent::converge(&store, &mut state, switch).await?;
        state.switches.get_mut(switch).expect("looked up above").monitors.push(me);
        store.save(&state)?;
        dp.require_events()?.set_events(true).await?;
        let ports = ports_of(&state, switch);
        (dp, ports)
    };

    let (tx, mut rx) = mpsc::unbounded_channel();
    // The datapath rate-limits its events, so the queue stays short.
    let sink = Box::new(move |e: Event| {
        let _ = tx.send(e);
    });
    let reader = dp.require_events()?.stream(sink, Box::new(started), Box::pin(stop));
    let name = switch.to_owned();
    let printer = async move {
        let mut tick = tokio::time::interval(PORT_POLL);
        let mut left_out = 0u32;
        // Port events for what changed in the records since the last look.
        let look = async |ports: &mut Ports, show: &mut dyn FnMut(&MonitorEvent)| {
            // A state being rewritten is read again at the next look.
            let Ok(state) = blocking(|| Store::peek(host::state_dir())).await else { return };
            let now = ports_of(&state, &name);
            for v in port_changes(ports, &now).iter().filter(|v| filter.wants(v)) {
                show(v);
            }
            *ports = now;
        };
        loop {
            tokio::select! {
                e = rx.recv() => match e {
                    Some(e) => {
                        // A port newer than the last look: its first frames may come before
                        // the next tick. Looking now names them, after their port's event.
                        let moved_from_unknown = e.kind == KIND_MOVE && !ports.contains_key(&e.other_ifindex);
                        if !ports.contains_key(&e.ifindex) || moved_from_unknown {
                            look(&mut ports, &mut show).await;
                        }
                        let Some(mut v) = resolve(&e, &ports) else { continue };
                        // What the datapath left out rides on whichever event got through
                        // next: carried to the next event shown, so a filter loses no count.
                        v.suppressed += std::mem::take(&mut left_out);
                        if filter.wants(&v) {
                            show(&v);
                        } else {
                            left_out = v.suppressed;
                        }
                    }
                    // The reader stopped (and everything it read is shown).
                    None => return,
                },
                _ = tick.tick() => look(&mut ports, &mut show).await,
            }
        }
    };
    let (streamed, ()) = tokio::join!(reader, printer);

    let store = lock().await?;
    let mut state = store.load()?;
    if let Some(sw) = state.switches.get_mut(switch) {
        sw.monitors.retain(|p| *p != me);
        if !sw.monitors.iter().any(|p| p.is_alive()) {
            dp.require_events()?.set_events(false).await?;
        }
        store.save(&state)?;
    }
    streamed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(ns: &str) -> PortRef {
        PortRef { namespace: ns.into(), interface: format!("s{ns}") }
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
}
