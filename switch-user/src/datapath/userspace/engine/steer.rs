//! Lane steering: the eBPF program (switch-ebpf/src/lane_steer.rs) that each port's fanout
//! group runs to pick the lane of a frame. A flow starts on the lane of the CPU that sent it
//! (no wake-up of a thread on another CPU) and stays there while it is active (no frame of it
//! overtakes another).
//!
//! Without eBPF (the program refused, say), the groups fall back to the kernel's flow hash
//! (`PACKET_FANOUT_HASH`): flows stay in order, but half of them land on the lane of the other
//! CPU. Never to the receiving CPU's lane alone (`PACKET_FANOUT_CPU`): that lets a TCP flow's
//! segments overtake each other.
use std::os::fd::{AsFd as _, BorrowedFd};

use aya::{Ebpf, programs::SocketFilter};

/// The object, built by build.rs from the switch-ebpf crate.
static STEER_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/switch-lane-steer"));
/// The program's name in it.
const PROGRAM: &str = "lane_steer";

/// The loaded program (and its flow map), for every port's fanout group.
#[derive(Debug)]
pub(super) struct Steering {
    ebpf: Ebpf,
}

impl Steering {
    /// Loads the program; an error says why the engine steers by flow hash instead.
    pub(super) fn load() -> Result<Self, String> {
        let mut ebpf = Ebpf::load(STEER_OBJECT).map_err(|e| format!("loading {PROGRAM}: {e}"))?;
        let program: &mut SocketFilter = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| format!("{PROGRAM} is not in its object"))?
            .try_into()
            .map_err(|e| format!("{PROGRAM}: {e}"))?;
        program.load().map_err(|e| format!("loading {PROGRAM}: {e}"))?;
        Ok(Self { ebpf })
    }

    /// The program, as `PACKET_FANOUT_DATA` takes it.
    pub(super) fn fd(&self) -> Option<BorrowedFd<'_>> {
        let program: &SocketFilter = self.ebpf.program(PROGRAM)?.try_into().ok()?;
        program.fd().ok().map(|fd| fd.as_fd())
    }
}
