//! CRI contenders: pods made the way kubelet makes them, through containerd's CRI plugin, on
//! switch-cni against the bridge plugin (both with host-local), under one containerd: how long
//! RunPodSandbox takes until the pod answers a ping from the host.
//!
//! The environment is this run's own: a containerd environment of the container-env crate
//! with the CRI plugin on (the CRI tests' environment: its daemon, CNI directories and a
//! sandbox image of its own), in a directory of fixed name so that `switch bench`'s clean-up
//! finds what a killed run left. The CRI plugin loads one network, the first conflist of its
//! conf dir: each contender's turn replaces it (the plugin reloads on the change; an untimed
//! warm-up pod checks it got an address of the right network). The host-wide state the bridge
//! plugin changes (ip_forward, its masquerade rules) is recorded before and given back after.
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use container_env::{
    cni,
    command::wait_until,
    containerd::{self, Env},
    cri::{Client, Pod},
    host::{HostState, Watch},
    ledger::{Owned, own},
};
use indicatif::ProgressBar;

use super::{Comparison, Options, Series, podman::percentile, report::MetricReport};
use crate::error::{Error, Result};

/// The contenders, in the order they are measured in each round; the second is the baseline.
pub const CONTENDERS: [&str; 2] = ["cri-switch-cni", "cri-bridge"];
/// `--only` name for both.
pub const ALIAS: &str = "cri";
/// The baseline.
pub const BASELINE: &str = CONTENDERS[1];

/// The sandbox image of every pod.
const PAUSE_IMAGE: &str = "localhost/switch-bench-pause:latest";
/// The pods' parent cgroup (found again after a killed run).
const CGROUP: &str = "switchbenchcri";
/// The host record of the run, in its directory.
const HOST_RECORD: &str = "host.json";

/// What the bridge plugin changes on the host (ip_forward; its masquerade rules go with its
/// DEL, or with the ledger's network entry). The built-in directories containerd and libcni
/// make are removed only if empty (other runtimes may use them meanwhile).
const WATCH: Watch = Watch { dirs: &[], nat_chains: &[], netns_prefixes: &["cni-"], chains: &[] };

/// The CRI comparison.
pub struct Cri;

#[async_trait::async_trait]
impl Comparison for Cri {
    fn contenders(&self) -> Vec<&'static str> {
        CONTENDERS.to_vec()
    }

    fn alias(&self) -> Option<&'static str> {
        Some(ALIAS)
    }

    fn steps(&self, opts: &Options) -> usize {
        opts.rounds * CONTENDERS.len() + 2
    }

    /// Never fails: what fails is reported as not measured.
    async fn run(&self, opts: &Options, bar: &ProgressBar) -> Result<Vec<MetricReport>> {
        let (rounds, starts, b) = (opts.rounds, opts.pod_starts, bar.clone());
        bar.set_message("cri: setting up containerd with its CRI plugin");
        let measured = crate::sys::blocking(move || measure(rounds, starts, &b)).await;
        remove().await;
        bar.inc(1);
        let series = measured.unwrap_or_else(|e| {
            bar.println(format!("cri: not measured: {e}"));
            let failed = Series { error: Some(e.to_string()), ..Series::default() };
            vec![vec![failed; CONTENDERS.len()]; 2]
        });
        let titles = [
            format!(
                "CRI RunPodSandbox until the pod answers a ping from the host, p50 of {starts} pods one after another"
            ),
            format!("The same, p99 of {starts} pods"),
        ];
        let ids = ["cri_pod_p50", "cri_pod_p99"];
        Ok(ids
            .iter()
            .zip(titles)
            .zip(series)
            .map(|((id, title), s)| {
                let rows = CONTENDERS.iter().map(|c| c.to_string()).zip(s).collect();
                MetricReport::new(id, &title, "ms", false, "", &[BASELINE], rows)
            })
            .collect())
    }

    async fn remove(&self) {
        remove().await;
    }
}

/// The run's directory (fixed, so a later run's clean-up finds what a killed one left).
fn dir() -> PathBuf {
    std::env::temp_dir().join("switch-bench-cri")
}

/// One contender's network, numbered `n` (pods on 10.145.N.0/24).
struct Net {
    n: u8,
    switch_cni: bool,
}

impl Net {
    fn name(&self) -> String {
        format!("benchcri{}", self.n)
    }
    fn subnet_prefix(&self) -> String {
        format!("10.145.{}.", self.n)
    }
    /// Its conflist: switch-cni, or the bridge plugin as containerd's own example sets it up
    /// for a node (gateway, masquerade).
    fn conflist(&self, ipam_dir: &Path) -> serde_json::Value {
        let (subnet, gw) = (format!("{}0/24", self.subnet_prefix()), format!("{}1", self.subnet_prefix()));
        let ipam = cni::host_local(ipam_dir, &subnet, &gw);
        let plugin = if self.switch_cni {
            serde_json::json!({"type": "switch-cni", "switch": self.name(), "ipam": ipam})
        } else {
            let bridge = format!("benchcribr{}", self.n);
            serde_json::json!({"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": true, "ipam": ipam})
        };
        let mut c = cni::conflist(&self.name(), serde_json::json!([plugin]));
        c["cniVersion"] = "1.0.0".into();
        c
    }
}

fn nets() -> [Net; 2] {
    [Net { n: 2, switch_cni: true }, Net { n: 1, switch_cni: false }]
}

fn err(e: container_env::Error) -> Error {
    Error::Command(e.to_string())
}

/// Sets up, measures every round and removes the pods (blocking: runs on its own thread).
/// Samples by metric (p50, p99), then by contender.
fn measure(rounds: usize, starts: usize, bar: &ProgressBar) -> Result<Vec<Vec<Series>>> {
    let (mut env, mut client) = setup()?;
    bar.inc(1);
    let mut s = vec![vec![Series::default(); CONTENDERS.len()]; 2];
    for round in 1..=rounds {
        for (i, net) in nets().iter().enumerate() {
            bar.set_message(format!("round {round}/{rounds}: {starts} CRI pods on {}", CONTENDERS[i]));
            if s[0][i].error.is_none() {
                let r = use_network(&env, &mut client, net).and_then(|()| starts_on(&env, &mut client, net, starts));
                let p = |q| r.as_ref().map(|ms| percentile(ms, q)).map_err(|e| Error::Command(e.to_string()));
                s[0][i].record(p(50.0), CONTENDERS[i], bar);
                s[1][i].record(p(99.0), CONTENDERS[i], bar);
            }
            bar.inc(1);
        }
    }
    remove_pods(&mut client);
    drop(client);
    env.stop();
    Ok(s)
}

/// The environment, its daemon started, the pause image imported, the client connected.
fn setup() -> Result<(Env, Client)> {
    remove_blocking();
    let exe = std::env::current_exe().map_err(|e| Error::Command(format!("finding the switch binary: {e}")))?;
    let dir = dir();
    let mut env = Env::create_cri(&dir, CGROUP, PAUSE_IMAGE).map_err(err)?;
    HostState::now(&WATCH, None).save(&dir.join(HOST_RECORD)).map_err(err)?;
    for net in nets() {
        if net.switch_cni {
            own(&dir, Owned::Switch, &net.name()).map_err(err)?;
        } else {
            own(&dir, Owned::Network, &net.name()).map_err(err)?;
            own(&dir, Owned::Link, &format!("benchcribr{}", net.n)).map_err(err)?;
        }
    }
    let plugin = exe.with_file_name("switch-cni");
    env.add_plugin(&plugin, false).map_err(err)?;
    for p in ["host-local", "loopback", "bridge"] {
        env.add_plugin(&Path::new("/usr/lib/cni").join(p), false).map_err(err)?;
    }
    env.start().map_err(err)?;
    env.import_pause(PAUSE_IMAGE).map_err(err)?;
    let mut client = None;
    wait_until(Duration::from_secs(15), || {
        client = Client::connect(&env.socket()).and_then(|mut c| c.version().map(|_| c)).ok();
        client.is_some()
    });
    let client = client.ok_or_else(|| Error::Command("containerd's CRI plugin does not answer".into()))?;
    Ok((env, client))
}

/// Makes `net` the CRI plugin's network: its conflist alone in the conf dir, then an untimed
/// warm-up pod until one gets an address of `net` (the plugin reloads its configuration on
/// the change; the switch's programs load on the first ADD).
fn use_network(env: &Env, client: &mut Client, net: &Net) -> Result<()> {
    let net_d = env.net_d();
    let conf = net.conflist(&env.dir().join("ipam"));
    // Written in place, not renamed into the directory: containerd 1.6's CRI plugin reloads
    // on a write or a removal in its conf dir and ignores a file that only appears there.
    std::fs::write(net_d.join("10-bench.conflist"), conf.to_string())
        .map_err(|e| Error::Command(format!("writing {}'s conflist: {e}", net.name())))?;
    // Not ready before the first configuration is loaded: a pod would fail (and keep its
    // network namespace until a later stop).
    wait_until(Duration::from_secs(10), || client.network_ready().unwrap_or(false));
    let mut last = String::new();
    for attempt in 0..50 {
        let (id, ip) = run_pod(env, client, &format!("warm{}-{attempt}", net.n))?;
        client.stop_pod(&id).and_then(|()| client.remove_pod(&id)).map_err(err)?;
        if ip.starts_with(&net.subnet_prefix()) {
            return Ok(());
        }
        last = ip;
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(Error::Command(format!("the CRI plugin does not use {}'s configuration (pods get {last})", net.name())))
}

/// RunPodSandbox and PodSandboxStatus of pod `name`: its ID and address.
fn run_pod(env: &Env, client: &mut Client, name: &str) -> Result<(String, String)> {
    let pod = Pod {
        namespace: "bench".into(),
        name: name.into(),
        uid: format!("bench-{name}"),
        ports: vec![],
        cgroup_parent: format!("/{CGROUP}"),
        log_directory: env.dir().join("logs"),
    };
    let id = client.run_pod(&pod.config()).map_err(err)?;
    let (_, ip) = client.pod_status(&id).map_err(err)?;
    Ok((id, ip))
}

/// `starts` pods one after another on `net`, each timed from RunPodSandbox to the first ping
/// from the host it answers (pinged every 10 ms once PodSandboxStatus gave the address);
/// stopped and removed afterwards, untimed. Each start's time in ms.
fn starts_on(env: &Env, client: &mut Client, net: &Net, starts: usize) -> Result<Vec<f64>> {
    let mut ms = vec![];
    let mut pods = vec![];
    let measured = (|| {
        for i in 0..starts {
            let start = Instant::now();
            let (id, ip) = run_pod(env, client, &format!("p{}-{i}", net.n))?;
            pods.push(id);
            let ping = std::process::Command::new("ping")
                .args(["-n", "-q", "-c", "1", "-i", "0.01", "-w", "10", &ip])
                .output();
            if !ping.is_ok_and(|o| o.status.success()) {
                return Err(Error::Command(format!("pod {i} ({ip}) did not answer a ping within 10 s")));
            }
            ms.push(start.elapsed().as_secs_f64() * 1e3);
        }
        Ok(())
    })();
    for id in pods {
        client.stop_pod(&id).and_then(|()| client.remove_pod(&id)).map_err(err)?;
    }
    measured.map(|()| ms)
}

/// Stops and removes every pod the plugin still has.
fn remove_pods(client: &mut Client) {
    for id in client.pods().unwrap_or_default() {
        let _ = client.stop_pod(&id).and_then(|()| client.remove_pod(&id));
    }
}

/// Removes the environment (this run's or a killed one's): daemon, shims, pods, the switch,
/// the bridge and its rules, libcni's cached results, the directory; gives the host back as
/// recorded. Nothing there is fine.
fn remove_blocking() {
    let Ok(exe) = std::env::current_exe() else { return };
    let dir = dir();
    let host = HostState::read(&dir.join(HOST_RECORD));
    for net in nets() {
        for f in containerd::cached_results(&net.name()) {
            let _ = std::fs::remove_file(f);
        }
    }
    containerd::remove_at(&dir, &exe);
    containerd::remove_builtin_dirs(&std::collections::BTreeSet::new());
    if let Some(host) = host {
        host.give_back();
    }
}

/// [`remove_blocking`] off the async workers.
pub async fn remove() {
    let _ = tokio::task::spawn_blocking(remove_blocking).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_networks_conflists() {
        let [ours, theirs] = nets();
        let (ours, theirs) = (ours.conflist(Path::new("/x")), theirs.conflist(Path::new("/x")));
        assert_eq!(ours["plugins"][0]["type"], "switch-cni");
        assert_eq!(theirs["plugins"][0]["type"], "bridge");
        assert_eq!(theirs["plugins"][0]["isGateway"], true);
        // Distinct networks, subnets and names: a pod's address tells which one it is on.
        assert_ne!(ours["name"], theirs["name"]);
        let subnet = |c: &serde_json::Value| c["plugins"][0]["ipam"]["ranges"][0][0]["subnet"].clone();
        assert_eq!((subnet(&ours), subnet(&theirs)), ("10.145.2.0/24".into(), "10.145.1.0/24".into()));
    }
}
