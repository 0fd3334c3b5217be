//! Controller library of the switch: everything the `switch` binary does, as library calls.
//!
//! ```text
//!   main.rs, cli/         args (clap), commands/ (one do_<command> per family), output, signal
//!        │
//!        ▼
//!   controller/           one module per command family: switch (up/down/list/run), ns,
//!        │                link, forward, fdb, peer, stats, tables, metrics, logs, monitor,
//!        │                capture; port (ports of every kind: made, attached, torn down);
//!        │                intent (the convergence rule, sysctls); readers (the streams'
//!        │                readers of logs, monitor and capture)
//!        │
//!        ├──► state       /run/switch/state.json under a flock: switches, namespaces, one
//!        │                table of ports (namespace, adopted, gateway, uplink, tunnel), forwards
//!        │
//!        ├──► datapath/   trait Datapath and the capabilities a datapath may lack (port
//!        │                forwarding, table counters, log, events, capture, tunnel)
//!        │      ebpf/       tc and xdp: load, pin and attach the programs; typed maps
//!        │      userspace/  the switch process: engine, control socket, runners
//!        │      bridge/     the Linux bridge over rtnetlink
//!        │
//!        └──► sys/        the host: namespaces (setns on dedicated threads), rtnetlink,
//!                         sysctls, ethtool, private files, the host the controller works
//!                         for, process identity, preflight, the nat tables iptables leaves
//!   cni/                  the CNI plugin (bin/switch-cni.rs): spec types, IPAM delegation,
//!                         ADD/DEL/CHECK/GC/STATUS on top of the controller
//!   bench/                the benchmark harness (contenders, tools, reports)
//!   names.rs, error.rs    input parsing and interface names; the typed error
//! ```
//! Forwarding itself happens in the kernel (crate `switch-ebpf`) or in the userspace
//! process; nothing here is on the eBPF packet path. The folders are described in
//! docs/architecture.md.
pub mod bench;
pub mod cni;
pub mod controller;
pub mod datapath;
pub mod error;
pub mod names;
pub mod state;
pub mod sys;

pub use error::{Error, Result};
