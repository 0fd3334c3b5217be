//! The engine's threads: one per lane (per CPU), each running the lane's receive task of every
//! port on a single-threaded tokio runtime of its own.
//!
//! Why not tasks on one shared runtime: a tokio runtime has one reactor (one epoll), so every
//! ring that fills wakes the one thread waiting in it, which then hands the task to whichever
//! worker is free, often on the other CPU (an inter-processor interrupt, costly in a VM). Here
//! lane `i`'s sockets are watched by lane `i`'s own reactor, and lane `i`'s thread is pinned to
//! CPU `i` when the process may run on CPUs `0..lanes` (the usual case): the lane steering
//! program (steer.rs) starts a flow on the lane of the CPU that sends it, so its frames wake a
//! thread on the same CPU.
//!
//! Measured both ways on the 2-CPU VM: pinned, busy-polling ping-pong in `switch bench` p50
//! 9.0-10.1 us (1.9x the bridge) and sleeping p50 14.3 us (0.5x the bridge); floating, 25.8-26.4
//! us and 23.5-35.6 us. The cost: a TCP sender shares its CPU with the lane that switches its
//! frames.
use std::io;

use tokio::{runtime::Handle, sync::oneshot};

/// A lane's thread. Dropping it ends the thread (its runtime stops, and with it every task it
/// still runs).
#[derive(Debug)]
pub(super) struct LaneThread {
    handle: Handle,
    /// Its receiver is what the thread waits on; dropping this sender wakes it to stop.
    _stop: oneshot::Sender<()>,
}

impl LaneThread {
    /// Starts the thread of lane `index`, pinned to `cpu` if given.
    pub(super) fn start(index: usize, cpu: Option<usize>) -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new().name(format!("switch-lane-{index}")).spawn(move || {
            if let Some(cpu) = cpu {
                pin_to(cpu);
            }
            runtime.block_on(async {
                let _ = stopped.await;
            });
        })?;
        Ok(Self { handle, _stop: stop })
    }

    /// The lane's runtime, to spawn its tasks on and register their sockets with.
    pub(super) fn handle(&self) -> &Handle {
        &self.handle
    }
}

/// The CPU of each of `lanes` lanes, if the process may run on exactly CPUs `0..lanes`: then the
/// steering program (which picks socket `cpu % lanes` for a new flow) sends CPU `i`'s flows to
/// lane `i`, and lane `i` belongs on CPU `i`. Otherwise (a restricted CPU set) the threads float.
pub(super) fn lane_cpus(lanes: usize) -> Option<Vec<usize>> {
    // SAFETY: cpu_set_t is a plain bit set for which all zeros is valid (no CPU).
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is live and its size is passed along; pid 0 is this thread.
    let ret = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if ret != 0 {
        return None;
    }
    // SAFETY: CPU_COUNT and CPU_ISSET only read the live set (cpu below CPU_SETSIZE).
    let exact = unsafe { libc::CPU_COUNT(&set) as usize == lanes && (0..lanes).all(|cpu| libc::CPU_ISSET(cpu, &set)) };
    exact.then(|| (0..lanes).collect())
}

/// Pins the calling thread to `cpu` (best effort: a failure leaves it floating).
pub(super) fn pin_to(cpu: usize) {
    // SAFETY: as in lane_cpus; CPU_SET writes bit `cpu` (below CPU_SETSIZE) of the live set,
    // and sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            tracing::debug!("userspace switch: lane thread not pinned to CPU {cpu}: {}", io::Error::last_os_error());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_threads_run_tasks_and_stop_when_dropped() {
        let lane = LaneThread::start(0, None).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let task = lane.handle().spawn(async move {
            tx.send(std::thread::current().name().map(str::to_owned)).unwrap();
            std::future::pending::<()>().await;
        });
        assert_eq!(rx.recv().unwrap().as_deref(), Some("switch-lane-0"));
        drop(lane);
        // The runtime is gone, and the pending task with it.
        let done = tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(task);
        assert!(done.unwrap_err().is_cancelled());
    }

    #[test]
    fn lanes_map_to_cpus_only_for_an_exact_set() {
        let cpus = std::thread::available_parallelism().unwrap().get();
        if let Some(v) = lane_cpus(cpus) {
            assert_eq!(v, (0..cpus).collect::<Vec<_>>());
        }
        assert_eq!(lane_cpus(cpus + 1), None);
    }
}
