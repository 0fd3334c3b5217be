//! Lane steering: the eBPF program (switch-ebpf/src/lane_steer.rs) that each port's fanout
//! group runs to pick the lane of a frame. A flow goes to the lane of the CPU that sent it (no
//! wake-up of a thread on another CPU), and moves with its sender only once its old lane has
//! caught up with it (no frame of it overtakes another). A TCP connection, both directions, is
//! one flow, switched on the lane beside the CPU that opened it (sender and switching then run
//! at once), and moves only once idle.
//!
//! The engine's half: it loads the program with the lane count, tells it which port slot each
//! interface is (`STEER_SLOTS`), and reports through `CAUGHT_UP`, a map shared with the
//! program as memory (`BPF_F_MMAPABLE`, no system call per report), when each lane last found
//! each port's ring empty.
//!
//! Without eBPF (the program refused, say), the groups fall back to the kernel's flow hash
//! (`PACKET_FANOUT_HASH`): flows stay in order, but half of them land on the lane of the other
//! CPU. Never to the receiving CPU's lane alone (`PACKET_FANOUT_CPU`): that lets a TCP flow's
//! segments overtake each other.
use std::{
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd},
    sync::{Mutex, atomic::AtomicU64},
};

use super::mapping::Mapping;
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, Map, MapData},
    programs::{ProgramFd, SocketFilter},
};
use switch_common::steer::{CAUGHT_UP, CAUGHT_UP_ENTRIES, LANES_GLOBAL, MAX_LANES, PORT_SLOTS};

/// The object, built by build.rs from the switch-ebpf crate.
static STEER_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/switch-lane-steer"));
/// The program's name in it.
const PROGRAM: &str = "lane_steer";

/// The loaded program and its maps, for every port's fanout group.
#[derive(Debug)]
pub(super) struct Steering {
    /// The object; its `STEER_SLOTS` is written under the lock (rarely: ports come and go).
    ebpf: Mutex<Ebpf>,
    /// The program, as every port's fanout group takes it (a second descriptor of the one in
    /// `ebpf`, so no lock is needed to hand it out).
    program: ProgramFd,
    caught_up: CaughtUp,
}

impl Steering {
    /// Loads the program for `lanes` lanes; an error says why the engine steers by flow hash
    /// instead.
    pub(super) fn load(lanes: usize) -> Result<Self, String> {
        let lanes = u32::try_from(lanes).unwrap_or(MAX_LANES).min(MAX_LANES);
        let mut ebpf = EbpfLoader::new()
            .override_global(LANES_GLOBAL, &lanes, true)
            .load(STEER_OBJECT)
            .map_err(|e| format!("loading {PROGRAM}: {e}"))?;
        let program: &mut SocketFilter = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| format!("{PROGRAM} is not in its object"))?
            .try_into()
            .map_err(|e| format!("{PROGRAM}: {e}"))?;
        program.load().map_err(|e| format!("loading {PROGRAM}: {e}"))?;
        let program =
            program.fd().map_err(|e| format!("{PROGRAM}: {e}"))?.try_clone().map_err(|e| format!("{PROGRAM}: {e}"))?;
        let Some(Map::Array(data)) = ebpf.map(CAUGHT_UP) else {
            return Err(format!("{CAUGHT_UP} is not an array in {PROGRAM}'s object"));
        };
        let caught_up = CaughtUp::map(data).map_err(|e| format!("mapping {CAUGHT_UP}: {e}"))?;
        Ok(Self { ebpf: Mutex::new(ebpf), program, caught_up })
    }

    /// The program, as `PACKET_FANOUT_DATA` takes it.
    pub(super) fn program_fd(&self) -> BorrowedFd<'_> {
        self.program.as_fd()
    }

    /// Interface `ifindex` is port `slot` (`None`: no longer a port). Its lanes' reports start
    /// afresh.
    pub(super) fn set_port(&self, ifindex: u32, slot: Option<u32>) {
        let mut ebpf = self.ebpf.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(map) = ebpf.map_mut(PORT_SLOTS) else { return };
        let Ok(mut slots) = HashMap::<&mut MapData, u32, u32>::try_from(map) else { return };
        let result = match slot {
            Some(slot) => {
                for lane in 0..MAX_LANES {
                    self.caught_up.report(slot, lane as usize, 0);
                }
                slots.insert(ifindex, slot, 0)
            }
            None => slots.remove(&ifindex),
        };
        if let Err(e) = result {
            // Its flows then keep their first lane until idle: still in order.
            tracing::debug!("userspace switch: {PORT_SLOTS} for interface {ifindex}: {e}");
        }
    }

    /// Lane `lane` found port `slot`'s ring empty, having looked at `at` (monotonic ns, taken
    /// before it looked) with every frame it took before sent.
    pub(super) fn caught_up(&self, slot: u32, lane: usize, at: u64) {
        self.caught_up.report(slot, lane, at);
    }
}

/// `CAUGHT_UP`, mapped into this process: one u64 per port slot and lane, read by the program.
/// The kernel and the lanes only touch it through atomic u64 loads and stores.
#[derive(Debug)]
struct CaughtUp {
    mapping: Mapping,
}

impl CaughtUp {
    fn map(data: &MapData) -> std::io::Result<Self> {
        // An mmapable array maps its values from offset 0; the kernel wants whole pages.
        let bytes = (CAUGHT_UP_ENTRIES as usize * size_of::<u64>()).next_multiple_of(page_size());
        Ok(Self { mapping: Mapping::new(data.fd().as_fd().as_raw_fd(), bytes)? })
    }

    fn report(&self, slot: u32, lane: usize, at: u64) {
        let index = slot as usize * MAX_LANES as usize + lane;
        if index < CAUGHT_UP_ENTRIES as usize {
            // SAFETY: in bounds of the mapping (at least CAUGHT_UP_ENTRIES u64s, page-aligned),
            // which lives as long as `self`.
            let cell = unsafe { AtomicU64::from_ptr(self.mapping.base().as_ptr().cast::<u64>().add(index)) };
            // Release: what the lane sent before is done before the program can see this.
            cell.store(at, std::sync::atomic::Ordering::Release);
        }
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory effects.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

/// CLOCK_MONOTONIC in ns: the program's `bpf_ktime_get_ns` clock.
pub(super) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is live; CLOCK_MONOTONIC always exists (a vDSO call, no system call).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    //! Frames in, lanes out: the program run on made-up frames with `BPF_PROG_TEST_RUN`, from
    //! a thread pinned to each CPU in turn. Nothing is sent anywhere: the kernel builds each
    //! frame as if the loopback device had received it (interface index 1).
    use std::time::{Duration, Instant};

    use aya::{TestRun as _, TestRunOptions};

    use super::*;

    const LOOPBACK: u32 = 1;
    const TCP: u8 = 6;
    const UDP: u8 = 17;
    const A: ([u8; 4], u16) = ([10, 0, 0, 1], 40000);
    const B: ([u8; 4], u16) = ([10, 0, 0, 2], 5201);

    /// An Ethernet frame with an IPv4 header and ports, `from` -> `to`.
    fn ipv4(protocol: u8, from: ([u8; 4], u16), to: ([u8; 4], u16)) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
        f.extend([0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, protocol, 0, 0]);
        f.extend(from.0);
        f.extend(to.0);
        f.extend(from.1.to_be_bytes());
        f.extend(to.1.to_be_bytes());
        f.resize(14 + 40, 0);
        f
    }

    /// The lane the program picks for `frame`, run on `cpu`.
    fn lane(steering: &Steering, cpu: usize, frame: &[u8]) -> u32 {
        std::thread::scope(|s| {
            s.spawn(|| {
                super::super::lanes::pin_to(cpu);
                // SAFETY: no memory effects.
                assert_eq!(unsafe { libc::sched_getcpu() }, cpu as i32, "not pinned to CPU {cpu}");
                let ebpf = steering.ebpf.lock().unwrap();
                let program: &SocketFilter = ebpf.program(PROGRAM).unwrap().try_into().unwrap();
                let run = program.test_run(TestRunOptions { data_in: Some(frame), ..TestRunOptions::new() });
                run.expect("BPF_PROG_TEST_RUN").return_value
            })
            .join()
            .unwrap()
        })
    }

    /// Two lanes, the loopback device as port 0.
    fn steering() -> Steering {
        assert!(
            std::thread::available_parallelism().unwrap().get() >= 2,
            "these tests run a frame on CPU 0 and on CPU 1"
        );
        let steering = Steering::load(2).expect("the lane steering program loads (run as root)");
        steering.set_port(LOOPBACK, Some(0));
        steering
    }

    /// Frames run one after another through one steering program, noting whether two of them
    /// ran so far apart (on a loaded machine a thread can wait that long for its CPU) that a
    /// flow may have moved for being idle (`STICK_NS`, 10 ms), which these tests do not mean to
    /// test.
    struct Frames<'a> {
        steering: &'a Steering,
        /// When the call that ran the previous frame started.
        previous: Option<Instant>,
        stalled: bool,
    }

    /// A scenario was interrupted by a stall: it is run again with a fresh flow.
    struct Stalled;

    impl<'a> Frames<'a> {
        fn new(steering: &'a Steering) -> Self {
            Self { steering, previous: None, stalled: false }
        }

        /// Runs `frame` on `cpu` and checks that the program picks lane `want`.
        fn expect(&mut self, cpu: usize, frame: &[u8], want: u32, why: &str) -> Result<(), Stalled> {
            let start = Instant::now();
            let got = lane(self.steering, cpu, frame);
            // The two frames ran within this long of each other.
            if self.previous.is_some_and(|p| p.elapsed() >= Duration::from_millis(8)) {
                self.stalled = true;
            }
            self.previous = Some(start);
            match got == want {
                true => Ok(()),
                false if self.stalled => Err(Stalled),
                false => panic!("{why}: lane {got}, not {want}"),
            }
        }

        /// Reports that every lane of port 0 has caught up with what ran so far.
        fn all_caught_up(&self) {
            std::thread::sleep(Duration::from_millis(1));
            for lane in 0..2 {
                self.steering.caught_up(0, lane, monotonic_ns());
            }
        }

        /// Lets every flow go idle for longer than `STICK_NS`.
        fn idle(&mut self) {
            std::thread::sleep(Duration::from_millis(15));
            self.previous = None;
        }
    }

    /// Runs `scenario` with source port 40000, 40001, ... until it runs without a stall.
    fn without_stalls(scenario: impl Fn(&mut Frames<'_>, ([u8; 4], u16)) -> Result<(), Stalled>) {
        let steering = steering();
        for attempt in 0..20 {
            let mut frames = Frames::new(&steering);
            if scenario(&mut frames, (A.0, A.1 + attempt)).is_ok() {
                return;
            }
        }
        panic!("20 runs stalled for 8 ms or more between two frames");
    }

    #[test]
    fn a_datagram_flow_follows_its_sender_once_its_old_lane_has_caught_up() {
        without_stalls(|f, a| {
            let request = ipv4(UDP, a, B);
            f.expect(0, &request, 0, "starts on its sender's lane")?;
            f.expect(1, &request, 0, "moved while frames of it may still wait on lane 0")?;
            f.all_caught_up();
            f.expect(1, &request, 1, "lane 0 caught up: follows its sender")?;
            f.expect(0, &ipv4(UDP, B, a), 0, "the other direction is a flow of its own")
        });
        let arp = [[0xff; 6].as_slice(), &[0x02, 0, 0, 0, 0, 1, 0x08, 0x06], &[0; 28]].concat();
        let s = steering();
        assert_eq!((lane(&s, 0, &arp), lane(&s, 1, &arp)), (0, 1), "no flow: the receiving CPU's lane");
    }

    #[test]
    fn a_tcp_connection_is_one_flow_on_the_lane_beside_its_opener_until_idle() {
        without_stalls(|f, a| {
            let (out, back) = (ipv4(TCP, a, B), ipv4(TCP, B, a));
            f.expect(0, &out, 1, "opened on CPU 0: switched on lane 1")?;
            f.expect(1, &back, 1, "the replies: the same connection, the same lane")?;
            f.expect(0, &back, 1, "the replies from CPU 0")?;
            f.all_caught_up();
            f.expect(1, &out, 1, "busy: stays, whatever CPU sends")?;
            f.idle();
            f.expect(1, &back, 0, "idle for STICK_NS: starts afresh beside CPU 1")?;
            f.expect(0, &out, 0, "and stays there")?;
            f.expect(1, &ipv4(TCP, a, (B.0, 22)), 0, "another connection: a flow of its own")
        });
    }
}
