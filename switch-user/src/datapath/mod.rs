//! The datapaths: what moves frames between a switch's ports.
pub mod ebpf;
pub mod userspace;
