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
//!        │                forwarding, table counters, log, events, capture, tunnel);
//!        │                settings (the `up` options only some take: --redirect, --busy-poll)
//!        │      ebpf/       tc and xdp: the switch object and its ports (mod.rs), forwarding,
//!        │                  tunnel, tables, streams (log, events, capture); load, pin and
//!        │                  attach the programs (loader); typed maps (maps, nat)
//!        │      userspace/  the switch process: engine, control socket, daemon, runner
//!        │                  (`switch run`, in the foreground or as the daemon)
//!        │      bridge/     the Linux bridge over rtnetlink
//!        │
//!        └──► sys/        the host: namespaces (setns on dedicated threads), rtnetlink,
//!                         sysctls and the ephemeral port range, the cgroup v2 root, ethtool,
//!                         private files, the host the controller works for (its state and
//!                         pin roots), process identity, the programs' clock, preflight;
//!                         `blocking` (all of it off the async workers)
//!   cni/                  the CNI plugin (bin/switch-cni.rs): spec types, IPAM delegation,
//!                         ADD/DEL/CHECK/GC/STATUS on top of the controller
//!   docker/               the Docker network driver (`switch docker-plugin`): libnetwork's
//!                         remote driver calls on top of the controller, one file per group
//!   bench/                the benchmark harness: one file per comparison behind the
//!                         `Comparison` shape, contenders, tools, reports; its container
//!                         runtimes come from the `container-env` crate, as the tests' do
//!   kind.rs               DatapathKind and Capability: the leaf that state, errors, the CLI
//!                         and the datapaths all name
//!   names.rs, error.rs    input parsing and interface names; the typed error
//!   edge.rs               what both binaries do alike at their edge (usage errors)
//! ```
//! Nothing below `controller/` imports it: `datapath/`, `sys/`, `state.rs` and `error.rs`
//! point down or sideways only, and `sys/` names nothing above it (tests/tests/layers.rs
//! checks it).
//! Forwarding itself happens in the kernel (crate `switch-ebpf`) or in the userspace
//! process; nothing here is on the eBPF packet path. The folders are described in
//! docs/architecture.md.
pub mod bench;
pub mod cni;
pub mod controller;
pub mod datapath;
pub mod docker;
pub mod edge;
pub mod error;
pub mod kind;
pub mod names;
pub mod state;
pub mod sys;

pub use error::{Error, Result};
