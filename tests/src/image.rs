//! The container image of the runtime tests, made from busybox-static without a registry: its
//! root file system for `podman import`, and the same as an OCI image archive for
//! `ctr image import` (containerd imports archives, not plain root file systems).
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::json;

use crate::Run;

fn run(cmd: &mut Command) -> Run {
    cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}")).into()
}

/// Writes busybox-static's root file system into `rootfs`: the binary and a link per applet
/// in `bin/` (the image's `PATH` must be `/bin`).
pub fn busybox_rootfs(rootfs: &Path) {
    let bin = rootfs.join("bin");
    fs::create_dir_all(&bin).unwrap_or_else(|e| panic!("creating {}: {e}", bin.display()));
    fs::copy("/bin/busybox", bin.join("busybox")).expect("copying /bin/busybox (package busybox-static)");
    let list = run(Command::new("/bin/busybox").arg("--list"));
    assert_eq!(list.code, 0, "busybox --list: {}", list.stderr);
    // The list names `busybox` itself: linking it would overwrite the binary.
    for applet in list.stdout.lines().filter(|a| !a.is_empty() && *a != "busybox") {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
}

/// `tar -C dir -cf tar .`
fn tar(dir: &Path, tar: &Path) {
    let r = run(Command::new("tar").arg("-C").arg(dir).arg("-cf").arg(tar).arg("."));
    assert_eq!(r.code, 0, "tar of {}: {}", dir.display(), r.stderr);
}

/// Moves `file` into the layout's blob directory under its digest; returns its descriptor
/// (`mediaType`, `digest`, `size`).
fn blob(blobs: &Path, file: &Path, media_type: &str) -> serde_json::Value {
    let sum = run(Command::new("sha256sum").arg(file));
    assert_eq!(sum.code, 0, "sha256sum {}: {}", file.display(), sum.stderr);
    let hex = sum.stdout.split_whitespace().next().expect("sha256sum printed a digest").to_owned();
    let size = fs::metadata(file).unwrap().len();
    fs::rename(file, blobs.join(&hex)).unwrap();
    json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": size})
}

/// Writes an OCI image archive (image layout 1.0.0, one uncompressed layer) of busybox-static
/// named `name` (`CMD /bin/sh`, `PATH=/bin`) into `dir`, using `dir` as scratch space; returns
/// the archive. containerd takes the name from the index's `io.containerd.image.name`.
pub fn busybox_oci_archive(dir: &Path, name: &str) -> PathBuf {
    let (rootfs, layout) = (dir.join("rootfs"), dir.join("oci"));
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    busybox_rootfs(&rootfs);
    let layer_tar = dir.join("layer.tar");
    tar(&rootfs, &layer_tar);
    let layer = blob(&blobs, &layer_tar, "application/vnd.oci.image.layer.v1.tar");
    // An uncompressed layer's diff ID is its own digest.
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},
    });
    let config = write_blob(&blobs, dir, &config, "application/vnd.oci.image.config.v1+json");
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config,
        "layers": [layer],
    });
    let mut manifest = write_blob(&blobs, dir, &manifest, "application/vnd.oci.image.manifest.v1+json");
    manifest["annotations"] = json!({"io.containerd.image.name": name});
    let index = json!({"schemaVersion": 2, "manifests": [manifest]});
    fs::write(layout.join("index.json"), index.to_string()).unwrap();
    fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let archive = dir.join("image.tar");
    tar(&layout, &archive);
    let _ = fs::remove_dir_all(&rootfs);
    let _ = fs::remove_dir_all(&layout);
    archive
}

fn write_blob(blobs: &Path, scratch: &Path, v: &serde_json::Value, media_type: &str) -> serde_json::Value {
    let file = scratch.join("blob.json");
    fs::write(&file, v.to_string()).unwrap();
    blob(blobs, &file, media_type)
}
