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
//!        ├──► datapath/   trait Datapath (+ capabilities PortForwarding, Tables, DatapathLog)
//!        │      ebpf/       tc and xdp: loader (load, pin, attach), maps, nat (typed maps)
//!        │      userspace/  the tokio switch process: engine, control socket, daemon
//!        │      bridge/     the Linux bridge over rtnetlink
//!        │
//!        └──► sys/        netns (setns on dedicated threads), netlink, sysctl, ethtool,
//!                         preflight
//!   bench/                the benchmark harness (contenders, tools, reports)
//!   cni/                  the CNI plugin (bin/switch-cni.rs): spec types, IPAM delegation,
//!                         ADD/DEL/CHECK on top of the controller
//!   names.rs, error.rs    input parsing and interface names; the typed error
//! ```
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
