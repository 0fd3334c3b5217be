//! `switch-cni`: the CNI plugin (see `switch::cni`). The runtime passes the command in the
//! environment and the network configuration on stdin; the result, or the spec's error JSON,
//! goes to stdout, with exit status 1 on error.
//!
//! Run with arguments and without `CNI_COMMAND` (no runtime passes arguments), it is a small
//! command line instead: `switch-cni install` / `uninstall` (see `switch::cni::install`).
use std::{
    io::{Read as _, Write as _},
    path::PathBuf,
    process::ExitCode,
};

use clap::{Parser, Subcommand};
use switch::cni::{
    self, CniError, Env,
    conflist::{Defaults, Subnet},
    install::{self, Action, ConfSource, Report},
};

fn main() -> ExitCode {
    if std::env::var_os("CNI_COMMAND").is_none() && std::env::args_os().len() > 1 {
        return command_line();
    }
    plugin()
}

/// One plugin invocation, as a runtime makes it.
fn plugin() -> ExitCode {
    let env = Env::from_process();
    let mut stdin = vec![];
    // Without a command there is nothing to read the configuration for (and someone running
    // it by hand is told at once, not left waiting on the terminal).
    let read = if env.command.is_empty() { Ok(0) } else { std::io::stdin().read_to_end(&mut stdin) };
    let outcome = match read {
        Err(e) => Err(CniError::new(cni::spec::Code::Decode, format!("reading stdin: {e}"))),
        Ok(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CniError::new(cni::spec::Code::TryAgain, format!("starting a runtime: {e}")))
            .and_then(|rt| rt.block_on(cni::run(&env, &stdin))),
    };
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(Some(result)) => {
            let _ = writeln!(out, "{result}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(out, "{}", e.to_json());
            ExitCode::FAILURE
        }
    }
}

/// switch-cni: the CNI plugin of the eBPF switch.
///
/// A container runtime runs it as a CNI plugin (CNI_COMMAND and the other CNI_* variables in
/// its environment, the network configuration on stdin): see docs/containers.md. Run by hand
/// with a command, it installs itself the way Kubernetes network plugins are installed (see
/// docs/kubernetes.md).
#[derive(Parser, Debug)]
#[command(name = "switch-cni", version)]
struct Cli {
    /// Print what was done as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Put switch-cni and switch into a plugin directory and write the network configuration.
    ///
    /// Copies this switch-cni and the switch binary next to it into BIN_DIR (switch-cni starts
    /// a userspace switch's process from the switch beside it), and writes the network
    /// configuration as CONF_DIR/10-switch.conflist (runtimes load the lexically first file of
    /// their conf directory): --conf FILE, checked (a conflist with a switch-cni plugin), or a
    /// default one made from --subnet and the options below it (host-local IPAM; the gateway is
    /// the first address of the range). Each file is replaced atomically (a temporary file
    /// beside it, synced, renamed over it): a runtime running the plugin meanwhile runs the old
    /// one or the new one, never half of it. Files that have the content already are left
    /// untouched: run it again and nothing changes.
    #[command(after_help = "Examples:\n  \
        switch-cni install --bin-dir /opt/cni/bin --conf-dir /etc/cni/net.d --subnet 10.244.1.0/24\n  \
        switch-cni install --bin-dir /opt/cni/bin --conf-dir /etc/cni/net.d \\\n      \
        --subnet 10.244.0.0/16 --range 10.244.1.0/24 --uplink eth0   # nodes on one segment (VXLAN)\n  \
        switch-cni install --bin-dir /opt/cni/bin --conf-dir /etc/cni/net.d --conf my.conflist")]
    #[command(group(clap::ArgGroup::new("configuration").required(true).args(["conf", "subnet"])))]
    Install {
        #[command(flatten)]
        dirs: Dirs,
        /// Install this conflist (it must have a plugin of type switch-cni) instead of the default.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["subnet", "range", "name", "switch", "uplink", "datapath", "mtu", "no_masquerade"])]
        conf: Option<PathBuf>,
        /// The pods' segment: the node's pod CIDR, or the cluster's when nodes share one segment.
        #[arg(long, value_name = "CIDR")]
        subnet: Option<Subnet>,
        /// The part of --subnet this node hands out (its pod CIDR) [default: all of --subnet].
        #[arg(long, value_name = "CIDR")]
        range: Option<Subnet>,
        /// The network's name (what runtimes call it).
        #[arg(long, value_name = "NAME", default_value = "switch")]
        name: String,
        /// The switch the pods are plugged into [default: the network's name].
        #[arg(long, value_name = "NAME")]
        switch: Option<String>,
        /// Where published ports (hostPort) answer; repeat for several.
        #[arg(long, value_name = "IFACE")]
        uplink: Vec<String>,
        /// The switch's datapath [default: tc].
        #[arg(long, value_parser = ["tc", "xdp", "userspace", "bridge"])]
        datapath: Option<String>,
        /// MTU of the pods' interfaces.
        #[arg(long)]
        mtu: Option<u32>,
        /// Do not masquerade the pods' traffic to the outside.
        #[arg(long)]
        no_masquerade: bool,
    },
    /// Remove what install put there: the configuration, then both binaries.
    ///
    /// A file is removed only if it is still the very file install wrote (install records
    /// each in .switch-cni.installed in its directory): a file someone else put at that name,
    /// or changed since, is left alone and reported, and so is everything else in the
    /// directories.
    #[command(after_help = "Example:\n  switch-cni uninstall --bin-dir /opt/cni/bin --conf-dir /etc/cni/net.d")]
    Uninstall {
        #[command(flatten)]
        dirs: Dirs,
    },
}

#[derive(clap::Args, Debug)]
struct Dirs {
    /// The runtime's CNI plugin directory (Kubernetes and containerd: /opt/cni/bin).
    #[arg(long, value_name = "DIR")]
    bin_dir: PathBuf,
    /// The runtime's CNI configuration directory (Kubernetes and containerd: /etc/cni/net.d).
    #[arg(long, value_name = "DIR")]
    conf_dir: PathBuf,
}

/// `switch-cni install|uninstall ...`: one error line on bad input (exit 2, nothing changed).
fn command_line() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return switch::edge::usage_error(e),
    };
    let (report, installing) = match cli.command {
        Command::Install { dirs, conf, subnet, range, name, switch, uplink, datapath, mtu, no_masquerade } => {
            let source = match (conf, subnet) {
                (Some(f), _) => ConfSource::File(f),
                (None, Some(subnet)) => ConfSource::Default(Defaults {
                    name,
                    switch,
                    subnet,
                    range,
                    uplinks: uplink,
                    datapath,
                    mtu,
                    masquerade: !no_masquerade,
                }),
                (None, None) => unreachable!("clap requires --conf or --subnet"),
            };
            (install::install(&dirs.bin_dir, &dirs.conf_dir, &source), true)
        }
        Command::Uninstall { dirs } => (install::uninstall(&dirs.bin_dir, &dirs.conf_dir), false),
    };
    match report {
        Ok(r) => {
            let text = if cli.json {
                serde_json::to_string_pretty(&r).expect("reports serialize")
            } else {
                text(&r, installing)
            };
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// The report for people: a line per file, and a last one when nothing changed.
fn text(r: &Report, installing: bool) -> String {
    let mut lines: Vec<String> = r
        .files
        .iter()
        .map(|f| {
            let (what, why) = match f.action {
                Action::Installed => ("installed", ""),
                Action::Replaced => ("replaced", ""),
                Action::Unchanged => ("unchanged", ""),
                Action::Removed => ("removed", ""),
                Action::Absent => ("absent", ""),
                Action::LeftAlone => ("kept", " (not the file install wrote: someone else's, or changed since)"),
            };
            format!("{what:<10} {}{why}", f.path.display())
        })
        .collect();
    if !r.changed {
        lines.push(if installing { "nothing changed: installed already" } else { "nothing changed" }.into());
    }
    lines.join("\n")
}
