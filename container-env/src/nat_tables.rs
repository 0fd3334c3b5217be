//! The host's `nat` netfilter tables, given back as they were found.
//!
//! With the nf_tables backend (Debian's default), the first `iptables -t nat` rule creates the
//! `ip nat` table with its four base chains, and deleting the rule leaves them: iptables has no
//! command that deletes a table. An empty nat table is not harmless. Its chains need connection
//! tracking, so from then on the kernel tracks every IPv4 flow of the host (one entry per
//! connection, a table that can fill, a cost per packet), long after the rule that wanted it
//! is gone. Podman's portmap plugin leaves `ip6 nat` the same way.
//!
//! So whoever adds nat rules for a while (the bench's classic-recipe baseline, the tests of
//! the classic recipe, a container runtime's [`HostState`](crate::host::HostState)) records
//! [`existing`] first and calls [`remove_unused`] with it at the end: a nat table that was not
//! there before and holds nothing but its empty base chains is deleted again, with `nft`.
use std::{collections::BTreeSet, process::Command};

use crate::{Error, Result};

/// A nat table: its `nft` family and the `*-save` command that lists its family's tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    Ip,
    Ip6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::Ip, Family::Ip6];

    /// The `nft` family name.
    pub fn name(self) -> &'static str {
        match self {
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
        }
    }

    fn save_command(self) -> &'static str {
        match self {
            Family::Ip => "iptables-save",
            Family::Ip6 => "ip6tables-save",
        }
    }
}

/// The base chains iptables makes in a nat table, and nothing else in it means "unused".
const BASE_CHAINS: [&str; 4] = ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"];

/// The families whose nat table exists now. `iptables-save` without `-t` lists only the tables
/// that exist (with `-t nat` it would print the empty chains of one that does not).
pub fn existing() -> BTreeSet<Family> {
    Family::ALL
        .into_iter()
        .filter(|f| save(f.save_command(), &[]).is_some_and(|out| out.lines().any(|l| l == "*nat")))
        .collect()
}

/// Deletes the nat table of each family not in `before` that exists now and holds nothing but
/// empty base chains (what iptables leaves); returns the families whose table it deleted. A
/// table with a rule, or a chain of anybody's, stays. Needs `nft` (Debian's nftables; `cargo
/// xtask setup` installs it): without it nothing is deleted, and the error says so.
pub fn remove_unused(before: &BTreeSet<Family>) -> Result<Vec<Family>> {
    let mut removed = vec![];
    for family in existing().difference(before).copied() {
        let name = family.name();
        let listing = nft(&["-j", "list", "table", name, "nat"], "")?;
        let Some(chains) = unused_base_chains(&listing) else {
            continue;
        };
        // One transaction: deleting a chain that holds a rule fails (EBUSY), and with it the
        // whole transaction, so a rule added since the listing keeps its table.
        let mut script: String = chains.iter().map(|c| format!("delete chain {name} nat {c}\n")).collect();
        script.push_str(&format!("delete table {name} nat\n"));
        match nft(&["-f", "-"], &script) {
            Ok(_) => removed.push(family),
            Err(e) => tracing::debug!("{name} nat table kept: {e}"),
        }
    }
    Ok(removed)
}

/// The chains of an `nft -j list table` listing if they are all base chains iptables makes
/// and no rule is there; `None` otherwise (the table is somebody's).
fn unused_base_chains(listing: &str) -> Option<Vec<String>> {
    let json: serde_json::Value = serde_json::from_str(listing).ok()?;
    let mut chains = vec![];
    for object in json["nftables"].as_array()? {
        if object.get("rule").is_some() || object.get("set").is_some() || object.get("map").is_some() {
            return None;
        }
        if let Some(chain) = object.get("chain") {
            let name = chain["name"].as_str()?;
            if chain.get("hook").is_none() || !BASE_CHAINS.contains(&name) {
                return None;
            }
            chains.push(name.to_owned());
        }
    }
    Some(chains)
}

/// Runs `nft args` with `stdin` as its input; its output, or its error in one line.
fn nft(args: &[&str], stdin: &str) -> Result<String> {
    use std::{io::Write as _, process::Stdio};
    let fail = |e: std::io::Error| Error::Host(format!("running nft (install nftables): {e}"));
    let mut child = Command::new("nft")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(fail)?;
    child.stdin.take().expect("piped stdin").write_all(stdin.as_bytes()).map_err(fail)?;
    let out = child.wait_with_output().map_err(fail)?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(Error::Host(format!("nft {}: {}", args.join(" "), err.lines().next().unwrap_or_default())));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The output of `command args`, if it ran and succeeded.
fn save(command: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(command).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_empty_base_chains_are_unused() {
        let table = r#"{"table": {"family": "ip", "name": "nat", "handle": 1}}"#;
        let base = r#"{"chain": {"family": "ip", "table": "nat", "name": "PREROUTING", "handle": 1, "type": "nat", "hook": "prerouting", "prio": -100, "policy": "accept"}}"#;
        let mine = r#"{"chain": {"family": "ip", "table": "nat", "name": "MINE", "handle": 3}}"#;
        let rule = r#"{"rule": {"family": "ip", "table": "nat", "chain": "PREROUTING", "handle": 2, "expr": [{"accept": null}]}}"#;
        let listing = |objects: &[&str]| format!(r#"{{"nftables": [{}]}}"#, objects.join(", "));
        assert_eq!(unused_base_chains(&listing(&[table, base])), Some(vec!["PREROUTING".to_owned()]));
        assert_eq!(unused_base_chains(&listing(&[table])), Some(vec![]));
        assert_eq!(unused_base_chains(&listing(&[table, base, rule])), None);
        assert_eq!(unused_base_chains(&listing(&[table, base, mine])), None);
        assert_eq!(unused_base_chains("not json"), None);
    }

    #[test]
    fn a_table_made_meanwhile_goes_once_its_rules_are_gone_one_found_stays() {
        // In a network namespace of this thread's own (the commands it runs inherit it), never
        // the host's tables.
        std::thread::spawn(|| {
            // SAFETY: unshare(2) of this thread's network namespace; no memory is involved.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare (run as root)");
            let iptables = |args: &str| {
                let ok = Command::new("iptables").args(args.split(' ')).status().is_ok_and(|s| s.success());
                assert!(ok, "iptables {args}");
            };
            assert_eq!(existing(), BTreeSet::new(), "a new namespace has no nat table");
            let before = existing();
            let rule = "-t nat -A PREROUTING -i nt0 -p tcp --dport 8080 -j DNAT --to-destination 10.9.0.2:80";
            iptables(rule);
            assert!(existing().contains(&Family::Ip));
            assert_eq!(remove_unused(&before).unwrap(), vec![], "a table with a rule stays");
            iptables(&rule.replace("-A", "-D"));
            iptables("-t nat -N MINE");
            assert_eq!(remove_unused(&before).unwrap(), vec![], "a table with a chain of its own stays");
            iptables("-t nat -X MINE");
            assert_eq!(remove_unused(&existing()).unwrap(), vec![], "a table found there stays");
            assert_eq!(remove_unused(&before).unwrap(), vec![Family::Ip]);
            assert_eq!(existing(), BTreeSet::new());
        })
        .join()
        .unwrap();
    }
}
