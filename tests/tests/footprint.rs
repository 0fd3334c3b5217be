//! What a switch holds in the kernel: an idle tc switch at most 2 MiB (maps and programs, as
//! `switch tables` reports them), its tables as large as `up --max-stations` and
//! `--max-connections` make them and their memory growing with those sizes, bad sizes refused
//! with nothing made, a different size asked of a running switch refused.
use switch_tests::*;

/// Switches of these tests (named `fp…`), taken down on drop, also when a test fails.
struct Switches(Vec<String>);

impl Switches {
    fn up(&mut self, name: &str, extra: &[&str]) {
        self.0.push(name.to_owned());
        let mut a = vec!["up", "--switch", name, "--datapath", "tc"];
        a.extend_from_slice(extra);
        ok(&a);
    }
}

impl Drop for Switches {
    fn drop(&mut self) {
        for sw in &self.0 {
            let _ = switch(&["down", "--switch", sw]);
        }
    }
}

/// The kernel memory of switch `sw` in bytes, from the line under `switch tables`.
fn kernel_memory(sw: &str) -> u64 {
    let out = ok(&["tables", "--switch", sw]);
    let line = out.lines().find(|l| l.starts_with("kernel memory of the switch:")).expect("no memory line");
    let bytes = line.rsplit_once("; ").and_then(|(_, b)| b.strip_suffix(" bytes)")).expect(line);
    bytes.parse().expect(line)
}

/// (capacity, memory_bytes) of each table of `sw`, by name.
fn tables(sw: &str) -> std::collections::BTreeMap<String, (u64, u64)> {
    let rows = json(&["tables", "--switch", sw]);
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let n = |f: &str| r[f].as_u64().unwrap_or_else(|| panic!("no {f} in {r}"));
            (r["table"].as_str().unwrap().to_owned(), (n("capacity"), n("memory_bytes")))
        })
        .collect()
}

#[test]
fn an_idle_switch_holds_at_most_2_mib_and_its_tables_are_its_own_size() {
    let mut s = Switches(vec![]);
    s.up("fpidle", &[]);
    let idle = kernel_memory("fpidle");
    assert!(idle <= 2 * 1024 * 1024, "an idle switch holds {idle} bytes");
    let t = tables("fpidle");
    let cap = |t: &std::collections::BTreeMap<String, (u64, u64)>, n: &str| t[n].0;
    assert_eq!(
        [cap(&t, "fdb"), cap(&t, "conntrack"), cap(&t, "unreplied"), cap(&t, "host_flows")],
        [2048, 4096, 2048, 1024],
        "{t:?}"
    );
    // A switch for 10 000 connections and 8 192 stations: tables of that size, their memory
    // (preallocated LRU entries) grown with them, the rest of the switch as before.
    s.up("fpbig", &["--max-connections", "10000", "--max-stations", "8192"]);
    let big = tables("fpbig");
    assert_eq!(
        [cap(&big, "fdb"), cap(&big, "conntrack"), cap(&big, "unreplied"), cap(&big, "host_flows")],
        [8192, 20_000, 10_000, 5_000],
        "{big:?}"
    );
    for (name, (capacity, memory)) in &big {
        assert!(*memory >= capacity * 64, "{name}: {memory} bytes for {capacity} entries");
        assert!(*memory > t[name].1 * 3, "{name} did not grow with its size: {memory} vs {}", t[name].1);
    }
    let grown: u64 = big.values().map(|v| v.1).sum::<u64>() - t.values().map(|v| v.1).sum::<u64>();
    let whole = kernel_memory("fpbig") - idle;
    // Everything else is the same size (SOCK_ORIG grows with the connections too).
    assert!(whole >= grown && whole < grown + grown / 4, "grew {whole} bytes, its tables {grown}");
    // Going down gives it back: the pins are gone (the kernel frees what no pin holds).
    ok(&["down", "--switch", "fpbig"]);
    assert!(!std::path::Path::new("/sys/fs/bpf/switch/fpbig").exists());
}

#[test]
fn table_sizes_out_of_range_or_changed_are_refused() {
    for (opt, bad) in [("--max-connections", "0"), ("--max-stations", "15"), ("--max-connections", "1048577")] {
        let e = fails(&["up", "--switch", "fpbad", opt, bad], 2);
        assert!(e.contains(&opt[2..]) && e.contains(bad), "{e}");
        assert!(!std::path::Path::new("/sys/fs/bpf/switch/fpbad").exists(), "{opt} {bad} made pins");
        assert!(!json(&["list"]).to_string().contains("fpbad"), "{opt} {bad} recorded a switch");
    }
    let mut s = Switches(vec![]);
    s.up("fpsize", &["--max-stations", "512"]);
    // The same size again: idempotent; another size: refused, the switch unchanged.
    ok(&["up", "--switch", "fpsize", "--max-stations", "512"]);
    let e = switch(&["up", "--switch", "fpsize", "--max-stations", "1024"]);
    assert_ne!(e.code, 0, "{e:?}");
    assert!(e.stderr.contains("max-stations 512 (asked for 1024)"), "{}", e.stderr);
    assert_eq!(tables("fpsize")["fdb"].0, 512);
}

/// Interfaces of the host whose name has `part` in it.
fn links_with(part: &str) -> Vec<String> {
    host_links().into_iter().filter(|l| l.contains(part)).collect()
}

/// 100 switches up at once, each with its gateway (a segment of its own in 10.240.0.0/16):
/// all listed and ready, each in `switch metrics` and watchable with `switch monitor`, and
/// `down` of each leaves no record, pin or interface. (Not timed: the machine is shared.)
#[test]
fn a_hundred_switches_with_gateways_work_list_and_go_down_leaving_nothing() {
    let mut s = Switches(vec![]);
    let names: Vec<String> = (0..100).map(|i| format!("fpm{i}")).collect();
    for (i, sw) in names.iter().enumerate() {
        s.up(sw, &["--gateway", &format!("10.240.{i}.254/24")]);
    }
    let list = json(&["list"]);
    for (i, sw) in names.iter().enumerate() {
        let row = list.as_array().unwrap().iter().find(|r| r["name"] == sw.as_str());
        let row = row.unwrap_or_else(|| panic!("{sw} not listed: {list}"));
        let gateway = format!("10.240.{i}.254/24");
        assert_eq!((row["ready"].as_bool(), row["gateway"].as_str()), (Some(true), Some(gateway.as_str())), "{row}");
    }
    let metrics = ok(&["metrics"]);
    for sw in &names {
        let series = format!("switch_table_capacity_entries{{switch=\"{sw}\",datapath=\"tc\",table=\"fdb\"}}");
        assert!(metrics.contains(&series), "{sw} has no metrics");
    }
    // Each switch has its gateway pair, and a monitor of the last one starts and ends.
    assert_eq!(links_with("fpm").len(), 200, "a gateway pair per switch");
    let mon = std::process::Command::new(switch_bin())
        .args(["monitor", "--switch", "fpm99", "--json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(within(|| config_flag("fpm99", switch_common::CFG_F_EVENTS)), "monitor did not start");
    unsafe { libc::kill(mon.id() as i32, libc::SIGINT) };
    let mut mon = mon;
    assert!(mon.wait().unwrap().success(), "monitor did not end cleanly");
    assert!(!config_flag("fpm99", switch_common::CFG_F_EVENTS), "monitor left events on");
    for sw in &names {
        ok(&["down", "--switch", sw]);
    }
    let list = json(&["list"]).to_string();
    assert!(!names.iter().any(|n| list.contains(&format!("\"{n}\""))), "a switch is still listed: {list}");
    let pins: Vec<_> = std::fs::read_dir("/sys/fs/bpf/switch")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(!pins.iter().any(|p: &String| p.starts_with("fpm")), "pins left: {pins:?}");
    assert_eq!(links_with("fpm"), Vec::<String>::new(), "interfaces left");
}
