//! The userspace datapath: a learning switch over AF_PACKET sockets, per port and CPU (lane)
//! a receive ring and a transmit ring.
//!
//! A frame's path through the engine, from namespace red to namespace blue:
//!
//! ```text
//!  namespace red            this process (tokio)                                namespace blue
//!  eth0 ──veth──► sred-…
//!                   │ AF_PACKET sockets, PACKET_VNET_HDR, mapped rings (socket.rs)
//!                   ▼
//!      serve_port task of sred-…, woken when the socket is readable      (this file)
//!        1 up to 32 frames from the lane's receive ring, no system call  (socket.rs)
//!        2 decide every frame of the batch, FDB read without locking     (decide.rs, mac_table.rs)
//!        3 learn new or moved sources, as the FDB's writer, if needed    (mac_table.rs)
//!        4 count rx, one atomic add per counter per batch                (ports.rs)
//!        5 into each destination's transmit ring, one send per port      (ports.rs, socket.rs)
//!                   │
//!                   ▼
//!                 sblue-… ──veth──► eth0
//! ```
//!
//! The modules, one concern each:
//! - `mac_table.rs`: the FDB (stations, learning, ageing, eviction), read without locks;
//! - `decide.rs`: the verdict for one frame (drop, flood, unicast) and the batch's sources;
//! - `guard.rs`: port security (what a bound port may send, MACs reserved for ports);
//! - `socket.rs`: the packet socket and its buffers, with all the `unsafe` libc calls;
//! - `closer.rs`: the thread that closes removed ports' sockets (closing waits on the kernel);
//! - `mapping.rs`: shared memory mappings (the rings, the steering's report array);
//! - `steer.rs`: the eBPF program that picks each frame's lane (a flow's frames stay in order);
//! - `lanes.rs`: the lanes' threads, one per CPU, each with its own single-threaded runtime;
//! - `ports.rs`: a port's socket and counters, the copy-on-write port table, forwarding;
//! - `mod.rs` (this file): the state the tasks share, the per-port receive loop, the ageing
//!   sweep and the public [`Engine`] the control socket drives.
//!
//! The decisions are the eBPF datapath's (`switch-ebpf/src/tc_ingress.rs`): runts are dropped
//! as malformed, group or zero sources are dropped, sources are learned (refreshed at most
//! once per [`FDB_REFRESH_NS`](switch_common::FDB_REFRESH_NS), moved when a station changes
//! port, static entries never move), known unicast goes to its port, a destination behind the
//! ingress port is dropped, and everything else is flooded to every other port. Expired
//! dynamic entries are ignored on lookup and removed by a sweep once a second
//! ([`Engine::spawn_ageing`]).
//!
//! Throughput comes from keeping TCP's GSO super-frames whole (`PACKET_VNET_HDR`: one 64 KiB
//! frame costs one syscall slot, not 45), from mapped rings both ways (no system call per
//! received frame, one per batch and destination to send), and from lanes that share nothing
//! they lock while switching: the FDB is read without locks, the port table is one `Arc` taken
//! per batch, counters are atomic adds.
mod closer;
mod decide;
mod guard;
mod host_flows;
mod ipv6;
mod lanes;
mod mac_table;
mod mapping;
mod ports;
mod socket;
mod steer;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use switch_common::{FDB_F_STATIC, FdbEntry, MAX_PORTS, PortStats};
use tokio::{
    io::{Interest, unix::AsyncFd},
    task::JoinHandle,
};

pub use self::guard::Guard;
use self::{
    decide::{BatchSources, Verdict, decide},
    guard::Spoof,
    host_flows::HostFlows,
    lanes::{LaneThread, lane_cpus},
    mac_table::{Clock, Fdb, PortId, Station},
    ports::{Counters, Lane, LearnBudget, Port, PortTable, RxTally, forward},
    socket::{PacketSocket, RxBuffers},
    steer::{Steering, monotonic_ns},
};
use crate::error::{Context as _, Error, Result};

/// Frames taken from (or handed to) the kernel per system call.
const BATCH: usize = 32;
/// Batches a port task handles per wake-up before it lets other tasks (the other ports, the
/// control socket, the ageing sweep) run on its worker thread.
const BATCHES_PER_WAKE: usize = 64;
/// Most lanes (sockets and receive tasks) per port, whatever the CPU count: each lane costs
/// every port a socket with its buffers.
const MAX_LANES: usize = switch_common::steer::MAX_LANES as usize;
/// How often expired dynamic entries are removed.
const SWEEP_PERIOD: Duration = Duration::from_secs(1);

/// State shared by the engine and its tasks.
///
/// Lock order: the FDB's writer before `ports` (a batch checks its port as the FDB's writer);
/// the engine's `tasks` mutex before either.
#[derive(Debug)]
struct Shared {
    /// Zero of the FDB's clock.
    epoch: Instant,
    ageing_ns: AtomicU64,
    /// New stations a port without a bound MAC may learn per ageing period (0: no limit).
    max_learned: u32,
    /// Sockets (and receive tasks) per port: one per CPU, see [`lanes`].
    lanes: usize,
    /// How long a lane keeps polling its ring after the last frame before it sleeps (zero:
    /// it sleeps at once).
    busy_poll: Duration,
    fdb: Fdb,
    /// Flows the host translated into the segment (Services), see host_flows.rs.
    host_flows: HostFlows,
    ports: RwLock<Arc<PortTable>>,
    /// The demux of every port's fanout group; `None`: the kernel's flow hash.
    steering: Option<Steering>,
}

impl Shared {
    fn clock(&self) -> Clock {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        Clock { now, ageing: self.ageing_ns.load(Relaxed) }
    }

    fn table(&self) -> Arc<PortTable> {
        Arc::clone(&read(&self.ports))
    }

    /// Swaps in a table with `slot` set to `port`.
    fn set_port(&self, slot: u32, port: Option<Arc<Port>>) {
        let mut table = write(&self.ports);
        *table = Arc::new(table.with(slot, port));
    }

    /// Switches the `n` frames in `rx` received on `port`'s socket of `lane`.
    fn switch_batch(&self, port: &Port, lane: usize, rx: &mut RxBuffers, n: usize) {
        let ingress = port.id;
        let clock = self.clock();
        let table = self.table();
        let mut verdicts = [Verdict::Drop; BATCH];
        let mut sources = BatchSources::new();
        let mut tally = RxTally::default();
        {
            let fdb = self.fdb.read();
            for (i, v) in verdicts[..n].iter_mut().enumerate() {
                let frame = rx.frame(i);
                if rx.tagged[i] && port.guard.secured() {
                    *v = Verdict::Spoofed(Spoof::Tagged);
                } else if !rx.truncated[i] {
                    *v = decide(&fdb, frame, ingress, &port.guard, &mut sources, clock, &*table);
                }
                tally.count(*v, frame.len());
            }
        }
        if sources.stale().next().is_some() {
            let fdb = self.fdb.write();
            // Checked as the FDB's writer: a port removed meanwhile (table first, then its
            // entries, as the writer) must not get entries back from its last batch.
            if read(&self.ports).is_live(ingress) {
                for src in sources.stale() {
                    fdb.learn(*src, ingress, clock.now);
                }
            }
        }
        port.counters.add_rx(&tally);
        self.through_host(port, &table, rx, &mut verdicts[..n], clock.now);
        forward(&table, ingress, lane, rx, &verdicts[..n]);
    }

    /// Services (host_flows.rs): the host's frames into the segment note the flows it
    /// translated; the answers of those, switched between stations, go to the gateway instead,
    /// addressed to it.
    fn through_host(&self, port: &Port, table: &PortTable, rx: &mut RxBuffers, verdicts: &mut [Verdict], now: u64) {
        let Some(gateway) = table.gateway() else { return };
        for (i, v) in verdicts.iter_mut().enumerate() {
            let Verdict::Unicast(out) = *v else { continue };
            if port.id.slot == gateway.id.slot {
                self.host_flows.note(&port.guard, rx.frame(i), now);
            } else if out != gateway.id.slot && self.host_flows.via_host(rx.frame(i), now) {
                rx.set_destination(i, gateway.guard.mac);
                *v = Verdict::Unicast(gateway.id.slot);
            }
        }
    }

    /// The time to report with [`Shared::caught_up`], read before a lane looks at a ring; no
    /// clock read without steering.
    fn clock_for_steering(&self) -> u64 {
        if self.steering.is_some() { monotonic_ns() } else { 0 }
    }

    /// Lane `lane` found `port`'s ring empty, having looked at `looked`, with every frame it
    /// took before sent: its flows may now move to another lane (steer.rs).
    fn caught_up(&self, port: &Port, lane: usize, looked: u64) {
        if let Some(steering) = &self.steering {
            steering.caught_up(port.id.slot, lane, looked);
        }
    }

    fn sweep(&self) {
        let clock = self.clock();
        self.fdb.write().sweep(clock);
    }
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    // A panic elsewhere cannot leave the table half-updated (every update is one insert or
    // retain), so a poisoned lock is still good to use.
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

fn lock<T>(lock: &Mutex<T>) -> MutexGuard<'_, T> {
    lock.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The receive task of one lane of a port: waits until its socket's ring has frames, then
/// switches batches until the ring is empty (or the budget is spent, to let other tasks run).
async fn serve_port(shared: Arc<Shared>, fd: AsyncFd<Lane>) {
    let port = Arc::clone(&fd.get_ref().port);
    let lane = fd.get_ref().index;
    let mut rx = RxBuffers::new(fd.get_ref().socket());
    loop {
        let mut guard = match fd.readable().await {
            Ok(guard) => guard,
            Err(e) => {
                tracing::error!("userspace switch: port {} stops receiving: {e}", port.name);
                return;
            }
        };
        let mut budget = BATCHES_PER_WAKE;
        while budget > 0 {
            let looked = shared.clock_for_steering();
            // try_io clears the readiness when the ring is empty (WouldBlock); a frame that
            // arrives meanwhile makes it ready again, so none waits for the next one.
            match guard.try_io(|fd| fd.get_ref().socket().recv(&mut rx)) {
                Ok(Ok(n)) => {
                    shared.switch_batch(&port, lane, &mut rx, n);
                    budget -= 1;
                }
                Ok(Err(e)) => {
                    // Not returned by the ring (it only says WouldBlock), kept for safety.
                    tracing::warn!("userspace switch: receiving on {}: {e}", port.name);
                    break;
                }
                Err(_would_block) => {
                    shared.caught_up(&port, lane, looked);
                    if budget == BATCHES_PER_WAKE {
                        // Woken with nothing in the ring: the socket reports an error
                        // (ENETDOWN when its interface goes down). Clear it, or the next send
                        // out of this socket would fail with it.
                        fd.get_ref().socket().clear_error();
                    }
                    break;
                }
            }
        }
        drop(guard);
        if budget == 0 {
            tokio::task::yield_now().await;
        } else if budget < BATCHES_PER_WAKE && !shared.busy_poll.is_zero() {
            // Frames came, and the ring is empty now: the next ones are likely near.
            busy_poll(&shared, &fd, &mut rx).await;
        }
    }
}

/// Keeps switching the frames of `fd`'s ring until it stays empty for `shared.busy_poll`,
/// then returns so the task can sleep on the socket again: a frame that arrives meanwhile is
/// switched without waiting for a wake-up (the engine's share of the latency of a
/// request-response exchange is then a few microseconds, not a thread wake-up). Between two
/// looks at the ring the task yields, so the lane's other ports (and its control tasks) run:
/// the lane's thread spins, the lane does not stall.
async fn busy_poll(shared: &Shared, fd: &AsyncFd<Lane>, rx: &mut RxBuffers) {
    let (port, lane) = (&fd.get_ref().port, fd.get_ref().index);
    let mut last_frame = Instant::now();
    loop {
        let looked = shared.clock_for_steering();
        match fd.get_ref().socket().recv(rx) {
            Ok(n) => {
                shared.switch_batch(port, lane, rx, n);
                last_frame = Instant::now();
            }
            Err(_empty) => {
                shared.caught_up(port, lane, looked);
                if last_frame.elapsed() >= shared.busy_poll {
                    return;
                }
            }
        }
        tokio::task::yield_now().await;
    }
}

/// Tasks the engine started, aborted when their port goes or the engine is dropped.
#[derive(Debug, Default)]
struct Tasks {
    /// The receive tasks of each port, one per lane.
    ports: HashMap<u32, Vec<JoinHandle<()>>>,
    /// The lanes' threads, started with the first port.
    lanes: Vec<LaneThread>,
    ageing: Option<JoinHandle<()>>,
}

/// What an engine is told when it is made: a switch's settings (`switch up`) for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Dynamic entries are forgotten after this long without a frame from them.
    pub ageing: Duration,
    /// New stations a port without a bound MAC may learn per ageing period (0: no limit).
    pub max_learned: u32,
    /// How long a lane polls its rings for more frames after the last one before it sleeps
    /// (`up --busy-poll`; zero: never polls). Lower latency, for a CPU kept busy.
    pub busy_poll: Duration,
}

impl Config {
    /// What switch `sw`'s record asks for.
    pub fn of(sw: &crate::state::SwitchState) -> Self {
        Self {
            ageing: Duration::from_secs(sw.ageing_secs),
            max_learned: sw.max_learned,
            busy_poll: Duration::from_micros(u64::from(sw.busy_poll_us)),
        }
    }

    /// Ageing after `ageing`, no learning limit, no busy polling.
    pub fn new(ageing: Duration) -> Self {
        Self { ageing, max_learned: 0, busy_poll: Duration::ZERO }
    }
}

/// The userspace switch: ports, FDB and counters. Used as `Arc<Engine>` from the control
/// socket's tasks; it stops its tasks when dropped.
#[derive(Debug)]
pub struct Engine {
    shared: Arc<Shared>,
    /// Also serialises port and static-entry changes against each other.
    tasks: Mutex<Tasks>,
}

impl Engine {
    /// An engine without ports, set up as `config` says.
    pub fn new(config: Config) -> Arc<Self> {
        let lanes = lanes();
        let steering = Steering::load(lanes)
            .inspect_err(|e| tracing::warn!("userspace switch: lanes steered by flow hash, not by CPU: {e}"))
            .ok();
        let shared = Shared {
            epoch: Instant::now(),
            ageing_ns: AtomicU64::new(duration_ns(config.ageing)),
            max_learned: config.max_learned,
            lanes,
            busy_poll: config.busy_poll,
            fdb: Fdb::default(),
            host_flows: HostFlows::default(),
            ports: RwLock::default(),
            steering,
        };
        Arc::new(Self { shared: Arc::new(shared), tasks: Mutex::default() })
    }

    /// Opens the sockets for `ifname`/`ifindex` and starts their receive tasks, one on each
    /// lane's thread (started with the first port), bound by `guard` (port security; `None`
    /// keeps what a port already has). Idempotent for the same slot, ifindex and guard; a slot given
    /// another interface or guard is replaced. Counters of the slot start at zero.
    pub fn add_port(self: &Arc<Self>, slot: u32, ifindex: u32, ifname: &str, guard: Option<Guard>) -> Result<()> {
        if slot >= MAX_PORTS {
            return Err(Error::invalid("port slot", slot.to_string(), format!("must be below {MAX_PORTS}")));
        }
        let mut tasks = lock(&self.tasks);
        let table = self.shared.table();
        // The same port again: nothing to do, unless its port security changes (then the port
        // is made anew, with fresh counters: a rare operator action).
        let same = table.get(slot).filter(|p| p.id.ifindex == ifindex);
        if same.is_some_and(|p| guard.is_none_or(|g| g == p.guard)) {
            return Ok(());
        }
        let guard = guard.unwrap_or_default();
        if let Some(other) = table.by_ifindex(ifindex).filter(|p| p.id.slot != slot) {
            return Err(Error::Command(format!(
                "interface {ifname} (index {ifindex}) is already port {} of the userspace switch",
                other.id.slot
            )));
        }
        // A MAC is reserved for one port only (as the eBPF datapath's BOUND, added to only
        // where absent): another port's would hand it that port's frames.
        if let Some(holder) = table.reserved(&guard.mac).filter(|&s| guard.mac != [0; 6] && s != slot) {
            return Err(Error::DuplicateMac {
                mac: crate::names::Mac(guard.mac).to_string(),
                holder: format!("port {holder} of the switch (its reserved MAC)"),
            });
        }
        check_ifindex(ifname, ifindex)?;
        let demux = self.shared.steering.as_ref().map(Steering::program_fd);
        let sockets = PacketSocket::open_group(ifindex, self.shared.lanes, demux)
            .context(format!("opening packet sockets on {ifname}"))?;
        let id = PortId { slot, ifindex };
        let port = Arc::new(Port {
            id,
            name: ifname.to_owned(),
            sockets,
            counters: Counters::default(),
            guard,
            learning: LearnBudget::new(self.shared.max_learned),
        });
        if tasks.lanes.is_empty() {
            let cpus = lane_cpus(self.shared.lanes);
            tasks.lanes = (0..self.shared.lanes)
                .map(|i| LaneThread::start(i, cpus.as_ref().map(|c| c[i])))
                .collect::<std::io::Result<_>>()
                .context("starting the userspace switch's threads")?;
        }
        let mut fds = Vec::with_capacity(port.sockets.len());
        for index in 0..port.sockets.len() {
            // Registered with the lane's own reactor.
            let _runtime = tasks.lanes[index].handle().enter();
            let lane = Lane { port: Arc::clone(&port), index };
            // SAFETY: the fd belongs to a PacketSocket inside the Arc<Port> the Lane holds, so
            // it stays open and unchanged for the AsyncFd's lifetime (nothing ever closes or
            // replaces a Port's sockets; they close when the last Arc drops).
            let fd = unsafe { AsyncFd::register_with_interest(lane, Interest::READABLE) }.map_err(|e| Error::Io {
                context: format!("watching the packet socket on {ifname}"),
                source: e.into(),
            })?;
            fds.push(fd);
        }
        self.remove_port(&mut tasks, slot);
        if let Some(steering) = &self.shared.steering {
            steering.set_port(ifindex, Some(slot));
        }
        self.shared.set_port(slot, Some(port));
        let serving = fds
            .into_iter()
            .zip(&tasks.lanes)
            .map(|(fd, lane)| lane.handle().spawn(serve_port(Arc::clone(&self.shared), fd)))
            .collect();
        tasks.ports.insert(slot, serving);
        tracing::info!("userspace switch: port {slot} is {ifname} (index {ifindex})");
        Ok(())
    }

    /// Stops the port's task, closes its socket, forgets FDB entries on it. Unknown slot:
    /// `Ok(())`. The socket closes once a batch in flight on another task is done with it.
    pub fn del_port(&self, slot: u32) -> Result<()> {
        let mut tasks = lock(&self.tasks);
        self.remove_port(&mut tasks, slot);
        Ok(())
    }

    fn remove_port(&self, tasks: &mut Tasks, slot: u32) {
        for task in tasks.ports.remove(&slot).into_iter().flatten() {
            task.abort();
        }
        let Some(port) = self.shared.table().get(slot).cloned() else {
            return;
        };
        self.shared.set_port(slot, None);
        if let Some(steering) = &self.shared.steering {
            steering.set_port(port.id.ifindex, None);
        }
        self.shared.fdb.write().forget_port(port.id.ifindex);
        tracing::info!("userspace switch: port {slot} ({}) removed", port.name);
    }

    /// Sets the ageing time of dynamic entries (effective for the next frame).
    pub fn set_ageing(&self, ageing: Duration) {
        self.shared.ageing_ns.store(duration_ns(ageing), Relaxed);
    }

    /// (mac, ifindex, is_static, age) of every live entry (expired dynamic entries are left
    /// out). The age of a static entry is the time since it was added.
    pub fn fdb(&self) -> Vec<([u8; 6], u32, bool, Duration)> {
        let clock = self.shared.clock();
        self.shared
            .fdb
            .read()
            .entries()
            .filter(|(_, s)| !s.entry.is_expired(clock.now, clock.ageing))
            .map(|(mac, s)| {
                let age = Duration::from_nanos(clock.now.saturating_sub(s.entry.last_seen_ns));
                (mac, s.entry.ifindex, s.entry.is_static(), age)
            })
            .collect()
    }

    /// Static entry: `mac` is behind the port with this ifindex (replacing a learned entry).
    /// Error if no port has that ifindex.
    pub fn fdb_add_static(&self, mac: [u8; 6], ifindex: u32) -> Result<()> {
        // Held so the port cannot be removed (and its entries forgotten) in between.
        let _tasks = lock(&self.tasks);
        let table = self.shared.table();
        let port = table
            .by_ifindex(ifindex)
            .ok_or_else(|| Error::Command(format!("no port of the userspace switch has interface index {ifindex}")))?;
        let entry = FdbEntry { ifindex, flags: FDB_F_STATIC, last_seen_ns: self.shared.clock().now, remote: 0, pad: 0 };
        self.shared.fdb.write().insert(mac, Station { entry, slot: port.id.slot });
        Ok(())
    }

    /// Deletes an entry (static or learned); returns whether it existed.
    pub fn fdb_del(&self, mac: [u8; 6]) -> bool {
        self.shared.fdb.write().remove(&mac)
    }

    /// Counters of a slot (zeros for an unknown slot).
    pub fn stats(&self, slot: u32) -> PortStats {
        self.shared.table().get(slot).map(|p| p.counters.snapshot()).unwrap_or_default()
    }

    /// Starts the once-a-second ageing sweep task (inside a tokio runtime; panics outside
    /// one). Calling it again while the sweep runs does nothing.
    pub fn spawn_ageing(self: &Arc<Self>) {
        let mut tasks = lock(&self.tasks);
        if tasks.ageing.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let shared = Arc::downgrade(&self.shared);
        tasks.ageing = Some(tokio::spawn(sweep_forever(shared)));
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let tasks = self.tasks.get_mut().unwrap_or_else(PoisonError::into_inner);
        for task in tasks.ports.drain().flat_map(|(_, t)| t) {
            task.abort();
        }
        if let Some(task) = tasks.ageing.take() {
            task.abort();
        }
    }
}

/// Removes expired entries every [`SWEEP_PERIOD`] until the engine is gone.
async fn sweep_forever(shared: Weak<Shared>) {
    let mut tick = tokio::time::interval(SWEEP_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.sweep();
    }
}

/// Lanes per port: one per CPU the process may run on (at most [`MAX_LANES`]), so that
/// every CPU switches frames, each from its own socket of every port.
fn lanes() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_LANES)
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Refuses an ifindex that is not `ifname`'s: a port bound to the wrong interface would switch
/// someone else's traffic.
fn check_ifindex(ifname: &str, ifindex: u32) -> Result<()> {
    let actual = nix::net::if_::if_nametoindex(ifname).context(format!("looking up interface {ifname}"))?;
    if actual != ifindex {
        return Err(Error::Command(format!("interface {ifname} has index {actual}, not {ifindex}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{mac_table::fixtures::A, *};

    #[tokio::test]
    async fn engine_without_ports() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Engine>();
        let engine = Engine::new(Config::new(Duration::from_secs(300)));
        engine.spawn_ageing();
        engine.spawn_ageing();
        assert_eq!(engine.stats(7), PortStats::default());
        assert!(engine.fdb().is_empty());
        assert!(engine.fdb_add_static(A, 42).is_err());
        assert!(!engine.fdb_del(A));
        assert!(engine.del_port(3).is_ok());
        assert!(engine.add_port(MAX_PORTS, 1, "lo", None).is_err());
        assert!(engine.add_port(0, 999_999, "ustest-none", None).is_err());
    }
}
