//! cgroup socket-address programs: forwarded ports reached from this host.
//!
//! Traffic a host process (or a process in a switch namespace: hairpin) sends to
//! UPLINK_ADDR:PORT or, from the host, to 127.0.0.1:PORT never crosses an uplink, so the TC
//! programs cannot translate it. Instead `connect()`/`sendmsg()` are pointed at the target
//! directly, before any packet exists: no NAT on the wire, no proxy process, and the server
//! sees the real client address. `recvmsg()` shows UDP replies as coming from the address the
//! application used.
use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};
use switch_common::{FwdKey, FwdTarget, SockOrig, nat::PROTO_UDP};

use crate::helpers::{
    ctx::{sock_cookie, sock_netns_cookie, sock_protocol, sock_set_user_addr, sock_user_addr},
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
    let (addr, port) = sock_user_addr(ctx);
    let proto = sock_protocol(ctx) as u8;
    // Only the host and the switch's own namespaces (hairpin) are pointed at targets: any
    // other namespace reaches the uplink address like a machine outside would, through the
    // uplink and the TC programs. 127.0.0.1 means the forward only for the host itself.
    let host = NAT_CONFIG.get(0).map_or(0, |c| c.host_netns_cookie);
    let netns = sock_netns_cookie(ctx);
    let from_host = host != 0 && netns == host;
    // The gateway's address is the host as the switch's namespaces see it: a forwarded port
    // answers there too (for them and for the host), as it does on the uplink addresses.
    let gateway = NAT_CONFIG.get(0).map_or(0, |c| c.gateway_addr);
    // SAFETY (the map lookups below): presence checks, no value is read.
    if addr == LOOPBACK {
        if !from_host {
            return None;
        }
    } else if (addr != gateway && unsafe { UPLINK_ADDRS.get(&addr) }.is_none())
        || !(from_host || unsafe { NAT_NETNS.get(&netns) }.is_some())
    {
        return None;
    }
    // SAFETY: value copied out at once.
    let t = unsafe { FORWARDS.get(&FwdKey { port, proto, pad: 0 }) }.copied()?;
    Some((addr, port, t))
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
    if sock_protocol(ctx) == u32::from(PROTO_UDP) {
        remember(ctx, addr, port, &t);
    }
    sock_set_user_addr(ctx, t.addr, t.port);
    count(t.rule, 0, new_connection);
}

/// Records, per UDP socket, where the application meant to send (`sock_recvmsg4` shows the
/// replies as coming from there).
#[inline(always)]
fn remember(ctx: &SockAddrContext, addr: u32, port: u16, t: &FwdTarget) {
    let cookie = sock_cookie(ctx);
    let orig = SockOrig { addr, port, target_port: t.port, target_addr: t.addr, pad: 0 };
    let _ = SOCK_ORIG.insert(&cookie, &orig, 0);
}

#[cgroup_sock_addr(recvmsg4)]
pub fn sock_recvmsg4(ctx: SockAddrContext) -> i32 {
    // SAFETY: value copied out at once.
    if let Some(o) = unsafe { SOCK_ORIG.get(&sock_cookie(&ctx)) }.copied()
        && sock_user_addr(&ctx) == (o.target_addr, o.target_port)
    {
        sock_set_user_addr(&ctx, o.addr, o.port);
    }
    ALLOW
}
