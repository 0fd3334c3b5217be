//! `switch metrics`: the numbers of `switch stats`, `switch tables` and `switch forward list`
//! for every switch on the host, in the Prometheus text exposition format.
//!
//! The numbers come from the same controller functions as those commands (`stats::read`,
//! `tables::read`, `forward::read`), so they agree by construction. Unlike those commands, a
//! scrape never takes the state lock: it reads the state file as it is (every save is an
//! atomic rename, so it sees one whole state) and walks the maps (up to 65 536 system calls
//! for the connection table) from that copy, so no number of scrapes can hold back `switch ns
//! add` or a CNI ADD. `switch metrics serve` runs at most [`MAX_SCRAPES`] at once. Every
//! scrape builds a fresh registry: a switch that went away is simply absent from the next
//! one.
use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, prometheus_text},
    metrics::{MetricType, counter::Counter, family::Family, gauge::Gauge},
    registry::{Metric, Registry, Unit},
};
use serde::Serialize;

use super::{
    forward::{self, ForwardRow},
    stats::{self, PortRow, StatsReport},
    tables::{self, TableRow},
};
use crate::{
    error::{Error, Result},
    state::{State, Store},
    sys::host,
};

/// Most scrapes `switch metrics serve` runs at once; more are answered 503 at once (each
/// walks every switch's tables: a flood of them would take the CPUs the switches need).
pub const MAX_SCRAPES: usize = 4;

/// The `Content-Type` of what [`encode`] writes.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// What one switch reports.
#[derive(Clone, Debug, Serialize)]
pub struct SwitchNumbers {
    /// Switch name.
    pub switch: String,
    /// Its datapath (`tc`, `xdp`, `userspace`, `bridge`).
    pub datapath: String,
    /// `switch stats`.
    pub stats: StatsReport,
    /// `switch tables` (`None`: the datapath keeps no table counters).
    pub tables: Option<Vec<TableRow>>,
    /// `switch forward list` of this switch.
    pub forwards: Vec<ForwardRow>,
}

/// One collection of every switch's numbers.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Collected {
    /// Switches that could be read, by name.
    pub switches: Vec<SwitchNumbers>,
    /// Switches still recorded that could not be read, with why (one line each).
    pub errors: Vec<(String, String)>,
}

/// Reads every ready switch's numbers. A switch removed while it was being read (its maps
/// gone under the reader) is left out, not an error.
pub async fn collect() -> Result<Collected> {
    let state = snapshot().await?;
    super::stall_point("metrics-scrape").await;
    let mut out = Collected::default();
    let mut failed = vec![];
    for (name, sw) in state.switches.iter().filter(|(_, s)| s.ready) {
        match read_switch(&state, name, sw.datapath.to_string()).await {
            Ok(n) => out.switches.push(n),
            Err(e) => failed.push((name.clone(), e)),
        }
    }
    if !failed.is_empty() {
        let now = snapshot().await?;
        out.errors = failed
            .into_iter()
            .filter(|(name, _)| now.switches.get(name).is_some_and(|s| s.ready))
            .map(|(name, e)| (name, e.to_string()))
            .collect();
    }
    Ok(out)
}

/// A copy of the state, read without the lock (see the module's doc).
async fn snapshot() -> Result<State> {
    crate::sys::blocking(|| Store::peek(host::state_dir())).await
}

async fn read_switch(state: &State, name: &str, datapath: String) -> Result<SwitchNumbers> {
    let stats = stats::read(state, name).await?;
    let has_tables = super::datapath_of(state, name)?.tables().is_some();
    let tables = if has_tables { Some(tables::read(state, name).await?) } else { None };
    let forwards = forward::read(state, Some(name)).await?;
    Ok(SwitchNumbers { switch: name.to_owned(), datapath, stats, tables, forwards })
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SwitchLabels {
    switch: String,
    datapath: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PortLabels {
    switch: String,
    datapath: String,
    namespace: String,
    port: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    #[prometheus(flatten)]
    port: PortLabels,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabels {
    switch: String,
    datapath: String,
    table: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ForwardLabels {
    switch: String,
    datapath: String,
    namespace: String,
    proto: String,
    host_ports: String,
    to: String,
}

const PER_PORT: &str = "per port, summed over CPUs, as in `switch stats`";
const TABLES: &str = "table: fdb (MAC table), conntrack (connections), unreplied (connections not answered yet)";
const FLOODED: &str = "Received frames flooded to every other port (not kept by the bridge datapath)";
const DROPPED: &str = "Received frames dropped, by reason: malformed, spoofed_mac, spoofed_ip, spoofed_arp, tagged, \
                       spoofed_nd, router_guard (port security), mac_limit (learning limit), other (invalid source MAC, back to its own port); \
                       the sum is DROPPED of `switch stats`";
const TX_ERRORS: &str = "Copies or redirects of frames that could not be sent";
const NAT_REFUSED: &str = "Outbound connections refused by NAT (no masquerade port free, or no room in the connection \
                           table); their packets were dropped";
const UNSOLICITED: &str = "Packets routed towards the segment that nothing asked for, dropped";
const UNREPLIED_EVICTED: &str = "Connections not answered yet pushed out of their budget by newer ones";
const ICMP_REFUSED: &str = "ICMP errors refused at an uplink: not their connection's (to or from another namespace), \
                            or quoting a private address with no translation";
const MASQUERADE_SHARE: &str = "New outbound connections refused because their namespace held its share of the \
                                masquerade ports towards that remote";
const TABLE_EXPIRED: &str = "Entries past their time, still holding room until reused";
const TABLE_REMOVED: &str = "Entries deleted: aged out, port gone, flushed, removed by hand";
const TABLE_EVICTED: &str = "Entries the kernel evicted because the table was full";
const TABLE_REFUSED: &str = "Entries the table could not take (their packets were dropped)";
const FORWARD_PACKETS: &str = "Packets translated by a port forward, as in `switch forward list`";
const FORWARD_ACTIVE: &str = "Connections of a port forward in the connection table now";

type Counters<L> = Family<L, Counter>;
type Gauges<L> = Family<L, Gauge>;

/// The families, registered in the order they are printed.
#[derive(Default)]
struct Families {
    rx_packets: Counters<PortLabels>,
    rx_bytes: Counters<PortLabels>,
    tx_packets: Counters<PortLabels>,
    tx_bytes: Counters<PortLabels>,
    flooded: Counters<PortLabels>,
    dropped: Counters<DropLabels>,
    tx_errors: Counters<PortLabels>,
    nat_refused: Counters<SwitchLabels>,
    unsolicited_routed: Counters<SwitchLabels>,
    unreplied_evicted: Counters<SwitchLabels>,
    icmp_refused: Counters<SwitchLabels>,
    masquerade_share: Counters<SwitchLabels>,
    table_entries: Gauges<TableLabels>,
    table_expired: Gauges<TableLabels>,
    table_capacity: Gauges<TableLabels>,
    table_added: Counters<TableLabels>,
    table_removed: Counters<TableLabels>,
    table_evicted: Counters<TableLabels>,
    table_refused: Counters<TableLabels>,
    fwd_packets: Counters<ForwardLabels>,
    fwd_bytes: Counters<ForwardLabels>,
    fwd_connections: Counters<ForwardLabels>,
    fwd_active: Gauges<ForwardLabels>,
}

impl Families {
    /// Registers every family, in the order they are printed: one row each, its name, unit
    /// (none: a plain count) and help.
    fn register(&self, r: &mut Registry) {
        let packets = || Some(Unit::Other("packets".into()));
        let bytes = || Some(Unit::Bytes);
        let connections = || Some(Unit::Other("connections".into()));
        let entries = || Some(Unit::Other("entries".into()));
        let rx = format!("Frames received from the namespace, {PER_PORT}");
        let tx = format!("Frames sent into the namespace, {PER_PORT}");
        let live = format!("Live entries; {TABLES}");
        let rows: [(&str, Option<Unit>, &str, AnyFamily); 23] = [
            ("switch_port_rx", packets(), &rx, any(&self.rx_packets)),
            ("switch_port_rx", bytes(), "Bytes received from the namespace", any(&self.rx_bytes)),
            ("switch_port_tx", packets(), &tx, any(&self.tx_packets)),
            ("switch_port_tx", bytes(), "Bytes sent into the namespace", any(&self.tx_bytes)),
            ("switch_port_flooded", packets(), FLOODED, any(&self.flooded)),
            ("switch_port_dropped", packets(), DROPPED, any(&self.dropped)),
            ("switch_port_tx_errors", None, TX_ERRORS, any(&self.tx_errors)),
            ("switch_nat_refused", connections(), NAT_REFUSED, any(&self.nat_refused)),
            ("switch_unsolicited_routed", packets(), UNSOLICITED, any(&self.unsolicited_routed)),
            ("switch_unreplied_evicted", connections(), UNREPLIED_EVICTED, any(&self.unreplied_evicted)),
            ("switch_icmp_refused", packets(), ICMP_REFUSED, any(&self.icmp_refused)),
            ("switch_masquerade_share_refused", connections(), MASQUERADE_SHARE, any(&self.masquerade_share)),
            ("switch_table", entries(), &live, any(&self.table_entries)),
            ("switch_table_expired", entries(), TABLE_EXPIRED, any(&self.table_expired)),
            ("switch_table_capacity", entries(), "Most entries the table holds", any(&self.table_capacity)),
            ("switch_table_added", entries(), "Entries ever added", any(&self.table_added)),
            ("switch_table_removed", entries(), TABLE_REMOVED, any(&self.table_removed)),
            ("switch_table_evicted", entries(), TABLE_EVICTED, any(&self.table_evicted)),
            ("switch_table_refused", entries(), TABLE_REFUSED, any(&self.table_refused)),
            ("switch_forward", packets(), FORWARD_PACKETS, any(&self.fwd_packets)),
            ("switch_forward", bytes(), "Bytes translated by a port forward", any(&self.fwd_bytes)),
            ("switch_forward", connections(), "Connections made through a port forward", any(&self.fwd_connections)),
            ("switch_forward_active", connections(), FORWARD_ACTIVE, any(&self.fwd_active)),
        ];
        for (name, unit, help, family) in rows {
            match unit {
                Some(unit) => r.register_with_unit(name, help, unit, family),
                None => r.register(name, help, family),
            }
        }
    }

    fn add_switch(&self, n: &SwitchNumbers) {
        let sw = SwitchLabels { switch: n.switch.clone(), datapath: n.datapath.clone() };
        for p in &n.stats.ports {
            self.add_port(&sw, p);
        }
        if let Some(d) = &n.stats.switch {
            self.nat_refused.get_or_create(&sw).inc_by(d.nat_refused);
            self.unsolicited_routed.get_or_create(&sw).inc_by(d.unsolicited_routed);
            self.unreplied_evicted.get_or_create(&sw).inc_by(d.unreplied_evicted);
            self.icmp_refused.get_or_create(&sw).inc_by(d.icmp_refused);
            self.masquerade_share.get_or_create(&sw).inc_by(d.masquerade_share);
        }
        for t in n.tables.iter().flatten() {
            let l = TableLabels { switch: sw.switch.clone(), datapath: sw.datapath.clone(), table: t.table };
            self.table_entries.get_or_create(&l).set(gauge(t.entries));
            self.table_expired.get_or_create(&l).set(gauge(t.expired));
            self.table_capacity.get_or_create(&l).set(gauge(t.capacity));
            self.table_added.get_or_create(&l).inc_by(t.added);
            self.table_removed.get_or_create(&l).inc_by(t.removed);
            self.table_evicted.get_or_create(&l).inc_by(t.evicted);
            self.table_refused.get_or_create(&l).inc_by(t.refused);
        }
        for f in &n.forwards {
            let l = ForwardLabels {
                switch: sw.switch.clone(),
                datapath: sw.datapath.clone(),
                namespace: f.namespace.clone(),
                proto: f.proto.to_string(),
                host_ports: f.host_ports.clone(),
                to: f.to.clone(),
            };
            self.fwd_packets.get_or_create(&l).inc_by(f.packets);
            self.fwd_bytes.get_or_create(&l).inc_by(f.bytes);
            self.fwd_connections.get_or_create(&l).inc_by(f.connections);
            self.fwd_active.get_or_create(&l).set(gauge(f.active));
        }
    }

    fn add_port(&self, sw: &SwitchLabels, p: &PortRow) {
        let l = PortLabels {
            switch: sw.switch.clone(),
            datapath: sw.datapath.clone(),
            namespace: p.namespace.clone(),
            port: p.interface.clone(),
        };
        self.rx_packets.get_or_create(&l).inc_by(p.rx_packets);
        self.rx_bytes.get_or_create(&l).inc_by(p.rx_bytes);
        self.tx_packets.get_or_create(&l).inc_by(p.tx_packets);
        self.tx_bytes.get_or_create(&l).inc_by(p.tx_bytes);
        // The bridge knows no flooding or drop reasons: no series rather than a false zero.
        if let Some(v) = p.flooded {
            self.flooded.get_or_create(&l).inc_by(v);
        }
        if let Some(v) = p.tx_errors {
            self.tx_errors.get_or_create(&l).inc_by(v);
        }
        for (reason, v) in drop_reasons(p) {
            self.dropped.get_or_create(&DropLabels { port: l.clone(), reason }).inc_by(v);
        }
    }
}

/// A family of any labels and type, as the rows of `Families::register` hold it.
#[derive(Debug)]
struct AnyFamily(Box<dyn Metric>);

fn any(family: &(impl Metric + Clone)) -> AnyFamily {
    AnyFamily(Box::new(family.clone()))
}

impl EncodeMetric for AnyFamily {
    fn encode(&self, encoder: MetricEncoder) -> std::fmt::Result {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }

    // A family without series is left out of the text.
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A port's drops split so that the reasons add up to its DROPPED: what no named reason
/// counts (an invalid source MAC, a frame back to its own port) is `other`.
fn drop_reasons(p: &PortRow) -> Vec<(&'static str, u64)> {
    let Some(total) = p.dropped else { return vec![] };
    let named = [
        ("malformed", p.malformed),
        ("spoofed_mac", p.spoofed_mac),
        ("spoofed_ip", p.spoofed_ip),
        ("spoofed_arp", p.spoofed_arp),
        ("mac_limit", p.mac_limit),
        ("tagged", p.tagged),
        ("spoofed_nd", p.spoofed_nd),
        ("router_guard", p.router_guard),
    ];
    let mut out: Vec<(&'static str, u64)> = named.iter().map(|&(r, v)| (r, v.unwrap_or(0))).collect();
    let sum: u64 = out.iter().map(|(_, v)| v).sum();
    out.push(("other", total.saturating_sub(sum)));
    out
}

/// Counts are far below `i64::MAX`; saturate rather than wrap if one ever is not.
fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// `c` in the Prometheus text exposition format (version 0.0.4), with HELP and TYPE lines. A
/// family without series is left out (no switch at all: empty).
pub fn encode(c: &Collected) -> Result<String> {
    let families = Families::default();
    for n in &c.switches {
        families.add_switch(n);
    }
    let mut registry = Registry::default();
    families.register(&mut registry);
    let mut out = String::new();
    prometheus_text::encode(&mut out, &registry).map_err(|_| Error::Command("encoding the metrics failed".into()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{datapath::SwitchDrops, state::Proto};

    fn port(ns: &str, dropped: Option<u64>) -> PortRow {
        PortRow {
            namespace: ns.into(),
            interface: format!("s{ns}-1"),
            workload: None,
            rx_packets: 10,
            rx_bytes: 1000,
            tx_packets: 9,
            tx_bytes: 900,
            flooded: dropped.map(|_| 2),
            dropped,
            malformed: dropped.map(|_| 1),
            tx_errors: dropped.map(|_| 0),
            spoofed_mac: dropped.map(|_| 2),
            spoofed_ip: dropped.map(|_| 0),
            spoofed_arp: dropped.map(|_| 0),
            mac_limit: dropped.map(|_| 0),
            tagged: dropped.map(|_| 0),
            spoofed_nd: dropped.map(|_| 0),
            router_guard: dropped.map(|_| 0),
        }
    }

    fn numbers() -> Collected {
        let tc = SwitchNumbers {
            switch: "web".into(),
            datapath: "tc".into(),
            stats: StatsReport {
                ports: vec![port("red", Some(5))],
                switch: Some(SwitchDrops {
                    nat_refused: 3,
                    unsolicited_routed: 4,
                    unreplied_evicted: 0,
                    icmp_refused: 0,
                    masquerade_share: 6,
                }),
            },
            tables: Some(vec![TableRow {
                table: "fdb",
                entries: 2,
                capacity: 16_384,
                added: 7,
                expired: 1,
                removed: 4,
                evicted: 0,
                refused: 0,
            }]),
            forwards: vec![ForwardRow {
                switch: "web".into(),
                proto: Proto::Tcp,
                host_ports: "8080".into(),
                namespace: "red".into(),
                workload: None,
                to: "10.0.0.1:80".into(),
                packets: 12,
                bytes: 3456,
                connections: 2,
                active: 1,
            }],
        };
        let bridge = SwitchNumbers {
            switch: "br".into(),
            datapath: "bridge".into(),
            stats: StatsReport { ports: vec![port("blue", None)], switch: None },
            tables: None,
            forwards: vec![],
        };
        Collected { switches: vec![tc, bridge], errors: vec![] }
    }

    #[test]
    fn names_labels_and_values() {
        let text = encode(&numbers()).unwrap();
        for line in [
            "# TYPE switch_port_rx_packets_total counter",
            "# TYPE switch_table_entries gauge",
            r#"switch_port_rx_bytes_total{switch="web",datapath="tc",namespace="red",port="sred-1"} 1000"#,
            r#"switch_port_dropped_packets_total{switch="web",datapath="tc",namespace="red",port="sred-1",reason="other"} 2"#,
            r#"switch_nat_refused_connections_total{switch="web",datapath="tc"} 3"#,
            r#"switch_masquerade_share_refused_connections_total{switch="web",datapath="tc"} 6"#,
            r#"switch_table_capacity_entries{switch="web",datapath="tc",table="fdb"} 16384"#,
            r#"switch_forward_bytes_total{switch="web",datapath="tc",namespace="red",proto="tcp",host_ports="8080",to="10.0.0.1:80"} 3456"#,
            r#"switch_port_tx_packets_total{switch="br",datapath="bridge",namespace="blue",port="sblue-1"} 9"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        // The bridge keeps no drop reasons or flood counts: no made-up zeros.
        assert!(!text.lines().any(|l| l.starts_with("switch_port_flooded") && l.contains("bridge")), "{text}");
    }

    #[test]
    fn reasons_add_up_to_the_drops() {
        let p = port("red", Some(5));
        let reasons = drop_reasons(&p);
        assert_eq!(reasons.iter().map(|(_, v)| v).sum::<u64>(), 5);
        // Counters read a moment apart never make `other` negative.
        assert_eq!(drop_reasons(&port("red", Some(1))).last(), Some(&("other", 0)));
        assert!(drop_reasons(&port("blue", None)).is_empty());
    }

    #[test]
    fn no_switch_is_no_series() {
        assert_eq!(encode(&Collected::default()).unwrap(), "");
    }
}
