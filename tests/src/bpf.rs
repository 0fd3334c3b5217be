//! Just enough of the bpf(2) system call to run the real, loaded datapath program on crafted
//! frames with BPF_PROG_TEST_RUN: packet in, verdict and packet out, in microseconds and with
//! no traffic generator.
use std::{
    ffi::CString,
    io,
    os::fd::{FromRawFd as _, OwnedFd},
};

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
/// Offset of `ifindex` in `struct __sk_buff` (after len, pkt_type, mark, queue_mapping,
/// protocol, vlan_present, vlan_tci, vlan_proto, priority, ingress_ifindex).
const SKB_IFINDEX_OFFSET: usize = 40;

fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a zero-initialised bpf_attr-sized buffer the kernel reads and writes.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

fn put_u32(attr: &mut [u8; 128], at: usize, v: u32) {
    attr[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(attr: &mut [u8; 128], at: usize, v: u64) {
    attr[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

fn get_u32(attr: &[u8; 128], at: usize) -> u32 {
    u32::from_ne_bytes(attr[at..at + 4].try_into().unwrap())
}

/// Opens a pinned program (or map) by its bpffs path.
pub fn obj_get(path: &str) -> io::Result<OwnedFd> {
    let c = CString::new(path).unwrap();
    let mut attr = [0u8; 128];
    put_u64(&mut attr, 0, c.as_ptr() as u64);
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: the kernel returned a new descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// What one run of the program did.
#[derive(Debug)]
pub struct Outcome {
    /// The program's return value (TC_ACT_*).
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

/// Runs the TC program `prog` once on `frame` as if it arrived on interface `ifindex`.
pub fn run_tc(prog: &OwnedFd, frame: &[u8], ifindex: u32) -> io::Result<Outcome> {
    use std::os::fd::AsRawFd as _;
    let mut out = vec![0u8; frame.len() + 256];
    let mut ctx = [0u8; SKB_IFINDEX_OFFSET + 4];
    ctx[SKB_IFINDEX_OFFSET..].copy_from_slice(&ifindex.to_ne_bytes());
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, prog.as_raw_fd() as u32); // prog_fd
    put_u32(&mut attr, 8, frame.len() as u32); // data_size_in
    put_u32(&mut attr, 12, out.len() as u32); // data_size_out
    put_u64(&mut attr, 16, frame.as_ptr() as u64); // data_in
    put_u64(&mut attr, 24, out.as_mut_ptr() as u64); // data_out
    put_u32(&mut attr, 32, 1); // repeat
    put_u32(&mut attr, 40, ctx.len() as u32); // ctx_size_in
    put_u64(&mut attr, 48, ctx.as_ptr() as u64); // ctx_in
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    out.truncate(get_u32(&attr, 12) as usize);
    Ok(Outcome { retval: get_u32(&attr, 4) as i32, data: out })
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

/// Runs the XDP program `prog` once on `frame` as if it arrived on interface `ifindex`.
pub fn run_xdp(prog: &OwnedFd, frame: &[u8], ifindex: u32) -> io::Result<Outcome> {
    use std::os::fd::AsRawFd as _;
    let mut out = vec![0u8; frame.len() + 256];
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
    let md: [u32; 6] = [0, frame.len() as u32, 0, ifindex, 0, 0];
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, prog.as_raw_fd() as u32);
    put_u32(&mut attr, 8, frame.len() as u32);
    put_u32(&mut attr, 12, out.len() as u32);
    put_u64(&mut attr, 16, frame.as_ptr() as u64);
    put_u64(&mut attr, 24, out.as_mut_ptr() as u64);
    put_u32(&mut attr, 32, 1);
    put_u32(&mut attr, 40, 24);
    put_u64(&mut attr, 48, md.as_ptr() as u64);
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    out.truncate(get_u32(&attr, 12) as usize);
    Ok(Outcome { retval: get_u32(&attr, 4) as i32, data: out })
}
