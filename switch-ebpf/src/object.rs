//! What every eBPF object built from this crate (`main.rs`, `lane_steer.rs`: one `[[bin]]`
//! each) needs once at its root, declared once here as a module of each.

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any path that could reach a real panic, so this is never entered.
    loop {}
}

// GPL-compatible: bpf_redirect_peer and the ring buffer used by aya-log are GPL-only helpers.
// `no_mangle` keeps the name and the section whichever module declares it.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
