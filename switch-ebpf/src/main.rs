//! The switch's in-kernel datapath.
//!
//! One entry file per attach point (`tc_ingress.rs`, `xdp_ingress.rs`), shared helpers in `helpers/`. The packet path
//! reads top to bottom in `tc_ingress.rs`.
#![no_std]
#![no_main]

mod helpers;
mod nat_uplink;
mod sock_addr;
mod tc_ingress;
mod xdp_ingress;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any path that could reach a real panic, so this is never entered.
    loop {}
}

// GPL-compatible: bpf_redirect_peer and the ring buffer used by aya-log are GPL-only helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
