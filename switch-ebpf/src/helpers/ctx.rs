//! Safe accessors for what the programs read from their context and from the kernel: each
//! wraps the one `unsafe` block its read needs, so the programs have none of their own.
use aya_ebpf::{
    helpers::generated::{bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_ktime_get_coarse_ns},
    programs::{SockAddrContext, TcContext, XdpContext},
};

/// The interface the skb is on: at TC ingress, the one it arrived on.
#[inline(always)]
pub fn skb_ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: `ctx.skb.skb` is the `__sk_buff` the kernel passed to the program, valid for the
    // whole run; the verifier turns this load into a read of the real skb's field.
    unsafe { (*ctx.skb.skb).ifindex }
}

/// Whether the skb carries a VLAN tag in its metadata (the kernel moved the frame's outer tag
/// there on receive, or the sender's VLAN device never put it in the bytes).
#[inline(always)]
pub fn skb_vlan_present(ctx: &TcContext) -> bool {
    // SAFETY: as in `skb_ifindex`.
    unsafe { (*ctx.skb.skb).vlan_present != 0 }
}

/// The interface the packet entered the host on (`skb_iif`), read at TC egress: 0 for a
/// packet the host made itself, else the interface it was received on before the host routed
/// (or a program redirected) it here.
#[inline(always)]
pub fn skb_ingress_ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: as in `skb_ifindex`.
    unsafe { (*ctx.skb.skb).ingress_ifindex }
}

/// Whether the skb carries IPv6 (its `protocol`, set by the stack that routed it).
#[inline(always)]
pub fn skb_is_ipv6(ctx: &TcContext) -> bool {
    // SAFETY: as in `skb_ifindex`.
    let proto = unsafe { (*ctx.skb.skb).protocol };
    u16::from_be(proto as u16) == switch_common::ipv6::ETH_P_IPV6
}

/// The interface an XDP frame arrived on.
#[inline(always)]
pub fn xdp_ingress_ifindex(ctx: &XdpContext) -> u32 {
    // SAFETY: as in `skb_ifindex`, for the `xdp_md` of an XDP program.
    unsafe { (*ctx.ctx).ingress_ifindex }
}

/// CLOCK_MONOTONIC at tick precision (`bpf_ktime_get_coarse_ns`), the clock every `last_seen_ns`
/// in FDB and CONNTRACK is stamped with and the controller ages them against. Ageing counts in
/// seconds, so a tick (1-10 ms) is precise enough, and it costs a memory read where
/// `bpf_ktime_get_ns` reads the clock source.
#[inline(always)]
pub fn now_coarse_ns() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// The protocol (IPPROTO_*) of the socket a socket-address program runs for.
#[inline(always)]
pub fn sock_protocol(ctx: &SockAddrContext) -> u32 {
    // SAFETY: a field of the `bpf_sock_addr` the kernel passed in, valid for the whole run.
    unsafe { (*ctx.sock_addr).protocol }
}

/// The cookie of that socket: unique while it lives, the key of SOCK_ORIG.
#[inline(always)]
pub fn sock_cookie(ctx: &SockAddrContext) -> u64 {
    // SAFETY: helper on the program's own context.
    unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) }
}

/// The cookie of the socket's network namespace, the key of NAT_NETNS.
#[inline(always)]
pub fn sock_netns_cookie(ctx: &SockAddrContext) -> u64 {
    // SAFETY: helper on the program's own context.
    unsafe { bpf_get_netns_cookie(ctx.sock_addr.cast()) }
}

/// The IPv4 address (as on the wire) and port (host order) the system call names.
#[inline(always)]
pub fn sock_user_addr(ctx: &SockAddrContext) -> (u32, u16) {
    // SAFETY: fields of the `bpf_sock_addr` the kernel passed in; the port is the low 16 bits
    // of `user_port`, in network order.
    unsafe { ((*ctx.sock_addr).user_ip4, u16::from_be((*ctx.sock_addr).user_port as u16)) }
}

/// Points the system call at `addr:port` (connect4 and sendmsg4: where it goes; recvmsg4:
/// where the datagram is shown to come from). The verifier refuses the write in other hooks.
#[inline(always)]
pub fn sock_set_user_addr(ctx: &SockAddrContext, addr: u32, port: u16) {
    // SAFETY: as in `sock_user_addr`; these hooks may write both fields.
    unsafe {
        (*ctx.sock_addr).user_ip4 = addr;
        (*ctx.sock_addr).user_port = u32::from(port.to_be());
    }
}
