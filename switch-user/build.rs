//! Compiles the eBPF datapath (`switch-ebpf`) for the bpfel target with the nightly toolchain
//! and bpf-linker; `src/datapath/loader.rs` embeds the resulting object.
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new().no_deps().exec().context("reading workspace metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "switch-ebpf")
        .ok_or_else(|| anyhow!("switch-ebpf package not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("switch-ebpf manifest has no parent directory"))?
        .as_str()
        .to_owned();
    aya_build::build_ebpf(
        [aya_build::Package { name: ebpf.name.as_str(), root_dir: &root_dir, ..Default::default() }],
        aya_build::Toolchain::default(),
    )
}
