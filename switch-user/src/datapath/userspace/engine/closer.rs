//! The closer: a thread that closes the sockets of removed ports, so no lane waits for it.
//!
//! Closing a packet socket waits for RCU grace periods: `packet_release` and `packet_set_ring`
//! (unmapping a ring) each call `synchronize_net()`. On the idle 2-CPU VM that is about 25 ms
//! per socket, and a port has two per lane (receive and transmit), so 100 ms a port; while
//! the host is busy, or a namespace is being torn down beside it, far longer. The sockets close
//! on whichever thread drops a port's last reference, and that is often a lane's: the aborted
//! receive task of the port, or a batch holding the last snapshot of the old port table. That
//! lane would switch nothing meanwhile, for every one of its ports: in CI, `ns del` of one
//! namespace cost its neighbours' pings more than a second. So a port hands its sockets here
//! when it is dropped (`Port`'s `Drop`), and this thread, which does nothing else, closes them.
use std::sync::{
    OnceLock,
    mpsc::{self, Sender},
};

/// Something whose drop may block.
type Closing = Box<dyn Send>;

/// The closer's queue; `None` if its thread could not be started (then callers close inline).
static CLOSER: OnceLock<Option<Sender<Closing>>> = OnceLock::new();

/// Drops `what` on the closer's thread, in the order handed over; returns at once (the queue
/// is unbounded, and a send never waits). Inline if the thread could not be started.
pub(super) fn close_later<T: Send + 'static>(what: T) {
    let Some(queue) = CLOSER.get_or_init(start) else {
        drop(what);
        return;
    };
    if let Err(mpsc::SendError(what)) = queue.send(Box::new(what)) {
        // The thread is gone (it cannot end, but a send error returns the value): close here.
        drop(what);
    }
}

/// Starts the thread, once per process: it lives as long as the process, as the queue's
/// sender (in the static) is never dropped.
fn start() -> Option<Sender<Closing>> {
    let (queue, closing) = mpsc::channel::<Closing>();
    let thread = std::thread::Builder::new().name("switch-closer".into()).spawn(move || {
        for what in closing {
            drop(what);
        }
    });
    match thread {
        Ok(_) => Some(queue),
        Err(e) => {
            tracing::warn!("userspace switch: no thread to close sockets on ({e}); lanes close them");
            None
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

    use super::*;

    /// Reports the thread it is dropped on.
    struct Witness(SyncSender<Option<String>>);

    impl Drop for Witness {
        fn drop(&mut self) {
            let _ = self.0.send(std::thread::current().name().map(str::to_owned));
        }
    }

    /// Holds the closer until dropped (or until the returned sender is dropped): what is handed
    /// over meanwhile waits behind it, so a test can see it is not closed yet.
    pub(in super::super) struct Stall {
        _release: SyncSender<()>,
    }

    pub(in super::super) fn stall_closer() -> Stall {
        let (release, wait): (SyncSender<()>, Receiver<()>) = sync_channel(0);
        let (started, running) = sync_channel(0);
        struct Blocker(Receiver<()>, SyncSender<()>);
        impl Drop for Blocker {
            fn drop(&mut self) {
                let _ = self.1.send(());
                // Returns when `Stall` is dropped (its sender goes, recv fails).
                let _ = self.0.recv();
            }
        }
        close_later(Blocker(wait, started));
        running.recv().expect("the closer runs the blocker");
        Stall { _release: release }
    }

    #[test]
    fn what_is_handed_over_is_dropped_on_the_closer_thread_in_order() {
        let (tx, rx) = sync_channel(2);
        close_later((Witness(tx.clone()), 1));
        close_later(Witness(tx));
        for _ in 0..2 {
            assert_eq!(rx.recv().unwrap().as_deref(), Some("switch-closer"));
        }
    }

    #[test]
    fn a_stalled_closer_does_not_stall_the_caller() {
        let stall = stall_closer();
        let (tx, rx) = sync_channel(1);
        close_later(Witness(tx));
        assert!(rx.try_recv().is_err(), "dropped while the closer was stalled");
        drop(stall);
        assert_eq!(rx.recv().unwrap().as_deref(), Some("switch-closer"));
    }
}
