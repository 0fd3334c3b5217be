//! Controller library of the switch: everything the `switch` binary does, as library calls.
//!
//! ```text
//!   main.rs, cli/         args (clap), commands/ (one do_<command> per family), output, signal
//!        │
//!        ▼
//!   controller/           one module per command family: switch (up/down/list/run), ns,
//!        │                link, forward, fdb, stats, tables, logs; port (ports of every kind:
//!        │                made, attached, torn down); intent (the convergence rule, sysctls)
//!        │
//!        ├──► state       /run/switch/state.json under a flock: switches, namespaces, one
//!        │                table of ports (namespace, adopted, gateway, uplink), forwards
//!        │
//!        ├──► datapath/   trait Datapath (+ capabilities PortForwarding, Tables, DatapathLog,
//!        │                DatapathEvents, DatapathCapture, Tunnels); settings (the `up`
//!        │                options only some datapaths take: --redirect, --busy-poll)
//!        │      ebpf/       tc and xdp: the switch object and ports (mod.rs), forwarding,
//!        │                  tunnel, tables, streams (log, events, capture); loader (load,
//!        │                  pin, attach), maps, nat (typed maps)
//!        │      userspace/  the tokio switch process: engine, control socket, daemon, runner
//!        │                  (`switch run`, foreground or daemon)
//!        │      bridge/     the Linux bridge over rtnetlink
//!        │
//!        └──► sys/        host (which host; state and pin roots), netns (setns on dedicated
//!                         threads), netlink, sysctl (and the ephemeral port range), cgroup,
//!                         ethtool, clock (the programs' clock), files, process, preflight;
//!                         `blocking` (running all of these off the async workers)
//!   bench/                the benchmark harness (contenders, tools, reports)
//!   cni/                  the CNI plugin (bin/switch-cni.rs): spec types, IPAM delegation,
//!                         ADD/DEL/CHECK on top of the controller
//!   kind.rs               DatapathKind and Capability: the leaf state, errors, the CLI and
//!                         the datapaths all name
//!   names.rs, error.rs    input parsing and interface names; the typed error
//! ```
//! Nothing below `controller/` imports it: `datapath/`, `sys/`, `state.rs` and `error.rs`
//! point down or sideways only, and `sys/` names nothing above it.
//! Forwarding itself happens in the kernel (crate `switch-ebpf`) or in the userspace
//! process; nothing here is on the eBPF packet path.
pub mod bench;
pub mod cni;
pub mod controller;
pub mod datapath;
pub mod error;
pub mod kind;
pub mod names;
pub mod state;
pub mod sys;

pub use error::{Error, Result};
