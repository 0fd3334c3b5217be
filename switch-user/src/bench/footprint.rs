//! The footprint comparison: the kernel memory of 1, 10 and 100 idle tc switches (no ports)
//! against as many Linux bridges, and of one switch holding 10 000 connections against a
//! bridge with 10 000 conntrack entries (what the classic recipe's NAT keeps per connection).
//!
//! How it is measured:
//! - a switch: the `memlock` the kernel charges to each of its maps and programs, summed
//!   (`datapath::ebpf::footprint`, the number under `switch tables`): exact, and unaffected by
//!   whatever else the machine does;
//! - a bridge has no such account (`estimate`): how much the kernel's memory in use grew while
//!   the bridges were made: slab objects in use (`/proc/slabinfo`, active objects times their
//!   size) plus `Percpu` and `VmallocUsed` (`/proc/meminfo`); a bridge is slab and per-CPU
//!   memory. Other work on the machine makes it noisy (it can even come out below zero, shown
//!   as 0). A conntrack entry is the object size of the `nf_conntrack` slab per connection,
//!   the hash table not counted;
//! - the switches are estimated the same way too (`tc (estimate)`), which also sees what the
//!   account leaves out (each switch's copy of the object's BTF, the verifier's leftovers).
use indicatif::ProgressBar;

use super::{Comparison, Options, Series, report::MetricReport, run_quiet};
use crate::{
    controller::switch::{UpOptions, down, up},
    datapath::ebpf::{Pins, footprint},
    error::{Error, Result, bpf},
    sys::blocking,
};

/// The footprint comparison.
pub struct Footprint;

/// The name `--only` knows it by.
const FOOTPRINT: &str = "footprint";
/// Our contender, by the kernel's account.
const OURS: &str = "tc (memlock)";
/// Our contender, by the bridges' estimate.
const OURS_ESTIMATED: &str = "tc (estimate)";
/// The baseline.
const BRIDGE: &str = "bridge (estimate)";
/// How many switches (and bridges) at once.
const COUNTS: [usize; 3] = [1, 10, 100];
/// Connections of the connection comparison.
const CONNECTIONS: u32 = 10_000;

#[async_trait::async_trait]
impl Comparison for Footprint {
    fn contenders(&self) -> Vec<&'static str> {
        vec![]
    }

    fn alias(&self) -> Option<&'static str> {
        Some(FOOTPRINT)
    }

    fn steps(&self, opts: &Options) -> usize {
        opts.rounds * (COUNTS.len() + 1)
    }

    async fn run(&self, opts: &Options, bar: &ProgressBar) -> Result<Vec<MetricReport>> {
        let mut out = vec![];
        for n in COUNTS {
            let mut s = [Series::default(), Series::default(), Series::default()];
            for round in 1..=opts.rounds {
                bar.set_message(format!("round {round}/{}: memory of {n} idle switches and bridges", opts.rounds));
                let (memlock, estimated) = switches(n, None).await?;
                s[0].values.push(mib(memlock));
                s[1].values.push(mib(estimated));
                s[2].values.push(mib(bridges(n).await?));
                bar.inc(1);
            }
            out.push(report(&format!("footprint_{n}"), &format!("Kernel memory of {n} idle switches (no ports)"), s));
        }
        let mut s = [Series::default(), Series::default(), Series::default()];
        for round in 1..=opts.rounds {
            bar.set_message(format!("round {round}/{}: memory of {CONNECTIONS} connections", opts.rounds));
            let (memlock, estimated) = switches(1, Some(CONNECTIONS)).await?;
            s[0].values.push(mib(memlock));
            s[1].values.push(mib(estimated));
            let per_conn = blocking(conntrack_object_size).await?;
            s[2].values.push(mib(bridges(1).await? + per_conn * u64::from(CONNECTIONS)));
            bar.inc(1);
        }
        out.push(report(
            "footprint_connections",
            &format!(
                "Kernel memory of one switch with {CONNECTIONS} connections (bridge: + as many conntrack entries)"
            ),
            s,
        ));
        Ok(out)
    }

    async fn remove(&self) {
        for i in 0..COUNTS[COUNTS.len() - 1] {
            let _ = down(&switch_name(i)).await;
            let _ = run_quiet("ip", &["link", "del", &bridge_name(i)]).await;
        }
    }
}

fn report(id: &str, title: &str, [ours, estimated, bridge]: [Series; 3]) -> MetricReport {
    MetricReport::new(
        id,
        title,
        "MiB",
        false,
        "",
        &[BRIDGE],
        vec![(OURS.into(), ours), (OURS_ESTIMATED.into(), estimated), (BRIDGE.into(), bridge)],
    )
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn switch_name(i: usize) -> String {
    format!("fpbench{i}")
}

fn bridge_name(i: usize) -> String {
    format!("fpbr{i}")
}

/// The kernel memory in use that a bridge (and a switch) takes from: the slab objects in use
/// (`/proc/slabinfo`: active objects times their size, finer than the `Slab` pages of
/// `/proc/meminfo`, which a few objects more need not grow) plus `Percpu` and `VmallocUsed`
/// of `/proc/meminfo`, in bytes.
fn kernel_memory() -> Result<u64> {
    let read = |path: &str| {
        std::fs::read_to_string(path).map_err(|e| Error::Io { context: format!("reading {path}"), source: e })
    };
    let slab: u64 = read("/proc/slabinfo")?
        .lines()
        .skip(2)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(f.get(1)?.parse::<u64>().ok()? * f.get(3)?.parse::<u64>().ok()?)
        })
        .sum();
    let kib: u64 = read("/proc/meminfo")?
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| matches!(*k, "Percpu" | "VmallocUsed"))
        .filter_map(|(_, v)| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
        .sum();
    Ok(slab + kib * 1024)
}

/// The object size of the `nf_conntrack` slab (one per tracked connection), 0 without it.
fn conntrack_object_size() -> Result<u64> {
    let info = std::fs::read_to_string("/proc/slabinfo")
        .map_err(|e| Error::Io { context: "reading /proc/slabinfo".into(), source: e })?;
    let size = info.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        (f.next() == Some("nf_conntrack")).then(|| f.nth(2).and_then(|s| s.parse().ok())).flatten()
    });
    size.ok_or_else(|| Error::Command("no nf_conntrack slab in /proc/slabinfo (conntrack not loaded)".into()))
}

/// Makes `n` idle tc switches (sized for `connections`, filled with as many, if given):
/// their memory by the kernel's account and by the meminfo estimate; takes them down again.
async fn switches(n: usize, connections: Option<u32>) -> Result<(u64, u64)> {
    for i in 0..n {
        let _ = down(&switch_name(i)).await;
    }
    let before = kernel_memory()?;
    let made = make_switches(n, connections).await;
    let estimated = kernel_memory()?.saturating_sub(before);
    let mut memlock = 0;
    if made.is_ok() {
        for i in 0..n {
            let pins = Pins::new(&switch_name(i));
            memlock += blocking(move || footprint::measure(&pins)).await?.total();
        }
    }
    for i in 0..n {
        down(&switch_name(i)).await?;
    }
    made.map(|()| (memlock, estimated))
}

async fn make_switches(n: usize, connections: Option<u32>) -> Result<()> {
    for i in 0..n {
        let name = switch_name(i);
        up(UpOptions { name: name.clone(), max_connections: connections, ..Default::default() }).await?;
        if let Some(c) = connections {
            let pins = Pins::new(&name);
            blocking(move || fill_connections(&pins, c)).await?;
        }
    }
    Ok(())
}

/// Puts `n` connections (both directions of each, as the programs do) into the answered table.
fn fill_connections(pins: &Pins, n: u32) -> Result<()> {
    use switch_common::{CtEntry, CtKey, nat::CT_ESTABLISHED};
    let path = pins.map(switch_common::maps::CONNTRACK);
    let data = aya::maps::MapData::from_pin(&path).map_err(bpf("opening CONNTRACK"))?;
    let mut map: aya::maps::HashMap<_, CtKey, CtEntry> =
        aya::maps::HashMap::try_from(aya::maps::Map::from_map_data(data).map_err(bpf("opening CONNTRACK"))?)
            .map_err(bpf("opening CONNTRACK"))?;
    let entry = CtEntry { state: CT_ESTABLISHED, ..Default::default() };
    for i in 0..n {
        let (client, server) = (0x0a00_0000 | i, 0x0a80_0001);
        let (sport, dport) = (40_000 + (i % 20_000) as u16, 80);
        let there = CtKey { src: client, dst: server, sport, dport, proto: 6, pad: [0; 3] };
        let back = CtKey { src: server, dst: client, sport: dport, dport: sport, proto: 6, pad: [0; 3] };
        for key in [there, back] {
            map.insert(key, entry, 0).map_err(bpf("filling CONNTRACK"))?;
        }
    }
    Ok(())
}

/// Makes `n` Linux bridges (up, no ports): how much the kernel's memory grew; removes them.
async fn bridges(n: usize) -> Result<u64> {
    let remove = || async {
        for i in 0..n {
            let _ = run_quiet("ip", &["link", "del", &bridge_name(i)]).await;
        }
    };
    remove().await;
    let before = kernel_memory()?;
    let mut made = Ok(());
    for i in 0..n {
        made = run_quiet("ip", &["link", "add", &bridge_name(i), "up", "type", "bridge"]).await;
        if made.is_err() {
            break;
        }
    }
    let grown = kernel_memory()?.saturating_sub(before);
    remove().await;
    made.map(|()| grown)
}
