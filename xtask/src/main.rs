//! Developer tasks: `cargo xtask setup | build | demo | test`.
//!
//! `setup` makes a fresh machine of the project's kind ready, and is fast when it already is:
//! Debian packages the demo and tests use, bpffs mounted, the nightly toolchain with
//! `rust-src`, and a `bpf-linker` built against the nightly's own LLVM (see
//! ../shared/notes/toolchain.md for why it must be that LLVM).
use std::{
    env,
    ffi::OsStr,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Set-up, build, demo and test tasks for switch")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install everything the build, demo and tests need (idempotent).
    Setup,
    /// Set up, then build the workspace (the eBPF object is built by switch-user's build.rs).
    Build {
        /// Build with optimisations.
        #[arg(long)]
        release: bool,
    },
    /// Set up, build, and run `switch demo`.
    Demo,
    /// Set up, build (release), and run `switch bench` with these arguments (e.g. --quick,
    /// --markdown docs/benchmarks.md --svg docs/benchmarks.svg).
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build, check formatting and lints (rustfmt, clippy -D warnings), and run every
    /// test: unit tests and the integration tests on the real kernel (needs root).
    Test {
        /// Extra arguments for the test harness (after `--`), e.g. a test name filter.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Debian packages used by the demo and the tests (binary to look for, package).
const PACKAGES: &[(&str, &str)] = &[
    ("ping", "iputils-ping"),
    ("ip", "iproute2"),
    ("tcpdump", "tcpdump"),
    ("setpriv", "util-linux"),
    ("unshare", "util-linux"),
    ("python3", "python3"),
    ("iperf3", "iperf3"),
    ("sockperf", "sockperf"),
    ("trafgen", "netsniff-ng"),
    // Profiling a datapath under the benchmark's load (`perf record -a -g`; see
    // docs/benchmarking.md).
    ("perf", "linux-perf"),
    ("iptables", "iptables"),
    // Deleting the nat tables iptables leaves behind (container-env/src/nat_tables.rs).
    ("nft", "nftables"),
    ("ethtool", "ethtool"),
    // Container runtime tests (tests/tests/podman.rs, containerd.rs): podman with the CNI
    // backend, runc (crun fails on this machine kind's hybrid cgroups), and containerd with
    // its `ctr` client (the tests run a private daemon, never the packaged service).
    ("podman", "podman"),
    ("runc", "runc"),
    // Metrics tests (tests/tests/metrics.rs): scrape with curl (promtool: see `promtool`).
    ("curl", "curl"),
    ("containerd", "containerd"),
    ("ctr", "containerd"),
    // Builds k8s-cri (the CRI gRPC client of container-env's `cri` feature: the CRI tests and
    // the bench's CRI comparison): its build script compiles the CRI protobuf definitions.
    ("protoc", "protobuf-compiler"),
];

/// Debian packages that put nothing on PATH to look for, so dpkg is asked whether they are
/// installed: the reference CNI plugins (/usr/lib/cni: bridge, portmap, host-local) and the
/// static busybox whose root file system the podman tests import as their image (no
/// registry). A file would not do for busybox: the dynamic `busybox` package installs the same
/// /bin/busybox, and a dynamic binary does not run in an image without its libraries.
const PACKAGES_WITHOUT_BINARY: &[&str] = &["containernetworking-plugins", "busybox-static"];

/// bpf-linker release known to build against LLVM 22 here.
const BPF_LINKER_VERSION: &str = "0.13.0";

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Setup => setup(),
        Task::Build { release } => {
            setup()?;
            build(release)
        }
        Task::Demo => {
            setup()?;
            build(false)?;
            run(Command::new(workspace().join("target/debug/switch")).arg("demo"))
        }
        Task::Bench { args } => {
            setup()?;
            build(true)?;
            run(Command::new(workspace().join("target/release/switch")).arg("bench").args(args))
        }
        Task::Test { args } => {
            setup()?;
            build(false)?;
            lints()?;
            test(&args)
        }
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

fn cargo_home_bin() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn have(binary: &str) -> bool {
    env::var_os("PATH")
        .map(|p| {
            env::split_paths(&p)
                .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
                .any(|d| d.join(binary).is_file())
        })
        .unwrap_or(false)
}

/// Whether dpkg has `package` installed (not merely known, or removed with its configuration
/// left).
fn installed(package: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${db:Status-Status}", package]))
        .is_ok_and(|status| status == "installed")
}

fn setup() -> Result<()> {
    if !nix_is_root() {
        bail!("cargo xtask must run as root: it installs packages, mounts bpffs and the tests create namespaces");
    }
    packages()?;
    openvswitch()?;
    docker()?;
    promtool()?;
    bpffs()?;
    lint_tools()?;
    nightly()?;
    bpf_linker()?;
    Ok(())
}

fn nix_is_root() -> bool {
    output(Command::new("id").arg("-u")).map(|s| s.trim() == "0").unwrap_or(false)
}

fn packages() -> Result<()> {
    let mut missing: Vec<&str> = PACKAGES.iter().filter(|(bin, _)| !have(bin)).map(|(_, pkg)| *pkg).collect();
    missing.dedup();
    missing.extend(PACKAGES_WITHOUT_BINARY.iter().filter(|pkg| !installed(pkg)));
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    apt_install(&missing)
}

/// `apt-get install PACKAGES` (no recommends), after an `apt-get update` if the first try fails
/// (a fresh machine's lists are empty or stale).
fn apt_install(packages: &[&str]) -> Result<()> {
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        run(Command::new("apt-get").args(["update", "-q"]))?;
        if !install() {
            bail!("apt-get install {} failed", packages.join(" "));
        }
    }
    Ok(())
}

/// Open vSwitch, the userspace datapath `switch bench` measures the userspace engine against
/// (its `ovs` contender runs private daemons of its own).
const OVS_PACKAGE: &str = "openvswitch-switch";
/// Docker 20.10, which the Docker driver's tests (tests/tests/docker.rs) run as a private
/// dockerd of their own, never as the packaged service.
const DOCKER_PACKAGE: &str = "docker.io";
/// Debian's hook that tells maintainer scripts (through invoke-rc.d) whether they may start
/// services: exit status 101 forbids it.
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";
/// Marks a policy-rc.d as setup's own, so that one left by an interrupted setup is removed.
const POLICY_MARK: &str = "# cargo xtask setup: no services start while it installs";

/// Installs `openvswitch-switch` without starting its service: the package's postinst would
/// start ovsdb-server and ovs-vswitchd with the system database (on a machine without systemd,
/// through /etc/init.d), which a benchmark tool has no business leaving on a host.
fn openvswitch() -> Result<()> {
    without_services(OVS_PACKAGE, &["ovsdb-server", "ovs-vswitchd"], "/etc/init.d/openvswitch-switch stop")
}

/// Installs `docker.io` without starting dockerd (the same reasons as Open vSwitch's).
fn docker() -> Result<()> {
    without_services(DOCKER_PACKAGE, &["dockerd"], "/etc/init.d/docker stop")
}

/// Installs `package` without starting its services: a policy-rc.d that forbids every start
/// is in place for this install only (setup's own, removed afterwards; one that was there
/// before is left as it was), and setup fails if one of `daemons` runs afterwards all the
/// same (`stop` says how to stop them).
fn without_services(package: &str, daemons: &[&str], stop: &str) -> Result<()> {
    let ours = || fs::read_to_string(POLICY_RC_D).is_ok_and(|s| s.contains(POLICY_MARK));
    if ours() {
        // Left by a setup that was interrupted during the install.
        fs::remove_file(POLICY_RC_D).with_context(|| format!("removing {POLICY_RC_D}"))?;
    }
    if installed(package) {
        return Ok(());
    }
    let running = daemons_named(daemons);
    eprintln!("xtask: installing {package} (its service is not started)");
    let created = !Path::new(POLICY_RC_D).exists();
    if created {
        use std::os::unix::fs::PermissionsExt as _;
        fs::write(POLICY_RC_D, format!("#!/bin/sh\n{POLICY_MARK} {package}\nexit 101\n"))
            .with_context(|| format!("writing {POLICY_RC_D}"))?;
        fs::set_permissions(POLICY_RC_D, fs::Permissions::from_mode(0o755))?;
    }
    let installed = apt_install(&[package]);
    if created {
        fs::remove_file(POLICY_RC_D).with_context(|| format!("removing {POLICY_RC_D}"))?;
    }
    installed?;
    let started: Vec<String> = daemons_named(daemons).into_iter().filter(|d| !running.contains(d)).collect();
    if !started.is_empty() {
        bail!(
            "installing {package} started {} although policy-rc.d forbade it; stop them with '{stop}'",
            started.join(", ")
        );
    }
    Ok(())
}

/// Processes on the host whose name is one of `names` (`pid name`).
fn daemons_named(names: &[&str]) -> Vec<String> {
    let Ok(dir) = fs::read_dir("/proc") else { return vec![] };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            let comm = fs::read_to_string(e.path().join("comm")).ok()?;
            let comm = comm.trim();
            names.contains(&comm).then(|| format!("{pid} {comm}"))
        })
        .collect()
}

/// Where setup puts `promtool`, which the metrics tests check the exposition format with.
fn promtool_path() -> PathBuf {
    workspace().join("target/tools/promtool")
}

/// `promtool`, taken out of Debian's `prometheus` package without installing it: installing
/// the package would also install (and on a machine with systemd, start) a Prometheus server
/// listening on every address, which a test tool has no business leaving on a host.
fn promtool() -> Result<()> {
    let dest = promtool_path();
    if dest.is_file() {
        return Ok(());
    }
    eprintln!("xtask: extracting promtool from the prometheus package into {}", dest.display());
    let dir = workspace().join("target/tools/prometheus-deb");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).context("creating target/tools")?;
    let download = || Command::new("apt-get").current_dir(&dir).args(["download", "-q", "prometheus"]).status();
    if !download().is_ok_and(|s| s.success()) {
        run(Command::new("apt-get").args(["update", "-q"]))?;
        if !download().is_ok_and(|s| s.success()) {
            bail!("apt-get download prometheus failed");
        }
    }
    let deb = fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("apt-get download left no .deb")?;
    run(Command::new("dpkg-deb").args([OsStr::new("-x"), deb.as_os_str(), dir.join("root").as_os_str()]))?;
    fs::rename(dir.join("root/usr/bin/promtool"), &dest).context("the prometheus package has no usr/bin/promtool")?;
    fs::remove_dir_all(&dir).context("removing the unpacked package")?;
    Ok(())
}

/// The controller pins maps and links in bpffs; mount it where the kernel expects it.
fn bpffs() -> Result<()> {
    let mounts = fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.split_whitespace().nth(2) == Some("bpf"))
    {
        return Ok(());
    }
    eprintln!("xtask: mounting bpffs at /sys/fs/bpf");
    run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
}

fn nightly() -> Result<()> {
    let components =
        output(Command::new("rustup").args(["component", "list", "--installed", "--toolchain", "nightly"]));
    match components {
        Ok(list) if list.lines().any(|l| l.starts_with("rust-src")) => Ok(()),
        Ok(_) => {
            eprintln!("xtask: adding rust-src to the nightly toolchain");
            run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
        }
        Err(_) => {
            eprintln!("xtask: installing the nightly toolchain with rust-src");
            run(Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
                "--component",
                "rust-src",
            ]))
        }
    }
}

/// Builds bpf-linker against the nightly's libLLVM when it is missing or was built for
/// another LLVM (a stamp file next to the binary records which).
fn bpf_linker() -> Result<()> {
    let verbose = output(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let llvm = verbose
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .context("rustc +nightly -vV prints no LLVM version")?
        .trim()
        .to_owned();
    let bin = cargo_home_bin();
    let stamp = bin.join(".bpf-linker-llvm-version");
    if bin.join("bpf-linker").is_file() && fs::read_to_string(&stamp).ok().as_deref() == Some(llvm.as_str()) {
        return Ok(());
    }
    let major = llvm.split('.').next().unwrap_or_default().to_owned();
    let sysroot = PathBuf::from(output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?.trim());
    let libdir = sysroot.join("lib");
    let lib = fs::read_dir(&libdir)
        .with_context(|| format!("reading {}", libdir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with(&format!("libLLVM.so.{major}")))
        .with_context(|| format!("no libLLVM.so.{major}* in {}", libdir.display()))?;
    // A prefix whose lib/ has both the generic name (for linking) and the soname. bpf-linker
    // records the prefix's lib/ as its RUNPATH, so the prefix lives beside the binary and must
    // stay: the linker loads libLLVM through it at run time, outside rustup's library path.
    let prefix = bin.join(".bpf-linker-llvm");
    fs::create_dir_all(prefix.join("lib"))?;
    for name in ["libLLVM.so", lib.as_str()] {
        let link = prefix.join("lib").join(name);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(libdir.join(&lib), &link).with_context(|| format!("linking {}", link.display()))?;
    }
    eprintln!("xtask: building bpf-linker {BPF_LINKER_VERSION} against LLVM {llvm} (about a minute)");
    run(Command::new("cargo")
        .args([
            "install",
            "--force",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
        ])
        .arg(format!("llvm-{major}"))
        .env("LLVM_PREFIX", &prefix))?;
    fs::write(&stamp, &llvm)?;
    Ok(())
}

fn build(release: bool) -> Result<()> {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace()).args(["build", "--all-targets"]);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)
}

/// rustfmt and clippy for the default toolchain, which the lints run with.
fn lint_tools() -> Result<()> {
    let missing: Vec<&str> = [("fmt", "rustfmt"), ("clippy", "clippy")]
        .into_iter()
        .filter(|(sub, _)| !Command::new("cargo").args([*sub, "--version"]).output().is_ok_and(|o| o.status.success()))
        .map(|(_, component)| component)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: adding {} to the default toolchain", missing.join(" and "));
    run(Command::new("rustup").args(["component", "add"]).args(&missing))
}

/// The lints the project keeps: formatting of every crate (the eBPF one too) and clippy on
/// every target with warnings as errors.
fn lints() -> Result<()> {
    let ws = workspace();
    run(Command::new("cargo").current_dir(&ws).args(["fmt", "--all", "--check"]))?;
    run(Command::new("cargo").current_dir(&ws).args(["clippy", "--all-targets", "--", "-D", "warnings"]))
}

fn test(args: &[String]) -> Result<()> {
    let ws = workspace();
    let bin = ws.join("target/debug/switch");
    run(Command::new("cargo")
        .current_dir(&ws)
        .args(["test", "--no-fail-fast", "--", "--include-ignored"])
        .args(args)
        .env("SWITCH_BIN", &bin)
        .env("SWITCH_PROMTOOL", promtool_path()))
}
