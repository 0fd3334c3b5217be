//! cgroup socket-address programs: forwarded ports reached from this host.
//!
//! Traffic a host process (or a process in a switch namespace: hairpin) sends to
//! UPLINK_ADDR:PORT or, from the host, to 127.0.0.1:PORT never crosses an uplink, so the TC
//! programs cannot translate it. Instead `connect()`/`sendmsg()` are pointed at the target
//! directly, before any packet exists: no NAT on the wire, no proxy process, and the server
//! sees the real client address. `recvmsg()` shows UDP replies as coming from the address the
//! application used.
use aya_ebpf::{
    helpers::generated::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use switch_common::{FwdKey, FwdTarget, SockOrig, nat::PROTO_UDP};

use crate::helpers::{
    maps::{FORWARDS, NAT_CONFIG, NAT_NETNS, SOCK_ORIG, UPLINK_ADDRS},
    nat::count,
};

/// Lets the system call go on (with whatever address is in the context now).
const ALLOW: i32 = 1;

/// 127.0.0.1 as the datapath keeps addresses.
const LOOPBACK: u32 = u32::from_ne_bytes([127, 0, 0, 1]);

/// The forward a system call to the context's address should use, if any.
#[inline(always)]
fn target(ctx: &SockAddrContext) -> Option<(u32, u16, FwdTarget)> {
    // SAFETY: fields of the context the kernel passed in.
    let (addr, port, proto) = unsafe {
        let sa = &*ctx.sock_addr;
        (sa.user_ip4, u16::from_be(sa.user_port as u16), sa.protocol as u8)
    };
    // Only the host and the switch's own namespaces (hairpin) are pointed at targets: any
    // other namespace reaches the uplink address like a machine outside would, through the
    // uplink and the TC programs. 127.0.0.1 means the forward only for the host itself.
    let host = NAT_CONFIG.get(0).map_or(0, |c| c.host_netns_cookie);
    // SAFETY: helper on the program's own context.
    let netns = unsafe { bpf_get_netns_cookie(ctx.sock_addr.cast()) };
    let from_host = host != 0 && netns == host;
    if addr == LOOPBACK {
        if !from_host {
            return None;
        }
    } else if unsafe { UPLINK_ADDRS.get(&addr) }.is_none() || !(from_host || unsafe { NAT_NETNS.get(&netns) }.is_some())
    {
        return None;
    }
    // SAFETY: value copied out at once.
    let t = unsafe { FORWARDS.get(&FwdKey { port, proto, pad: 0 }) }.copied()?;
    Some((addr, port, t))
}

#[inline(always)]
fn point_at(ctx: &SockAddrContext, t: &FwdTarget) {
    // SAFETY: connect4 and sendmsg4 may rewrite the destination in their context.
    unsafe {
        (*ctx.sock_addr).user_ip4 = t.addr;
        (*ctx.sock_addr).user_port = u32::from(t.port.to_be());
    }
}

#[cgroup_sock_addr(connect4)]
pub fn sock_connect4(ctx: SockAddrContext) -> i32 {
    redirect(&ctx, true);
    ALLOW
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sock_sendmsg4(ctx: SockAddrContext) -> i32 {
    // Every datagram of an unconnected socket passes here; only connect() counts a connection.
    redirect(&ctx, false);
    ALLOW
}

/// Points the system call at the forward's target, if its address is a forwarded one.
#[inline(always)]
fn redirect(ctx: &SockAddrContext, new_connection: bool) {
    let Some((addr, port, t)) = target(ctx) else { return };
    // SAFETY: field of the context the kernel passed in.
    if unsafe { (*ctx.sock_addr).protocol } == u32::from(PROTO_UDP) {
        remember(ctx, addr, port, &t);
    }
    point_at(ctx, &t);
    count(t.rule, 0, new_connection);
}

/// Records, per UDP socket, where the application meant to send (`sock_recvmsg4` shows the
/// replies as coming from there).
#[inline(always)]
fn remember(ctx: &SockAddrContext, addr: u32, port: u16, t: &FwdTarget) {
    // SAFETY: helper on the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    let orig = SockOrig { addr, port, target_port: t.port, target_addr: t.addr, pad: 0 };
    let _ = SOCK_ORIG.insert(&cookie, &orig, 0);
}

#[cgroup_sock_addr(recvmsg4)]
pub fn sock_recvmsg4(ctx: SockAddrContext) -> i32 {
    // SAFETY: helper on the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    // SAFETY: value copied out at once.
    if let Some(o) = unsafe { SOCK_ORIG.get(&cookie) }.copied() {
        // SAFETY: recvmsg4 may rewrite the source shown to the application.
        unsafe {
            let sa = &mut *ctx.sock_addr;
            if sa.user_ip4 == o.target_addr && u16::from_be(sa.user_port as u16) == o.target_port {
                sa.user_ip4 = o.addr;
                sa.user_port = u32::from(o.port.to_be());
            }
        }
    }
    ALLOW
}
