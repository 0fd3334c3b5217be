//! CNI contenders: the time a runtime waits for a plugin's ADD (and DEL), `switch-cni`
//! against the reference `bridge` plugin, both with `host-local` for addresses, into
//! namespaces made as a runtime makes them (`ip netns add`). No runtime is involved: this
//! measures the plugins alone, one process per call, as podman or containerd run them.
use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use indicatif::ProgressBar;
use serde_json::json;
use tokio::io::AsyncWriteExt as _;

use super::{
    Comparison, Options, Series,
    report::{MetricReport, median},
    run_quiet,
};
use crate::error::{Error, Result};

/// Where the reference plugins are (Debian's containernetworking-plugins).
const REFERENCE_DIR: &str = "/usr/lib/cni";
/// The contenders (the second is the baseline).
const CONTENDERS: [&str; 2] = ["switch-cni", "bridge-cni"];
/// ADDs per round (each into its own namespace).
pub const ADDS: usize = 10;

/// One plugin under test.
pub struct Plugin {
    /// Contender name in reports.
    pub name: &'static str,
    binary: PathBuf,
    conf: serde_json::Value,
    data_dir: PathBuf,
    ns_prefix: String,
}

/// The two contenders: `switch-cni` (next to this binary) and the `bridge` plugin
/// (`bridge-cni`), the baseline.
pub fn contenders() -> Result<[Plugin; 2]> {
    let exe = std::env::current_exe().map_err(|e| Error::Command(format!("finding the switch binary: {e}")))?;
    let ipam = |n: u8, dir: &PathBuf| {
        json!({
            "type": "host-local",
            "dataDir": dir,
            "ranges": [[{ "subnet": format!("10.203.{n}.0/24"), "gateway": format!("10.203.{n}.1") }]],
        })
    };
    let dir = |name: &str| std::env::temp_dir().join(format!("switch-bench-{name}"));
    let (ours, theirs) = (dir("switch-cni"), dir("bridge-cni"));
    Ok([
        Plugin {
            name: "switch-cni",
            binary: exe.with_file_name("switch-cni"),
            conf: json!({
                "cniVersion": "1.0.0", "name": "benchcni", "type": "switch-cni", "switch": "benchcni",
                "ipam": ipam(1, &ours),
            }),
            data_dir: ours,
            ns_prefix: "benchcs".into(),
        },
        Plugin {
            name: "bridge-cni",
            binary: PathBuf::from(REFERENCE_DIR).join("bridge"),
            // isGateway would turn on IPv4 forwarding host-wide: without it the bridge plugin
            // does no more per container than switch-cni (which sets its gateway up once).
            conf: json!({
                "cniVersion": "1.0.0", "name": "benchbr", "type": "bridge", "bridge": "benchcnibr",
                "ipam": ipam(2, &theirs),
            }),
            data_dir: theirs,
            ns_prefix: "benchcb".into(),
        },
    ])
}

/// ADD (or DEL) of container `i` into its namespace; how long the plugin took.
async fn call(p: &Plugin, command: &str, i: usize) -> Result<Duration> {
    let ns = format!("{}{i}", p.ns_prefix);
    let netns = format!("/run/netns/{ns}");
    let id = format!("{ns}-id");
    let start = Instant::now();
    let mut child = tokio::process::Command::new(&p.binary)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &id)
        .env("CNI_NETNS", &netns)
        .env("CNI_IFNAME", "eth0")
        .env(
            "CNI_PATH",
            format!("{}:{REFERENCE_DIR}", p.binary.parent().map(|d| d.display().to_string()).unwrap_or_default()),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Command(format!("running {}: {e}", p.binary.display())))?;
    let mut stdin = child.stdin.take().expect("piped");
    stdin.write_all(p.conf.to_string().as_bytes()).await.map_err(|e| Error::Command(format!("{}: {e}", p.name)))?;
    drop(stdin);
    let out = child.wait_with_output().await.map_err(|e| Error::Command(format!("{}: {e}", p.name)))?;
    let took = start.elapsed();
    if !out.status.success() {
        return Err(Error::Command(format!(
            "{} {command} failed: {}",
            p.name,
            String::from_utf8_lossy(&out.stdout).trim()
        )));
    }
    Ok(took)
}

/// The CNI comparison.
pub struct Cni;

#[async_trait::async_trait]
impl Comparison for Cni {
    fn contenders(&self) -> Vec<&'static str> {
        CONTENDERS.to_vec()
    }

    fn steps(&self, opts: &Options) -> usize {
        opts.rounds * CONTENDERS.len() + CONTENDERS.len()
    }

    async fn run(&self, opts: &Options, bar: &ProgressBar) -> Result<Vec<MetricReport>> {
        measure(opts, bar).await
    }

    async fn remove(&self) {
        for p in contenders().into_iter().flatten() {
            remove(&p).await;
        }
    }
}

/// CNI plugins: ADD and DEL one after another (median of 10 per round) and 10 ADDs at once
/// (wall time), switch-cni against the bridge plugin, interleaved per round. A plugin that is
/// not installed (the bridge plugin comes with containernetworking-plugins) is not measured.
async fn measure(opts: &Options, bar: &ProgressBar) -> Result<Vec<MetricReport>> {
    let plugins = contenders()?;
    let mut add = vec![Series::default(), Series::default()];
    let mut del = vec![Series::default(), Series::default()];
    let mut parallel = vec![Series::default(), Series::default()];
    for (i, p) in plugins.iter().enumerate() {
        bar.set_message(format!("CNI: bringing up {}'s network", p.name));
        remove(p).await;
        if let Err(e) = warm_up(p).await {
            for s in [&mut add[i], &mut del[i], &mut parallel[i]] {
                s.record(Err(Error::Command(e.to_string())), p.name, bar);
            }
        }
        bar.inc(1);
    }
    for round in 1..=opts.rounds {
        for (i, p) in plugins.iter().enumerate() {
            bar.set_message(format!("round {round}/{}: CNI ADD/DEL of {}", opts.rounds, p.name));
            if add[i].error.is_none() {
                match self::round(p).await {
                    Ok((a, d, w)) => {
                        add[i].values.push(a);
                        del[i].values.push(d);
                        parallel[i].values.push(w);
                    }
                    Err(e) => {
                        for s in [&mut add[i], &mut del[i], &mut parallel[i]] {
                            s.record(Err(Error::Command(e.to_string())), p.name, bar);
                        }
                    }
                }
            }
            bar.inc(1);
        }
    }
    for p in &plugins {
        remove(p).await;
    }
    let rows = |s: Vec<Series>| plugins.iter().map(|p| p.name.to_owned()).zip(s).collect::<Vec<_>>();
    let baseline = [CONTENDERS[1]];
    Ok(vec![
        MetricReport::new(
            "cni_add",
            &format!("CNI ADD, one at a time (median of {} per round; host-local IPAM)", ADDS),
            "ms",
            false,
            "",
            &baseline,
            rows(add),
        ),
        MetricReport::new(
            "cni_del",
            "CNI DEL, one at a time (median per round)",
            "ms",
            false,
            "",
            &baseline,
            rows(del),
        ),
        MetricReport::new(
            "cni_add_parallel",
            &format!("{} CNI ADDs at once (wall time)", ADDS),
            "ms",
            false,
            "",
            &baseline,
            rows(parallel),
        ),
    ])
}

/// One round: `ADDS` ADDs one after another, then as many DELs, then `ADDS` ADDs at once
/// and DELs at once. Returns (median ADD ms, median DEL ms, wall ms of the parallel ADDs).
pub async fn round(p: &Plugin) -> Result<(f64, f64, f64)> {
    for i in 0..ADDS {
        run_quiet("ip", &["netns", "add", &format!("{}{i}", p.ns_prefix)]).await?;
    }
    let measured = async {
        let (mut adds, mut dels) = (vec![], vec![]);
        for i in 0..ADDS {
            adds.push(call(p, "ADD", i).await?.as_secs_f64() * 1e3);
        }
        for i in 0..ADDS {
            dels.push(call(p, "DEL", i).await?.as_secs_f64() * 1e3);
        }
        let start = Instant::now();
        let parallel = futures::future::join_all((0..ADDS).map(|i| call(p, "ADD", i))).await;
        let wall = start.elapsed().as_secs_f64() * 1e3;
        for r in parallel {
            r?;
        }
        futures::future::join_all((0..ADDS).map(|i| call(p, "DEL", i)))
            .await
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        Ok::<_, Error>((median(&adds), median(&dels), wall))
    }
    .await;
    for i in 0..ADDS {
        let _ = run_quiet("ip", &["netns", "del", &format!("{}{i}", p.ns_prefix)]).await;
    }
    measured
}

/// Brings the plugin's network up with one untimed ADD and DEL (the switch's programs load,
/// the bridge is made), so rounds measure a container's ADD, not the network's.
pub async fn warm_up(p: &Plugin) -> Result<()> {
    let ns = format!("{}0", p.ns_prefix);
    run_quiet("ip", &["netns", "add", &ns]).await?;
    let warmed = async {
        call(p, "ADD", 0).await?;
        call(p, "DEL", 0).await
    }
    .await;
    let _ = run_quiet("ip", &["netns", "del", &ns]).await;
    warmed.map(|_| ())
}

/// Removes what the CNI contenders made: namespaces, the switch, the bridge, IPAM state.
pub async fn remove(p: &Plugin) {
    for i in 0..ADDS {
        let _ = run_quiet("ip", &["netns", "del", &format!("{}{i}", p.ns_prefix)]).await;
    }
    let _ = crate::controller::switch::down("benchcni").await;
    let _ = run_quiet("ip", &["link", "del", "benchcnibr"]).await;
    let _ = std::fs::remove_dir_all(&p.data_dir);
}
