//! The iptables rules and chains runtimes and their plugins add: listed, and removed when
//! their owner did not (a failed CNI DEL, a killed run).
use std::{collections::BTreeSet, process::Command};

use crate::command::{quiet, run};

/// The rules (`iptables -S` lines, `-A ...`) of `table` that contain `needle`.
pub fn rules_with(table: &str, needle: &str) -> Vec<String> {
    let out = run(Command::new("iptables").args(["-w", "-t", table, "-S"]));
    let out = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    out.lines().filter(|l| l.starts_with("-A ") && l.contains(needle)).map(str::to_owned).collect()
}

/// Deletes `rule` (an `iptables -S` line; its comments are quoted as for a shell).
pub fn delete(table: &str, rule: &str) {
    let rule = rule.strip_prefix("-A ").unwrap_or(rule);
    quiet("sh", &["-c", &format!("iptables -w -t {table} -D {rule}")]);
}

/// Removes chain `chain` of `table` with every rule jumping to it.
pub fn remove_chain(table: &str, chain: &str) {
    let jump = format!("-j {chain}");
    for rule in rules_with(table, &jump) {
        if rule.ends_with(&jump) || rule.contains(&format!("{jump} ")) {
            delete(table, &rule);
        }
    }
    quiet("iptables", &["-w", "-t", table, "-F", chain]);
    quiet("iptables", &["-w", "-t", table, "-X", chain]);
}

/// Every iptables and ip6tables table as `FAMILY/table` and chain as `FAMILY/table/chain`
/// (`iptables-save`, `ip6tables-save`).
pub fn chains() -> BTreeSet<String> {
    let mut chains = BTreeSet::new();
    for (family, save) in [("ip", "iptables-save"), ("ip6", "ip6tables-save")] {
        let out = run(&mut Command::new(save)).map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        let mut table = String::new();
        for l in out.unwrap_or_default().lines() {
            if let Some(t) = l.strip_prefix('*') {
                table = format!("{family}/{t}");
                chains.insert(table.clone());
            } else if let Some(c) = l.strip_prefix(':') {
                chains.insert(format!("{table}/{}", c.split(' ').next().unwrap_or_default()));
            }
        }
    }
    chains
}

/// The comment the reference CNI plugins put on each rule they make for network `network`.
fn network_needle(network: &str) -> String {
    format!(r#"name: \"{network}\""#)
}

/// The rules (nat and filter) the reference plugins made for network `network`'s containers.
pub fn network_rules(network: &str) -> Vec<String> {
    let needle = network_needle(network);
    let mut v = rules_with("nat", &needle);
    v.extend(rules_with("filter", &needle));
    v
}

/// Removes the rules of network `network` (see [`network_rules`]) with the per-container
/// `CNI-` chains they jump to, except the shared chains in `keep`.
pub fn remove_network_rules(network: &str, keep: &[&str]) {
    let needle = network_needle(network);
    for table in ["nat", "filter"] {
        for rule in rules_with(table, &needle) {
            delete(table, &rule);
            if let Some(chain) = rule.rsplit_once("-j ").map(|(_, c)| c.trim())
                && chain.starts_with("CNI-")
                && !keep.contains(&chain)
            {
                remove_chain(table, chain);
            }
        }
    }
}

/// The policies of the built-in chains of every iptables and ip6tables table, as
/// (`FAMILY/table/CHAIN`, policy) (`iptables-save`: `:FORWARD DROP [0:0]`).
pub fn policies() -> Vec<(String, String)> {
    let mut out = vec![];
    for (family, save) in [("ip", "iptables-save"), ("ip6", "ip6tables-save")] {
        let text = run(&mut Command::new(save)).map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        let mut table = String::new();
        for l in text.unwrap_or_default().lines() {
            if let Some(t) = l.strip_prefix('*') {
                table = format!("{family}/{t}");
            } else if let Some(c) = l.strip_prefix(':') {
                let mut f = c.split(' ');
                if let (Some(chain), Some(policy)) = (f.next(), f.next())
                    && policy != "-"
                {
                    out.push((format!("{table}/{chain}"), policy.to_owned()));
                }
            }
        }
    }
    out
}

/// Sets the policy of built-in chain `FAMILY/table/CHAIN` (as [`policies`] names it).
pub fn set_policy(chain: &str, policy: &str) -> crate::Result<()> {
    let mut parts = chain.splitn(3, '/');
    let (Some(family), Some(table), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(crate::Error::Host(format!("{chain}: not FAMILY/table/CHAIN")));
    };
    let program = if family == "ip6" { "ip6tables" } else { "iptables" };
    if quiet(program, &["-w", "-t", table, "-P", name, policy]) {
        Ok(())
    } else {
        Err(crate::Error::Host(format!("the policy of {chain} could not be set back to {policy}")))
    }
}
