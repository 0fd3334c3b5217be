//! The clock the eBPF programs stamp their tables and events with, read from userspace.

/// CLOCK_MONOTONIC in ns: what `bpf_ktime_get_coarse_ns` reads (at a coarser tick).
pub fn now_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}
