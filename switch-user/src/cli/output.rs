//! Human tables and `--json` output.
use serde::Serialize;
use switch::{
    controller::{
        fdb::FdbRow, forward::ForwardRow, port::NsInfo, stats::PortRow, switch::SwitchInfo, tables::TableRow,
    },
    state::Datapath,
};

/// Prints `value` as pretty JSON.
pub fn json<T: Serialize>(value: &T) {
    println!("{}", serde_json::to_string_pretty(value).expect("serialisable"));
}

/// Prints rows under a header with columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let s: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
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
pub fn fdb(rows: &[FdbRow]) {
    table(
        &["MAC", "NAMESPACE", "PORT", "TYPE", "AGE"],
        &rows
            .iter()
            .map(|r| {
                vec![
                    r.mac.clone(),
                    r.namespace.clone(),
                    r.interface.clone(),
                    r.kind.into(),
                    r.age_secs.map(|s| format!("{s:.1}s")).unwrap_or_else(|| "-".into()),
                ]
            })
            .collect::<Vec<_>>(),
    );
}

/// The `switch tables` table.
pub fn tables(rows: &[TableRow]) {
    table(
        &["TABLE", "ENTRIES", "CAPACITY", "ADDED", "REMOVED", "EVICTED"],
        &rows
            .iter()
            .map(|r| {
                vec![
                    r.table.into(),
                    r.entries.to_string(),
                    r.capacity.to_string(),
                    r.added.to_string(),
                    r.removed.to_string(),
                    r.evicted.to_string(),
                ]
            })
            .collect::<Vec<_>>(),
    );
}

/// The `switch stats` table.
pub fn stats(rows: &[PortRow]) {
    table(
        &[
            "NAMESPACE",
            "PORT",
            "RX PKTS",
            "RX BYTES",
            "TX PKTS",
            "TX BYTES",
            "FLOODED",
            "DROPPED",
            "MALFORMED",
            "TX ERR",
        ],
        &rows
            .iter()
            .map(|r| {
                vec![
                    r.namespace.clone(),
                    r.interface.clone(),
                    r.rx_packets.to_string(),
                    human(r.rx_bytes),
                    r.tx_packets.to_string(),
                    human(r.tx_bytes),
                    opt(r.flooded),
                    opt(r.dropped),
                    opt(r.malformed),
                    opt(r.tx_errors),
                ]
            })
            .collect::<Vec<_>>(),
    );
}

/// A counter the datapath may not keep: "-" when it does not.
fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// The `switch ns list` table.
pub fn namespaces(rows: &[NsInfo]) {
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
                    r.ip.clone(),
                    r.mac.clone().unwrap_or_else(|| "-".into()),
                    r.host_interface.clone().unwrap_or_else(|| "-".into()),
                    if r.ready { "ready" } else { "incomplete" }.into(),
                ]
            })
            .collect::<Vec<_>>(),
    );
}

/// The `switch forward list` table.
pub fn forwards(rows: &[ForwardRow]) {
    table(
        &["SWITCH", "PROTO", "HOST PORTS", "NAMESPACE", "TO", "PACKETS", "BYTES", "CONNECTIONS", "ACTIVE"],
        &rows
            .iter()
            .map(|r| {
                vec![
                    r.switch.clone(),
                    r.proto.to_string(),
                    r.host_ports.clone(),
                    r.namespace.clone(),
                    r.to.clone(),
                    r.packets.to_string(),
                    human(r.bytes),
                    r.connections.to_string(),
                    r.active.to_string(),
                ]
            })
            .collect::<Vec<_>>(),
    );
}

/// The `switch list` table.
pub fn switches(rows: &[SwitchInfo]) {
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
                    if s.datapath == Datapath::Tc { s.redirect.to_string() } else { "-".into() },
                    if s.ready { "up" } else { "incomplete" }.into(),
                ]
            })
            .collect::<Vec<_>>(),
    );
}
