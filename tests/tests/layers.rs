//! The controller library's layers, checked on its source: each module imports only the
//! modules below it, and only `datapath/` decides by the kind of a datapath. A boundary a
//! review keeps once leaks on the next change; this test keeps it instead. No root needed.
//!
//! ```text
//!   cli/, main.rs, bin/, cni/, bench/
//!        │
//!   controller/
//!        │
//!   datapath/ ──► state.rs
//!        │            │
//!   sys/  ◄───────────┘
//!        │
//!   error.rs, names.rs, kind.rs
//! ```
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

/// A layer: the source paths (relative to switch-user/src) that make it, and the top-level
/// modules of the crate it may import. Everything not listed is above every layer here.
struct Layer {
    name: &'static str,
    paths: &'static [&'static str],
    may_use: &'static [&'static str],
}

const LEAVES: &[&str] = &["error", "names", "kind"];

const LAYERS: &[Layer] = &[
    Layer { name: "leaves", paths: &["error.rs", "names.rs", "kind.rs"], may_use: LEAVES },
    Layer { name: "sys", paths: &["sys"], may_use: &["error", "names", "kind", "sys"] },
    Layer { name: "state", paths: &["state.rs"], may_use: &["error", "names", "kind", "sys", "state"] },
    Layer { name: "datapath", paths: &["datapath"], may_use: &["error", "names", "kind", "sys", "state", "datapath"] },
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../switch-user/src")
}

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for e in std::fs::read_dir(path).unwrap() {
            rust_files(&e.unwrap().path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_owned());
    }
}

/// The source without comments (line comments only: the crate has no block comments), so a
/// doc that mentions `crate::controller` is no import.
fn code(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The crate's top-level modules a piece of code names: `crate::x::...` and each first name in
/// a `crate::{x::..., y, ...}` group (at the group's own depth, not deeper).
fn crate_modules(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut name = String::new();
            let mut fresh = true;
            for ch in group.chars() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => fresh = true,
                    c if depth == 0 && fresh && (c.is_alphanumeric() || c == '_') => name.push(c),
                    _ if !name.is_empty() => {
                        found.insert(std::mem::take(&mut name));
                        fresh = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            found.insert(name);
        }
    }
    found
}

#[test]
fn each_layer_imports_only_what_is_below_it() {
    let mut leaks = Vec::new();
    for layer in LAYERS {
        for root in layer.paths {
            let mut files = Vec::new();
            rust_files(&src().join(root), &mut files);
            assert!(!files.is_empty(), "layer {} has no source at {root}", layer.name);
            for f in files {
                for m in crate_modules(&code(&f)) {
                    if !layer.may_use.contains(&m.as_str()) {
                        leaks.push(format!("{} ({}) uses crate::{m}", f.display(), layer.name));
                    }
                }
            }
        }
    }
    assert!(leaks.is_empty(), "imports climbing back up:\n{}", leaks.join("\n"));
}

#[test]
fn only_the_datapaths_decide_by_their_kind() {
    // Naming a kind to choose one (a default, the bench's contenders) is not deciding by it;
    // comparing against one is.
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let datapath = src().join("datapath");
    let mut leaks = Vec::new();
    for f in files.iter().filter(|f| !f.starts_with(&datapath)) {
        for (n, line) in code(f).lines().enumerate() {
            let compares = ["== DatapathKind::", "!= DatapathKind::", "DatapathKind::Tc =>", "DatapathKind::Xdp =>"]
                .iter()
                .any(|p| line.contains(p));
            let matches = line.contains("matches!(") && line.contains("DatapathKind::");
            if compares || matches {
                leaks.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(leaks.is_empty(), "decisions by datapath kind outside datapath/:\n{}", leaks.join("\n"));
}

#[test]
fn the_ebpf_forward_and_tunnel_helpers_do_not_import_each_other() {
    let helpers = Path::new(env!("CARGO_MANIFEST_DIR")).join("../switch-ebpf/src/helpers");
    let uses = |file: &str, other: &str| {
        let c = code(&helpers.join(file));
        c.contains(&format!("{other}::")) || c.contains(&format!(" {other},")) || c.contains(&format!(" {other}}}"))
    };
    assert!(
        !(uses("forward.rs", "tunnel") && uses("tunnel.rs", "forward")),
        "forward.rs and tunnel.rs import each other"
    );
    assert!(!uses("tunnel.rs", "forward"), "tunnel.rs climbs to forward.rs (the redirect helper is redirect.rs)");
}

#[test]
fn the_import_reader_finds_grouped_and_plain_paths() {
    let c = "use crate::{\n    error::{Context as _, Error},\n    sys::{files, netns},\n    kind,\n};\nlet x = crate::controller::blocking(f);";
    let got: Vec<String> = crate_modules(c).into_iter().collect();
    assert_eq!(got, ["controller", "error", "kind", "sys"]);
}
