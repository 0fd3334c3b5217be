//! The engine's threads: one per lane (per CPU), each running the lane's receive task of every
//! port on a single-threaded tokio runtime of its own.
//!
//! Why not tasks on one shared runtime: a tokio runtime has one reactor (one epoll), so every
//! ring that fills wakes the one thread waiting in it, which then hands the task on to whichever
//! worker is free, often on the other CPU: two wake-ups per frame of sparse traffic. Here lane
//! `i`'s sockets are watched by lane `i`'s own reactor, and a frame wakes the one thread that
//! switches it (busy-polling ping-pong through the switch: p50 19 -> 9 us, p99 670 -> 13 us).
//!
//! The threads are not pinned to CPUs. Pinned to CPU `i` (where `PACKET_FANOUT_CPU` puts
//! the frames received on CPU `i`), sleeping ping-pong was faster still (p50 15 against 24-32
//! us), but a TCP sender then shares its CPU with the lane that switches its frames, and TCP
//! lost a quarter (11.5-15.9 against 16.4-17.7 Gbit/s).
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
    /// Starts the thread of lane `index`.
    pub(super) fn start(index: usize) -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new().name(format!("switch-lane-{index}")).spawn(move || {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_threads_run_tasks_and_stop_when_dropped() {
        let lane = LaneThread::start(0).unwrap();
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
}
