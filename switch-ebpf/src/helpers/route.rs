//! Routing in the datapath: the kernel's FIB says where a translated packet goes and which
//! MACs it gets, so forwarded traffic skips the host's IP stack (and netfilter) entirely.
use aya_ebpf::{
    bindings::{BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup},
    helpers::generated::bpf_fib_lookup as fib_lookup,
    programs::TcContext,
};

use switch_common::nat::PROTO_TCP;

use super::ipv4::{Flow, IP_OFF};

/// Next hop of packet `f` (whatever its addresses are now) from `src` to `dst` arriving on
/// `ifindex`: (egress ifindex, source MAC, destination MAC). `None` when the kernel cannot say
/// without the stack (no route, the neighbour not resolved yet) or the packet is too big for
/// the egress device: the caller then lets the stack handle it, which resolves the neighbour
/// for the next one, or fragments the packet, or answers "fragmentation needed" so that path
/// MTU discovery works.
#[inline(always)]
pub fn next_hop(ctx: &TcContext, f: &Flow, src: u32, dst: u32, ifindex: u32) -> Option<(u32, [u8; 6], [u8; 6])> {
    // SAFETY: all-zero is a valid bpf_fib_lookup (the kernel fills the outputs).
    let mut p: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    p.family = 2; // AF_INET
    p.l4_protocol = f.proto;
    p.ifindex = ifindex;
    // tot_len stays 0: the kernel then checks the skb itself against the egress device's MTU
    // (FRAG_NEEDED when it is too big) and reports that MTU, but waves any GSO packet
    // through: its segments are checked below.
    p.__bindgen_anon_3.ipv4_src = src;
    p.__bindgen_anon_4.ipv4_dst = dst;
    // SAFETY: helper with the program's context and a live parameter block of the right size.
    let r = unsafe { fib_lookup(ctx.skb.skb.cast(), &mut p, core::mem::size_of::<bpf_fib_lookup>() as i32, 0) };
    if r != BPF_FIB_LKUP_RET_SUCCESS as i64 {
        return None;
    }
    // SAFETY: `gso_size` of the program's own `__sk_buff`; `mtu_result` is what the kernel
    // wrote into the union on success.
    let (gso_size, mtu) = unsafe { ((*ctx.skb.skb).gso_size, p.__bindgen_anon_1.mtu_result) };
    if gso_size != 0 && !segments_fit(ctx, f, gso_size, u32::from(mtu)) {
        return None;
    }
    Some((p.ifindex, p.smac, p.dmac))
}

/// Whether the packets a GSO packet of `f` is cut into (`gso_size` bytes of payload each,
/// plus the IP and TCP/UDP headers) fit an MTU of `mtu`.
#[inline(always)]
fn segments_fit(ctx: &TcContext, f: &Flow, gso_size: u32, mtu: u32) -> bool {
    let l4_header = if f.proto == PROTO_TCP {
        // The data offset: the high nibble of byte 12, in 32-bit words.
        let Ok(off) = ctx.load::<u8>(f.l4_off + 12) else { return false };
        u32::from(off >> 4) * 4
    } else {
        8
    };
    (f.l4_off - IP_OFF) as u32 + l4_header + gso_size <= mtu
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
