//! Routing in the datapath: the kernel's FIB says where a translated packet goes and which
//! MACs it gets, so forwarded traffic skips the host's IP stack (and netfilter) entirely.
use aya_ebpf::{
    bindings::{BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup},
    helpers::generated::bpf_fib_lookup as fib_lookup,
    programs::TcContext,
};

use super::ipv4::IP_OFF;

/// Next hop of a packet from `src` to `dst` arriving on `ifindex`: (egress ifindex, source
/// MAC, destination MAC). `None` when the kernel cannot say without the stack (no route, or
/// the neighbour is not resolved yet): the caller then lets the stack handle the packet, which
/// also resolves the neighbour for the next one.
#[inline(always)]
pub fn next_hop(ctx: &TcContext, src: u32, dst: u32, proto: u8, ifindex: u32) -> Option<(u32, [u8; 6], [u8; 6])> {
    // SAFETY: all-zero is a valid bpf_fib_lookup (the kernel fills the outputs).
    let mut p: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    p.family = 2; // AF_INET
    p.l4_protocol = proto;
    p.ifindex = ifindex;
    // tot_len stays 0: no MTU check, GSO super-frames are larger than the MTU on purpose.
    p.__bindgen_anon_3.ipv4_src = src;
    p.__bindgen_anon_4.ipv4_dst = dst;
    // SAFETY: helper with the program's context and a live parameter block of the right size.
    let r = unsafe { fib_lookup(ctx.skb.skb.cast(), &mut p, core::mem::size_of::<bpf_fib_lookup>() as i32, 0) };
    (r == BPF_FIB_LKUP_RET_SUCCESS as i64).then_some((p.ifindex, p.smac, p.dmac))
}

/// Does a router's part: TTL down by one (IP checksum updated) and new MACs. `Err` for a TTL
/// that would expire: the stack then sends the ICMP error.
#[inline(always)]
pub fn as_router(ctx: &TcContext, smac: &[u8; 6], dmac: &[u8; 6]) -> Result<(), i64> {
    let word: u16 = ctx.load(IP_OFF + 8)?; // TTL and protocol, as on the wire
    let ttl = word.to_ne_bytes()[0];
    if ttl <= 1 {
        return Err(-1);
    }
    let mut bytes = word.to_ne_bytes();
    bytes[0] = ttl - 1;
    let new = u16::from_ne_bytes(bytes);
    ctx.l3_csum_replace(IP_OFF + 10, word as u64, new as u64, 2)?;
    ctx.store(IP_OFF + 8, &new, 0)?;
    ctx.store(0, dmac, 0)?;
    ctx.store(6, smac, 0)?;
    Ok(())
}
