//! Runs the real, loaded datapath programs on crafted frames with BPF_PROG_TEST_RUN: packet
//! in, verdict and packet out, in microseconds and with no traffic generator.
//!
//! aya covers the system calls: `SchedClassifier::from_pin`/`Xdp::from_pin` open the programs
//! `switch up` pinned, and `TestRun::test_run` issues BPF_PROG_TEST_RUN with the frame, an
//! output buffer and the context (`ctx_in`). What aya lacks is the context's layout: `struct
//! __sk_buff` and `struct xdp_md` are only in aya-ebpf's kernel-side bindings, so the fields
//! the tests set are declared here (`SkbCtx`, `XdpCtx`) instead of written at byte offsets.
pub use aya::programs::{SchedClassifier, Xdp};
use aya::{TestRun, TestRunOptions, TestRunResult, programs::ProgramError};

/// The leading fields of `struct __sk_buff` (include/uapi/linux/bpf.h), up to `ifindex`,
/// the only one the tests set: the device the skb arrives on, which the programs read.
/// BPF_PROG_TEST_RUN takes a context shorter than the struct (it zeroes the rest) and refuses
/// non-zero values in the fields it does not model (of these, all but `mark`, `priority`,
/// `ingress_ifindex` and `ifindex`).
#[repr(C)]
#[derive(Default)]
struct SkbCtx {
    len: u32,
    pkt_type: u32,
    mark: u32,
    queue_mapping: u32,
    protocol: u32,
    vlan_present: u32,
    vlan_tci: u32,
    vlan_proto: u32,
    priority: u32,
    ingress_ifindex: u32,
    ifindex: u32,
}

// The uapi offset of `__sk_buff.ifindex`: a slip in the fields above would set another one.
const _: () = assert!(std::mem::offset_of!(SkbCtx, ifindex) == 40);

/// `struct xdp_md` (include/uapi/linux/bpf.h). BPF_PROG_TEST_RUN wants `data` 0, `data_end`
/// the frame's length and `data_meta`/`egress_ifindex` 0; `ingress_ifindex` (and
/// `rx_queue_index`) name the device and queue the frame arrives on.
#[repr(C)]
#[derive(Default)]
struct XdpCtx {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

/// The bytes of a context struct, as `ctx_in` takes them.
trait AsBytes: Sized {
    fn as_bytes(&self) -> &[u8] {
        // SAFETY: only implemented for `repr(C)` structs of u32 fields: no padding, every
        // byte initialised.
        unsafe { std::slice::from_raw_parts((self as *const Self).cast::<u8>(), size_of::<Self>()) }
    }
}
impl AsBytes for SkbCtx {}
impl AsBytes for XdpCtx {}

/// Opens the TC program `switch up` pinned at `path`.
pub fn tc_program(path: &str) -> Result<SchedClassifier, ProgramError> {
    SchedClassifier::from_pin(path)
}

/// Opens the XDP program pinned at `path`.
pub fn xdp_program(path: &str) -> Result<Xdp, ProgramError> {
    // The attach type only matters for attaching, which the tests do not do.
    Xdp::from_pin(path, aya_obj::programs::XdpAttachType::Interface)
}

/// What one run of the program did.
#[derive(Debug)]
pub struct Outcome {
    /// The program's return value (TC_ACT_* or XDP_*).
    pub retval: i32,
    /// The packet after the program.
    pub data: Vec<u8>,
}

/// TC verdicts the tests compare against.
pub const TC_ACT_UNSPEC: i32 = -1;
/// Drop.
pub const TC_ACT_SHOT: i32 = 2;
/// Redirected (known unicast, or the last port of a flood).
pub const TC_ACT_REDIRECT: i32 = 7;

/// Runs `prog` once on `frame` with context `ctx`.
fn run<P>(prog: &P, frame: &[u8], ctx: &[u8]) -> Result<Outcome, ProgramError>
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = TestRunResult>,
{
    // Room for what a program may add (none of ours grows a packet).
    let mut out = vec![0u8; frame.len() + 256];
    let r = prog.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ctx_in: Some(ctx),
        ..TestRunOptions::new()
    })?;
    out.truncate(r.data_size_out as usize);
    Ok(Outcome { retval: r.return_value as i32, data: out })
}

/// Runs the TC program `prog` once on `frame` as if it arrived on interface `ifindex`.
pub fn run_tc(prog: &SchedClassifier, frame: &[u8], ifindex: u32) -> Result<Outcome, ProgramError> {
    run(prog, frame, SkbCtx { ifindex, ..SkbCtx::default() }.as_bytes())
}

/// Runs the TC program `prog` once on `frame` on interface `ifindex` as a packet the host
/// routed there from interface `from` (its `ingress_ifindex`; 0: one the host made itself).
pub fn run_tc_routed(prog: &SchedClassifier, frame: &[u8], ifindex: u32, from: u32) -> Result<Outcome, ProgramError> {
    run(prog, frame, SkbCtx { ifindex, ingress_ifindex: from, ..SkbCtx::default() }.as_bytes())
}

/// Runs the XDP program `prog` once on `frame` as if it arrived on interface `ifindex`.
pub fn run_xdp(prog: &Xdp, frame: &[u8], ifindex: u32) -> Result<Outcome, ProgramError> {
    let ctx = XdpCtx { data_end: frame.len() as u32, ingress_ifindex: ifindex, ..XdpCtx::default() };
    run(prog, frame, ctx.as_bytes())
}

/// Pads a generated frame to what BPF_PROG_TEST_RUN accepts: the kernel refuses (EINVAL) an
/// IPv4 or IPv6 frame shorter than its fixed L3 header (34 and 54 bytes with Ethernet), so
/// such runts are tried padded with zeros. Every other frame of at least 14 bytes runs as it is.
pub fn pad_for_test_run(f: &mut Vec<u8>) {
    let min = match f.get(12..14) {
        Some([0x08, 0x00]) => 34,
        Some([0x86, 0xdd]) => 54,
        _ => 14,
    };
    if f.len() < min {
        f.resize(min, 0);
    }
}

/// An Ethernet frame: `dst`, `src`, EtherType, then `payload_len` bytes of a pattern.
pub fn frame(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload_len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload_len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend((0..payload_len).map(|i| (i * 7 + 3) as u8));
    f
}

/// A small pool of MACs for random frames: six unicast stations, broadcast, an IPv4 and an
/// IPv6 multicast group, and zero; so that learning, moves, known unicast and drops all happen
/// often.
pub fn mac_pool() -> Vec<[u8; 6]> {
    (0..6u8)
        .map(|i| [0x02, 0, 0, 0, 0x77, i])
        .chain([[0xff; 6], [0x01, 0, 0x5e, 0, 0, 9], [0x33, 0x33, 0, 0, 0, 1], [0; 6]])
        .collect()
}

/// A random frame of 14 to 1513 arbitrary bytes; seven in eight take their destination and
/// source MACs from `pool`.
pub fn random_frame(rng: &mut crate::Rng, pool: &[[u8; 6]]) -> Vec<u8> {
    let len = 14 + (rng.next_u64() % 1500) as usize;
    let mut f: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
    if !rng.next_u64().is_multiple_of(8) {
        f[..6].copy_from_slice(&pool[(rng.next_u64() % pool.len() as u64) as usize]);
        f[6..12].copy_from_slice(&pool[(rng.next_u64() % pool.len() as u64) as usize]);
    }
    f
}

/// A random IPv6 frame that looks like what port security parses: MACs from `pool`, a source
/// from `sources` (or random), a chain of up to seven extension headers (hop-by-hop,
/// destination options, routing, fragment, AH: random lengths and fragment offsets; mostly
/// two at most), then
/// ICMPv6 (neighbour discovery, router advertisement, redirect, listener reports, echo: with
/// link-layer options of `pool`'s MACs), UDP or TCP; cut short at a random point one time in
/// eight.
pub fn random_ipv6_frame(rng: &mut crate::Rng, pool: &[[u8; 6]], sources: &[[u8; 16]]) -> Vec<u8> {
    let mut pick = |n: usize| (rng.next_u64() % n as u64) as usize;
    let mut f = Vec::with_capacity(256);
    f.extend_from_slice(&pool[pick(pool.len())]);
    f.extend_from_slice(&pool[pick(pool.len())]);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, 0, 59, 255]);
    let src = if pick(6) == 0 { [pick(256) as u8; 16] } else { sources[pick(sources.len())] };
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    let mut next_at = 20;
    // Mostly short chains (real stacks send at most a few headers); one in eight up to seven.
    let headers = if pick(8) == 0 { pick(8) } else { pick(3) };
    for _ in 0..headers {
        let (kind, body): (u8, Vec<u8>) = match pick(5) {
            0 => (0, vec![0; 6 + 8 * pick(3)]),
            1 => (60, vec![0; 6 + 8 * pick(3)]),
            2 => (43, vec![0; 6 + 8 * pick(2)]),
            3 => (44, [((pick(4) as u16) << 3 | pick(2) as u16).to_be_bytes().to_vec(), vec![0; 4]].concat()),
            _ => (51, vec![0; 6 + 4 * pick(3)]),
        };
        f[next_at] = kind;
        next_at = f.len();
        // Length byte as the header's kind counts it (AH: 4-byte units minus 2, others: 8-byte
        // units minus 1).
        let len = if kind == 51 { (body.len() + 2) / 4 - 2 } else { (body.len() + 2) / 8 - 1 };
        f.extend_from_slice(&[0, if kind == 44 { 0 } else { len as u8 }]);
        f.extend_from_slice(&body);
    }
    match pick(4) {
        0 => {
            f[next_at] = 17;
            f.extend_from_slice(&[0xd4, 0x31, 0, 53, 0, 8, 0, 0]);
        }
        1 => {
            f[next_at] = 6;
            f.extend_from_slice(&[0; 20]);
        }
        _ => {
            f[next_at] = 58;
            let kind = [128, 129, 131, 133, 134, 135, 136, 137, 143][pick(9)];
            f.extend_from_slice(&[kind, 0, 0, 0, 0, 0, 0, 0]);
            if (135..=137).contains(&kind) {
                let target = if pick(2) == 0 { sources[pick(sources.len())] } else { [pick(256) as u8; 16] };
                f.extend_from_slice(&target);
            }
            for _ in 0..pick(4) {
                let mac = pool[pick(pool.len())];
                match pick(4) {
                    0 => f.extend_from_slice(&[pick(20) as u8, 1 + pick(2) as u8, 0, 0, 0, 0, 0, 0]),
                    _ => f.extend_from_slice(&[[1, 2][pick(2)], 1, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]]),
                }
            }
        }
    }
    let payload = (f.len() - 54) as u16;
    f[18..20].copy_from_slice(&payload.to_be_bytes());
    if pick(8) == 0 {
        f.truncate(14 + pick(f.len() - 14));
    }
    f
}

/// Replaces the pinned map at `path` with a new, empty per-CPU array of `max_entries` values
/// of `value_size` bytes: a map as a switch made by another version of the binary has it (the
/// layout of a shared type changed). aya makes maps only from an object, so this is the bare
/// `BPF_MAP_CREATE` and `BPF_OBJ_PIN`.
pub fn pin_percpu_array(path: &str, value_size: u32, max_entries: u32) -> std::io::Result<()> {
    use std::ffi::CString;
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_OBJ_PIN: libc::c_long = 6;
    const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
    // The leading fields of `union bpf_attr` for BPF_MAP_CREATE (map_type .. map_flags); the
    // kernel takes a shorter attr and zeroes the rest.
    #[repr(C)]
    struct MapCreate {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
    }
    // `union bpf_attr` for BPF_OBJ_PIN: pathname, bpf_fd, file_flags.
    #[repr(C)]
    struct ObjPin {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    let create = MapCreate { map_type: BPF_MAP_TYPE_PERCPU_ARRAY, key_size: 4, value_size, max_entries, map_flags: 0 };
    // SAFETY: the attr is a valid, initialised struct of the size passed.
    let fd = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_MAP_CREATE, &create as *const MapCreate, std::mem::size_of::<MapCreate>())
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let _ = std::fs::remove_file(path);
    let c = CString::new(path).expect("no NUL in a path");
    let pin = ObjPin { pathname: c.as_ptr() as u64, bpf_fd: fd as u32, file_flags: 0 };
    // SAFETY: as above; `c` outlives the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_PIN, &pin as *const ObjPin, std::mem::size_of::<ObjPin>()) };
    // SAFETY: `fd` is ours; the pin holds the map from here.
    unsafe { libc::close(fd as i32) };
    if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}
