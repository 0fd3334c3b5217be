//! The userspace datapath: an async (tokio) switch process for kernels without eBPF, and the
//! switch's slow path. See `engine` (frame switching) and `control` (the unix-socket protocol
//! the CLI uses to add ports and read the FDB and counters) and `daemon` (the process around
//! them).
pub mod control;
pub mod daemon;
pub mod engine;
