fn main() -> aya_build::Result<()> {
    // Tells the crate which architecture's helper bindings to use (`bpf_target_arch`).
    aya_build::emit_bpf_target_arch_cfg()
}
