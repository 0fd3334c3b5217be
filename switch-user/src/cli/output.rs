//! The one place output is printed: a command's [`Reply`] as text or as `--json`, and the
//! text tables the replies are made of.
use std::fmt::Write as _;

use serde::Serialize;
use switch::{
    controller::{
        capture::{Captured, verdict_text},
        fdb::FdbRow,
        forward::ForwardRow,
        monitor::{EventKind, Frame, MonitorEvent, port_text},
        ns::NsInfo,
        port::PortRow as AnyPortRow,
        stats::{PortRow as StatsRow, StatsReport},
        switch::SwitchInfo,
        tables::TableRow,
    },
    datapath::settings::Setting,
};

/// What a command reports: one value, shown as text for people or as JSON for programs.
pub struct Reply {
    json: Option<serde_json::Value>,
    text: String,
}

impl Reply {
    /// `value` as JSON, `text` for people.
    pub fn new<T: Serialize>(value: &T, text: impl Into<String>) -> Self {
        Self { json: Some(serde_json::to_value(value).expect("replies serialise")), text: text.into() }
    }

    /// A command that printed as it went (logs, demo, run) and has nothing left to report.
    pub fn done() -> Self {
        Self { json: None, text: String::new() }
    }

    /// Prints the reply on stdout, as JSON if `json`. A reader that stopped reading (`switch
    /// fdb | head`) is not an error: what it wanted it has; `println!` would panic instead.
    pub fn print(&self, json: bool) -> std::io::Result<()> {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let written = match (&self.json, json) {
            (Some(v), true) => writeln!(out, "{}", serde_json::to_string_pretty(v).expect("serialisable")),
            _ if self.text.is_empty() => Ok(()),
            _ => write!(out, "{}{}", self.text, if self.text.ends_with('\n') { "" } else { "\n" }),
        };
        match written.and_then(|()| out.flush()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => other,
        }
    }
}

/// Rows under a header with columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let s: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", s.join("  ").trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

/// `1234567` -> `1.2M`, for byte and packet counts in tables.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["", "K", "M", "G", "T"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 { n.to_string() } else { format!("{v:.1}{}", UNITS[i]) }
}

/// The `switch fdb` table.
pub fn fdb(rows: &[FdbRow]) -> String {
    table(
        &["MAC", "NAMESPACE", "PORT", "TYPE", "AGE", "PEER"],
        &rows
            .iter()
            .map(|r| {
                vec![
                    r.mac.clone(),
                    r.namespace.clone(),
                    r.interface.clone(),
                    r.kind.into(),
                    r.age_secs.map(|s| format!("{s:.1}s")).unwrap_or_else(|| "-".into()),
                    r.peer.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect::<Vec<_>>(),
    )
}

/// The `switch peer list` table.
pub fn peers(rows: &[switch::controller::peer::PeerRow]) -> String {
    table(
        &["SWITCH", "VNI", "PEER", "STATIONS", "LEARNED"],
        &rows
            .iter()
            .map(|r| {
                let learned = r.learned.map_or_else(|| "-".to_owned(), |n| n.to_string());
                vec![r.switch.clone(), r.vni.to_string(), r.peer.to_string(), r.stations.to_string(), learned]
            })
            .collect::<Vec<_>>(),
    )
}

/// The `switch tables` table.
pub fn tables(rows: &[TableRow]) -> String {
    table(
        &["TABLE", "ENTRIES", "EXPIRED", "CAPACITY", "ADDED", "REMOVED", "EVICTED", "REFUSED"],
        &rows
            .iter()
            .map(|r| {
                vec![
                    r.table.into(),
                    r.entries.to_string(),
                    r.expired.to_string(),
                    r.capacity.to_string(),
                    r.added.to_string(),
                    r.removed.to_string(),
                    r.evicted.to_string(),
                    r.refused.to_string(),
                ]
            })
            .collect::<Vec<_>>(),
    )
}

/// The `switch stats` table.
pub fn stats(r: &StatsReport) -> String {
    let mut out = table(
        &[
            "NAMESPACE",
            "PORT",
            "WORKLOAD",
            "RX PKTS",
            "RX BYTES",
            "TX PKTS",
            "TX BYTES",
            "FLOODED",
            "DROPPED",
            "MALFORMED",
            "SPOOFED",
            "MAC LIMIT",
            "TX ERR",
        ],
        &r.ports
            .iter()
            .map(|r| {
                vec![
                    r.namespace.clone(),
                    r.interface.clone(),
                    dash(&r.workload),
                    r.rx_packets.to_string(),
                    human(r.rx_bytes),
                    r.tx_packets.to_string(),
                    human(r.tx_bytes),
                    opt(r.flooded),
                    opt(r.dropped),
                    opt(r.malformed),
                    opt(spoofed(r)),
                    opt(r.mac_limit),
                    opt(r.tx_errors),
                ]
            })
            .collect::<Vec<_>>(),
    );
    if let Some(d) = &r.switch {
        let _ = write!(
            out,
            "\nswitch-wide drops: {} unsolicited routed, {} refused by NAT, {} over a namespace's masquerade share, \
             {} unanswered connections evicted, {} foreign ICMP errors",
            d.unsolicited_routed, d.nat_refused, d.masquerade_share, d.unreplied_evicted, d.icmp_refused
        );
    }
    out
}

/// A counter the datapath may not keep: "-" when it does not.
/// A port's port-security drops, all reasons together (the SPOOFED column; `--json` has each).
fn spoofed(r: &StatsRow) -> Option<u64> {
    Some(r.spoofed_mac? + r.spoofed_ip? + r.spoofed_arp? + r.tagged? + r.spoofed_nd? + r.router_guard?)
}

/// A text that may be missing (a port's workload): "-" when it is.
fn dash(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "-".into())
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// The `switch ns list` table.
pub fn namespaces(rows: &[NsInfo]) -> String {
    table(
        &["NAMESPACE", "KIND", "ATTACHED TO", "INTERFACE", "IP", "MAC", "HOST PORT", "STATE"],
        &rows
            .iter()
            .map(|r| {
                vec![
                    r.namespace.clone(),
                    r.kind.into(),
                    r.attached_to.clone(),
                    r.interface.clone(),
                    both_families(Some(&r.ip), r.ip6.as_deref()),
                    r.mac.clone().unwrap_or_else(|| "-".into()),
                    r.host_interface.clone().unwrap_or_else(|| "-".into()),
                    if r.ready { "ready" } else { "incomplete" }.into(),
                ]
            })
            .collect::<Vec<_>>(),
    )
}

/// An IP column: the IPv4 address, then the IPv6 one, comma-separated ("-" for none).
fn both_families(v4: Option<&str>, v6: Option<&str>) -> String {
    let both: Vec<&str> = [v4, v6].into_iter().flatten().filter(|a| !a.is_empty()).collect();
    if both.is_empty() { "-".into() } else { both.join(",") }
}

/// The `switch forward list` table.
pub fn forwards(rows: &[ForwardRow]) -> String {
    table(
        &["SWITCH", "PROTO", "HOST PORTS", "NAMESPACE", "WORKLOAD", "TO", "PACKETS", "BYTES", "CONNECTIONS", "ACTIVE"],
        &rows
            .iter()
            .map(|r| {
                vec![
                    r.switch.clone(),
                    r.proto.to_string(),
                    r.host_ports.clone(),
                    r.namespace.clone(),
                    dash(&r.workload),
                    r.to.clone(),
                    r.packets.to_string(),
                    human(r.bytes),
                    r.connections.to_string(),
                    r.active.to_string(),
                ]
            })
            .collect::<Vec<_>>(),
    )
}

/// The `switch list` table.
pub fn switches(rows: &[SwitchInfo]) -> String {
    table(
        &["SWITCH", "DATAPATH", "PORTS", "AGEING", "REDIRECT", "STATE"],
        &rows
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    s.datapath.to_string(),
                    s.ports.to_string(),
                    format!("{}s", s.ageing_secs),
                    if s.datapath.open(&s.name).takes(Setting::Redirect) { s.redirect.to_string() } else { "-".into() },
                    if s.ready { "up" } else { "incomplete" }.into(),
                ]
            })
            .collect::<Vec<_>>(),
    )
}

/// The `switch ports` table.
pub fn ports(rows: &[AnyPortRow]) -> String {
    table(
        &["SWITCH", "KIND", "OWNER", "INTERFACE", "SLOT", "IP", "MAC", "SECURITY", "WORKLOAD", "STATE"],
        &rows
            .iter()
            .map(|r| {
                vec![
                    r.switch.clone(),
                    r.kind.to_string(),
                    r.owner.clone(),
                    r.interface.clone(),
                    r.slot.map_or_else(|| "-".into(), |s| s.to_string()),
                    both_families(r.ip.as_deref(), r.ip6.as_deref()),
                    r.mac.clone().unwrap_or_else(|| "-".into()),
                    r.security.into(),
                    dash(&r.workload),
                    if r.ready { "ready" } else { "incomplete" }.into(),
                ]
            })
            .collect::<Vec<_>>(),
    )
}

/// One `switch monitor` event as a line: time, namespace/port, kind, reason, frame.
pub fn monitor_line(e: &MonitorEvent) -> String {
    // The clock part of the RFC 3339 time: the date is the same all day.
    let time = e.time.get(11..23).unwrap_or(&e.time);
    let port = port_text(e.namespace.as_deref().unwrap_or("?"), &e.interface, e.workload.as_deref());
    let kind = match e.kind {
        EventKind::Drop => "drop",
        EventKind::Learn => "learn",
        EventKind::Move => "move",
        EventKind::Age => "age",
        EventKind::Nat => "nat",
        EventKind::Port => "port",
    };
    let mut what = e.reason.unwrap_or("").to_owned();
    if let Some(from) = &e.from {
        what = format!("from {from}");
    }
    if let Some(station) = &e.station {
        what = format!("station {station}");
    }
    let mut line = format!("{time}  {port:<24} {kind:<5} {what:<15}");
    if let Some(f) = &e.frame {
        line.push(' ');
        line.push_str(&frame_summary(f));
    }
    if let Some(to) = e.nat {
        let _ = write!(line, " -> {}:{}", to.addr, to.port);
    }
    if e.suppressed > 0 {
        let _ = write!(line, " (+{} suppressed)", e.suppressed);
    }
    line.trim_end().to_owned()
}

/// One captured frame: `12:00:01.250  red/sred-1a2b  forward to blue/sblue-3c4d  02:..:01 > ...`.
pub fn capture_line(c: &Captured) -> String {
    let time = c.time.get(11..23).unwrap_or(&c.time);
    let port = c.port.to_string();
    let verdict = verdict_text(c);
    let mut line = format!("{time}  {port:<24} {verdict:<32} {}", frame_summary(&c.frame));
    if c.lost > 0 {
        let _ = write!(line, " (+{} lost before)", c.lost);
    }
    line
}

/// `02:..:01 > ff:..:ff ipv4 udp 10.0.0.9:5000 > 10.0.0.2:53 len 60`; a connection (no
/// frame of its own, no MACs, no length): `tcp 10.0.0.9:5000 > 10.0.0.2:53`.
pub fn frame_summary(f: &Frame) -> String {
    let mut s = String::new();
    match (&f.src_mac, &f.dst_mac, &f.ethertype) {
        (Some(src), Some(dst), Some(ethertype)) => {
            let _ = write!(s, "{src} > {dst} ");
            s.push_str(match ethertype.as_str() {
                "0x0800" => "ipv4",
                "0x0806" => "arp",
                "0x86dd" => "ipv6",
                other => other,
            });
        }
        _ if f.src_ip.is_none() => return format!("runt, len {}", f.len),
        _ => {}
    }
    if let (Some(sip), Some(dip), Some(proto)) = (f.src_ip, f.dst_ip, f.proto) {
        let name = match proto {
            1 => "icmp".to_owned(),
            6 => "tcp".to_owned(),
            17 => "udp".to_owned(),
            p => format!("proto {p}"),
        };
        match (f.src_port, f.dst_port) {
            (Some(sp), Some(dp)) => {
                let _ = write!(s, " {name} {sip}:{sp} > {dip}:{dp}");
            }
            _ => {
                let _ = write!(s, " {name} {sip} > {dip}");
            }
        }
    }
    if f.len > 0 {
        let _ = write!(s, " len {}", f.len);
    }
    s.trim_start().to_owned()
}
