//! The host-wide state container runtimes and their plugins change, recorded before the first
//! runtime call and given back after the last.
//!
//! The bridge plugin turns on `net.ipv4.ip_forward` (which flips every interface's
//! `forwarding` and `all/accept_redirects`), portmap leaves its top-level nat chains and the
//! nat tables iptables made for them, and podman and libcni make directories at built-in
//! locations whatever their configuration says. What a runtime leaves is described by its
//! [`Watch`]; a [`HostState`] records the host against it and gives it back. Environments of
//! several processes at once (test binaries) share one record through [`Shared`].
use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    sync::Mutex,
};

use serde::{Deserialize, Serialize};

use crate::{
    Error, Result, iptables,
    nat_tables::{self, Family},
    workdir::alive,
};

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// What a runtime leaves on the host beyond its own environment.
#[derive(Clone, Copy, Debug)]
pub struct Watch {
    /// Directories it makes at built-in locations: removed afterwards if it made them.
    pub dirs: &'static [&'static str],
    /// Top-level nat chains its plugins leave after their last user: removed if none was there
    /// before and the first, which holds a rule per user (portmap's DNAT chain), is empty.
    pub nat_chains: &'static [&'static str],
    /// Prefixes of the network namespaces it makes in /run/netns (reported if left).
    pub netns_prefixes: &'static [&'static str],
    /// Chains (table, chain) the runtime makes and never removes (dockerd's DOCKER chains):
    /// removed with the rules jumping to them if none was there before.
    pub chains: &'static [(&'static str, &'static str)],
}

/// `net.ipv4.ip_forward`, `all/accept_redirects` and every interface's `forwarding`, as they
/// are now: what turning forwarding on changes.
pub fn forwarding_sysctls() -> Vec<(PathBuf, String)> {
    let mut paths = vec![PathBuf::from(IP_FORWARD), PathBuf::from("/proc/sys/net/ipv4/conf/all/accept_redirects")];
    for e in fs::read_dir("/proc/sys/net/ipv4/conf").into_iter().flatten().filter_map(|e| e.ok()) {
        paths.push(e.path().join("forwarding"));
    }
    paths.into_iter().filter_map(|p| Some((p.clone(), fs::read_to_string(&p).ok()?.trim().to_owned()))).collect()
}

/// Which of `dirs` exist now.
pub fn existing_dirs(dirs: &[&str]) -> BTreeSet<PathBuf> {
    dirs.iter().map(PathBuf::from).filter(|d| d.exists()).collect()
}

/// Network namespaces in /run/netns whose names start with one of `prefixes`.
fn netns_with(prefixes: &[&str]) -> BTreeSet<String> {
    fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| prefixes.iter().any(|p| n.starts_with(p)))
        .collect()
}

/// The host as it was, and who uses the record. Fields missing from a record (one written by
/// an older test binary sharing the file) read as empty.
#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HostState {
    /// Processes with live environments (see [`Shared`]).
    users: Vec<u32>,
    /// The forwarding sysctls (see [`forwarding_sysctls`]).
    sysctls: Vec<(PathBuf, String)>,
    /// Every iptables table and chain, as [`iptables::chains`] names them.
    chains: BTreeSet<String>,
    /// The runtime's network namespaces there were.
    netns: BTreeSet<String>,
    /// Which of the watched directories existed.
    dirs: BTreeSet<PathBuf>,
    /// What was watched (see [`Watch`]).
    watched_dirs: Vec<PathBuf>,
    nat_chains: Vec<String>,
    netns_prefixes: Vec<String>,
    /// The policies of the built-in chains, as [`iptables::policies`] names them (dockerd
    /// sets filter FORWARD to DROP).
    policies: Vec<(String, String)>,
    /// The watched chains (see [`Watch::chains`]) as `table/chain`.
    owned_chains: Vec<(String, String)>,
}

/// What giving the host back did.
#[derive(Debug, Default)]
pub struct GivenBack {
    /// What could not be given back.
    pub errors: Vec<String>,
    /// What was done, or seen and left alone (made meanwhile, maybe by other programs).
    pub notes: Vec<String>,
}

impl HostState {
    /// The host as it is now, watched as `watch` says; `dirs` are the watched directories
    /// that existed before the runtime first ran, if that was earlier than now.
    pub fn now(watch: &Watch, dirs: Option<BTreeSet<PathBuf>>) -> Self {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        Self {
            users: vec![],
            sysctls: forwarding_sysctls(),
            chains: iptables::chains(),
            netns: netns_with(watch.netns_prefixes),
            dirs: dirs.unwrap_or_else(|| existing_dirs(watch.dirs)),
            watched_dirs: watch.dirs.iter().map(PathBuf::from).collect(),
            nat_chains: strings(watch.nat_chains),
            netns_prefixes: strings(watch.netns_prefixes),
            policies: iptables::policies(),
            owned_chains: watch.chains.iter().map(|(t, c)| (t.to_string(), c.to_string())).collect(),
        }
    }

    /// Reads a record written by [`HostState::save`].
    pub fn read(path: &Path) -> Option<Self> {
        serde_json::from_slice(&fs::read(path).ok()?).ok()
    }

    /// Writes the record to `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec(self).expect("serialisable");
        fs::write(path, json).map_err(Error::io(format!("recording the host's state in {}", path.display())))
    }

    /// Gives the host back as it was (after every container, network and interface of the
    /// runtime is gone).
    pub fn give_back(&self) -> GivenBack {
        let mut done = GivenBack::default();
        self.give_back_forwarding(&mut done);
        // The runtime's top-level chains, if they were not there before and no rule (of
        // anybody) uses them now.
        let new = |c: &String| !self.chains.contains(&format!("ip/nat/{c}"));
        let in_use =
            self.nat_chains.first().is_some_and(|c| !iptables::rules_with("nat", &format!("-A {c} ")).is_empty());
        if self.nat_chains.iter().all(new) && !in_use {
            for c in &self.nat_chains {
                iptables::remove_chain("nat", c);
            }
        }
        // The watched chains the runtime made, then the policies it changed.
        for (table, chain) in self.owned_chains.iter().filter(|(t, c)| !self.chains.contains(&format!("ip/{t}/{c}"))) {
            iptables::remove_chain(table, chain);
        }
        for (chain, policy) in &self.policies {
            if iptables::policies().iter().any(|(c, p)| c == chain && p != policy) {
                match iptables::set_policy(chain, policy) {
                    Ok(()) => done.notes.push(format!("gave back the policy {policy} of {chain}")),
                    Err(e) => done.errors.push(e.to_string()),
                }
            }
        }
        // The nat tables iptables made for their rules (`ip6 nat` too), now empty: their
        // chains would keep connection tracking on for every flow of the host.
        let nat_before: BTreeSet<Family> =
            Family::ALL.into_iter().filter(|f| self.chains.contains(&format!("{}/nat", f.name()))).collect();
        if let Err(e) = nat_tables::remove_unused(&nat_before) {
            done.errors.push(e.to_string());
        }
        let still: Vec<String> = iptables::chains().into_iter().filter(|c| !self.chains.contains(c)).collect();
        if !still.is_empty() {
            // Not necessarily the runtime's: other programs may change them meanwhile.
            done.notes.push(format!("iptables tables and chains made meanwhile and still there: {still:?}"));
        }
        for d in self.watched_dirs.iter().filter(|d| d.exists() && !self.dirs.contains(*d)) {
            // Made by the runtime: nothing in them outlives its environments.
            if let Err(e) = fs::remove_dir_all(d) {
                done.errors.push(format!("{}: {e}", d.display()));
            }
        }
        let prefixes: Vec<&str> = self.netns_prefixes.iter().map(String::as_str).collect();
        let netns: Vec<String> = netns_with(&prefixes).into_iter().filter(|n| !self.netns.contains(n)).collect();
        if !netns.is_empty() {
            done.notes.push(format!("runtime network namespaces made meanwhile and still there: {netns:?}"));
        }
        done
    }

    /// Forwarding: only when ip_forward is not what it was (the bridge plugin writes it only
    /// when it is off), so values other programs set per interface meanwhile stay. Writing
    /// ip_forward sets every interface's `forwarding` (and all/accept_redirects) at once: each
    /// one recorded is put back, and interfaces made meanwhile (other programs', a
    /// benchmark's uplink) keep the value they had, which may have been set on purpose.
    fn give_back_forwarding(&self, done: &mut GivenBack) {
        let saved = self.sysctls.iter().find(|(p, _)| p == Path::new(IP_FORWARD)).map(|(_, v)| v.clone());
        let now = fs::read_to_string(IP_FORWARD).unwrap_or_default().trim().to_owned();
        let Some(saved) = saved.filter(|s| *s != now) else { return };
        let recorded: BTreeSet<&PathBuf> = self.sysctls.iter().map(|(p, _)| p).collect();
        let others: Vec<(PathBuf, String)> =
            forwarding_sysctls().into_iter().filter(|(p, _)| !recorded.contains(p)).collect();
        let mut written = 0;
        for (p, v) in self.sysctls.iter().chain(&others) {
            if fs::read_to_string(p).is_ok_and(|cur| cur.trim() != v) {
                match fs::write(p, v) {
                    Ok(()) => written += 1,
                    Err(e) => done.errors.push(format!("{} could not be set back to {v}: {e}", p.display())),
                }
            }
        }
        done.notes.push(format!("gave back net.ipv4.ip_forward {now} -> {saved} ({written} sysctls written)"));
    }
}

/// One record of the host shared by every process whose environments change it (the test
/// binaries of several worktrees run at once, and ip_forward is one value for the machine):
/// a file under an flock listing the processes using it. Whoever leaves last, or finds that
/// everyone else listed is dead (killed), gives the host back. Programs that do not use it
/// (a benchmark running meanwhile) are not coordinated with.
pub struct Shared {
    /// The record's file name prefix in the temporary directory.
    prefix: &'static str,
    watch: Watch,
    /// Live environments of this process.
    users: Mutex<usize>,
}

impl Shared {
    /// The record `TMP/PREFIXhost.json` (locked through `TMP/PREFIXhost.lock`) of a runtime
    /// watched as `watch`.
    pub const fn new(prefix: &'static str, watch: Watch) -> Self {
        Self { prefix, watch, users: Mutex::new(0) }
    }

    fn users(&self) -> std::sync::MutexGuard<'_, usize> {
        // Also after a panicking test poisoned it: tear-down must still run.
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the record under its lock (the file holds it while someone uses it).
    fn with<T>(&self, f: impl FnOnce(&mut Option<HostState>) -> T) -> Result<T> {
        use std::os::fd::AsRawFd as _;
        let tmp = std::env::temp_dir();
        let lock_path = tmp.join(format!("{}host.lock", self.prefix));
        let lock = fs::File::create(&lock_path).map_err(Error::io(format!("creating {}", lock_path.display())))?;
        // SAFETY: flock on a file descriptor this function owns; released when it is closed.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(Error::io("locking the host state")(std::io::Error::last_os_error()));
        }
        let path = tmp.join(format!("{}host.json", self.prefix));
        let mut state = HostState::read(&path);
        let r = f(&mut state);
        match &state {
            Some(s) => s.save(&path)?,
            None => {
                let _ = fs::remove_file(&path);
            }
        }
        Ok(r)
    }

    /// Registers an environment of this process; the first one registers the process (after
    /// giving back what killed processes recorded). `dirs`: the watched directories as they
    /// were before this process first ran the runtime. Returns what giving back did, if it did.
    pub fn acquire(&self, dirs: BTreeSet<PathBuf>) -> Result<Option<GivenBack>> {
        let mut users = self.users();
        let mut given = None;
        if *users == 0 {
            self.with(|state| {
                if let Some(s) = state.as_mut() {
                    s.users.retain(|p| alive(*p));
                    if s.users.is_empty() {
                        // Everyone who used it was killed: give back what they recorded.
                        given = Some(s.give_back());
                        *state = None;
                    }
                }
                let s = state.get_or_insert_with(|| HostState::now(&self.watch, Some(dirs)));
                s.users.push(std::process::id());
            })?;
        }
        *users += 1;
        Ok(given)
    }

    /// Unregisters an environment; with the process's last one, the process, and if it was the
    /// last process, gives the host back.
    pub fn release(&self) -> Result<GivenBack> {
        let mut users = self.users();
        *users = users.saturating_sub(1);
        if *users > 0 {
            return Ok(GivenBack::default());
        }
        self.with(|state| {
            let Some(s) = state.as_mut() else {
                return GivenBack { errors: vec!["the host state record is gone".to_owned()], notes: vec![] };
            };
            let me = std::process::id();
            s.users.retain(|p| *p != me && alive(*p));
            if !s.users.is_empty() {
                return GivenBack::default();
            }
            let done = s.give_back();
            *state = None;
            done
        })
    }
}
