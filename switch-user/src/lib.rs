//! Controller library of the eBPF switch.
//!
//! ```text
//!   cli (bin)  ──►  controller::{switch, port, link, fdb, stats, logs}
//!                      │                 │
//!                      ▼                 ▼
//!                sys::{netns, netlink,   datapath::{loader, maps}
//!                      sysctl, preflight}   (aya: load, pin, attach, maps)
//!                      │
//!                      ▼
//!                state (/run/switch/state.json, flock)
//! ```
//! The forwarding itself happens in the kernel (crate `switch-ebpf`); nothing here is on the
//! packet path.
pub mod bench;
pub mod controller;
pub mod datapath;
pub mod error;
pub mod names;
pub mod state;
pub mod sys;

pub use error::{Error, Result};
