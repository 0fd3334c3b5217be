//! The eBPF half of the control plane: loading the datapath, pinning it under
//! `/sys/fs/bpf/switch/NAME/`, attaching it to ports, and typed access to its maps.
//!
//! ```text
//! /sys/fs/bpf/switch/NAME/
//!   prog_ingress | prog_xdp   the TC or XDP program (one instance per switch: switches
//!                             share nothing)
//!   FDB PORTS PORT_SLOTS STATS CONFIG PORT_DEVMAP   its maps
//!   links/IFNAME        one TCX link per port; removing the pin detaches the program
//! ```
//! Everything forwarding needs is pinned, so the datapath runs on after the CLI exits and
//! every later CLI call finds the same state.
pub mod loader;
pub mod maps;
pub mod nat;

pub use loader::{Pins, Program};
