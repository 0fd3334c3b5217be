//! The documentation agrees with what it describes: `docs/reference.md` is the `--help` of
//! every command of both binaries (`switch`, then `switch-cni`), the README's benchmark table is the one in
//! `docs/benchmarks.md` (which `switch bench` writes), and every relative link of README.md and
//! docs/ leads to a file and, with a `#fragment`, to a heading of it.
//!
//! `SWITCH_UPDATE_REFERENCE=1 cargo test -p switch-tests --test docs` writes
//! `docs/reference.md` anew after a change of the command line. No root needed.
use std::{
    collections::{BTreeMap, HashSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use switch_tests::switch_bin;

/// The help text is wrapped to the terminal's width: a fixed one makes it the same everywhere.
const HELP_COLUMNS: &str = "100";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the workspace").to_path_buf()
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// `BIN PATH... --help` (BIN: `switch`, or `switch-cni` next to it).
fn help(bin: &str, path: &[String]) -> String {
    let out = Command::new(switch_bin().with_file_name(bin))
        .args(path)
        .arg("--help")
        .env("COLUMNS", HELP_COLUMNS)
        .env_remove("CNI_COMMAND")
        .output()
        .expect("running --help");
    assert!(out.status.success(), "{bin} {} --help: {}", path.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

/// The subcommands a help text lists under `Commands:` (but `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        // A command's name starts at column 2; wrapped descriptions are indented further.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// Appends the help of `BIN PATH...` and of every command below it, depth first.
fn walk(bin: &str, path: Vec<String>, out: &mut String) {
    let text = help(bin, &path);
    let title = if path.is_empty() { bin.to_owned() } else { format!("{bin} {}", path.join(" ")) };
    out.push_str(&format!("\n## {title}\n\n```text\n{}\n```\n", text.trim_end()));
    for sub in subcommands(&text) {
        let mut next = path.clone();
        next.push(sub);
        walk(bin, next, out);
    }
}

fn reference() -> String {
    let mut out = String::from(
        "# switch: command reference\n\n\
         The `--help` of every command, generated from the binary (`SWITCH_UPDATE_REFERENCE=1 cargo \
         test -p switch-tests --test docs`; the test fails when it no longer matches). What the \
         commands do, with examples: [commands.md](commands.md). `switch-cni`'s command line \
         (installing the plugin) is at the end; as a plugin it takes the configuration keys, \
         environment and errors in [containers.md](containers.md#switch-cni).\n",
    );
    walk("switch", Vec::new(), &mut out);
    walk("switch-cni", Vec::new(), &mut out);
    out
}

#[test]
fn reference_is_the_help_of_every_command() {
    let path = workspace().join("docs/reference.md");
    let now = reference();
    if std::env::var_os("SWITCH_UPDATE_REFERENCE").is_some() {
        fs::write(&path, &now).expect("writing docs/reference.md");
        return;
    }
    assert!(
        read(&path) == now,
        "docs/reference.md differs from the binary's --help: run \
         SWITCH_UPDATE_REFERENCE=1 cargo test -p switch-tests --test docs"
    );
}

/// The rows of the table under each `## ` heading of docs/benchmarks.md: heading -> contender
/// -> cells.
fn benchmark_tables(md: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut tables: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut heading = String::new();
    for line in md.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            heading = h.to_owned();
        } else if line.starts_with("| ") && !line.starts_with("|---") {
            let cells = table_cells(line);
            tables.entry(heading.clone()).or_default().insert(cells[0].clone(), cells[1..].to_vec());
        }
    }
    tables
}

fn table_cells(line: &str) -> Vec<String> {
    line.trim().trim_matches('|').split('|').map(|c| c.trim().trim_matches('*').to_owned()).collect()
}

/// Which section of docs/benchmarks.md each column of the README's table comes from.
const README_COLUMNS: [&str; 4] = [
    "TCP stream throughput (iperf3, 1 stream)",
    "64-byte UDP frames received (trafgen on every CPU)",
    "Request/response latency p50 (sockperf UDP ping-pong, busy polling, RTT/2)",
    "Request/response latency p50 (sockperf UDP ping-pong, sleeping sockets, RTT/2)",
];

#[test]
fn readme_benchmark_table_is_the_report_s() {
    let ws = workspace();
    let report = benchmark_tables(&read(&ws.join("docs/benchmarks.md")));
    let readme = read(&ws.join("README.md"));
    let rows: Vec<Vec<String>> = readme
        .lines()
        .skip_while(|l| !l.contains("Copied from docs/benchmarks.md"))
        .skip(3) // the marker, the header and the separator
        .take_while(|l| l.starts_with('|'))
        .map(table_cells)
        .collect();
    assert!(rows.len() >= 3, "no benchmark table found in README.md");
    for row in &rows {
        for (section, cell) in README_COLUMNS.iter().zip(&row[1..]) {
            let theirs = report
                .get(*section)
                .and_then(|t| t.get(&row[0]))
                .unwrap_or_else(|| panic!("docs/benchmarks.md has no row {} under '{section}'", row[0]));
            // median, min - max, x bridge, ...
            let expected = if theirs[0].starts_with("not measured") {
                "not measured".to_owned()
            } else {
                format!("{} ({}x)", theirs[0], theirs[2])
            };
            assert_eq!(cell, &expected, "README.md's {} under '{section}' disagrees with docs/benchmarks.md", row[0]);
        }
    }
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The lines of a Markdown file outside its code blocks.
fn prose(md: &str) -> impl Iterator<Item = &str> {
    let mut fenced = false;
    md.lines().filter(move |line| {
        if line.starts_with("```") {
            fenced = !fenced;
            return false;
        }
        !fenced
    })
}

/// The anchors of a Markdown file's headings.
fn anchors(md: &str) -> HashSet<String> {
    prose(md).filter(|l| l.starts_with('#')).map(|l| anchor(l.trim_start_matches('#'))).collect()
}

/// The targets of the Markdown links `[text](target)` of a file.
fn links(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in prose(md) {
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            let tail = &rest[i + 2..];
            let end = tail.find(')').unwrap_or(tail.len());
            out.push(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    out
}

#[test]
fn every_link_of_the_docs_resolves() {
    let ws = workspace();
    let mut files = vec![ws.join("README.md")];
    files.extend(fs::read_dir(ws.join("docs")).expect("docs/").map(|e| e.expect("docs/ entry").path()));
    let mut broken = Vec::new();
    for file in files.iter().filter(|f| f.extension().is_some_and(|e| e == "md")) {
        let md = read(file);
        for target in links(&md) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, fragment) = target.split_once('#').unwrap_or((&target, ""));
            let dest = if path.is_empty() { file.clone() } else { file.parent().expect("a folder").join(path) };
            let ok = dest.exists()
                && (fragment.is_empty()
                    || dest.extension().is_some_and(|e| e == "md") && anchors(&read(&dest)).contains(fragment));
            if !ok {
                broken.push(format!("{}: {target}", file.strip_prefix(&ws).unwrap_or(file).display()));
            }
        }
    }
    assert!(broken.is_empty(), "links that lead nowhere:\n{}", broken.join("\n"));
}
