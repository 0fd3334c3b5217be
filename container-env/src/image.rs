//! The image every environment's containers run, made from busybox-static without a
//! registry: its root file system (for `podman import`), and the same as an OCI image archive
//! (for `ctr image import`: containerd imports archives, not plain root file systems), and the
//! sandbox ("pause") image of the CRI plugin's pods.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::json;

use crate::{Error, Result, command::output};

/// Writes busybox-static's root file system into `rootfs`: the binary and a link per applet
/// in `bin/` (the image's `PATH` must be `/bin`: without it nothing is found).
pub fn busybox_rootfs(rootfs: &Path) -> Result<()> {
    let bin = rootfs.join("bin");
    fs::create_dir_all(&bin).map_err(Error::io(format!("creating {}", bin.display())))?;
    fs::copy("/bin/busybox", bin.join("busybox"))
        .map_err(Error::io("copying /bin/busybox (package busybox-static)"))?;
    let list = output(Command::new("/bin/busybox").arg("--list"))?;
    // The list names `busybox` itself: linking it would overwrite the binary.
    for applet in list.lines().filter(|a| !a.is_empty() && *a != "busybox") {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).map_err(Error::io(format!("linking {applet}")))?;
    }
    Ok(())
}

/// `tar -C dir -cf tar .`
pub fn tar(dir: &Path, tar: &Path) -> Result<()> {
    output(Command::new("tar").arg("-C").arg(dir).arg("-cf").arg(tar).arg(".")).map(drop)
}

/// Moves `file` into the layout's blob directory under its digest; returns its descriptor
/// (`mediaType`, `digest`, `size`).
fn blob(blobs: &Path, file: &Path, media_type: &str) -> Result<serde_json::Value> {
    let sum = output(Command::new("sha256sum").arg(file))?;
    let hex = sum.split_whitespace().next().unwrap_or_default().to_owned();
    let size = fs::metadata(file).map_err(Error::io(format!("reading {}", file.display())))?.len();
    fs::rename(file, blobs.join(&hex)).map_err(Error::io(format!("moving {} into the layout", file.display())))?;
    Ok(json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": size}))
}

fn write_blob(blobs: &Path, scratch: &Path, v: &serde_json::Value, media_type: &str) -> Result<serde_json::Value> {
    let file = scratch.join("blob.json");
    fs::write(&file, v.to_string()).map_err(Error::io(format!("writing {}", file.display())))?;
    blob(blobs, &file, media_type)
}

/// Writes an OCI image archive (image layout 1.0.0, one uncompressed layer) of busybox-static
/// named `name` (`CMD /bin/sh`, `PATH=/bin`) into `dir`, using `dir` as scratch space; returns
/// the archive. containerd takes the name from the index's `io.containerd.image.name`.
pub fn busybox_oci_archive(dir: &Path, name: &str) -> Result<PathBuf> {
    let config = json!({"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]});
    oci_archive(dir, name, &config, busybox_rootfs)
}

/// What a pod sandbox's "pause" container runs: a process that waits forever (about 68
/// years), holding the pod's namespaces.
pub const PAUSE: [&str; 2] = ["/bin/sleep", "2147483647"];

/// Writes the OCI image archive of a sandbox ("pause") image named `name` into `dir`, as
/// [`busybox_oci_archive`] does: busybox-static's `sleep` alone, running [`PAUSE`]. The CRI
/// plugin runs it as the first container of every pod (kubelet's runtimes pull
/// registry.k8s.io/pause; no registry is reachable here).
pub fn pause_oci_archive(dir: &Path, name: &str) -> Result<PathBuf> {
    let config = json!({"Env": ["PATH=/bin"], "Entrypoint": PAUSE});
    oci_archive(dir, name, &config, |rootfs| {
        let bin = rootfs.join("bin");
        fs::create_dir_all(&bin).map_err(Error::io(format!("creating {}", bin.display())))?;
        fs::copy("/bin/busybox", bin.join("busybox"))
            .map_err(Error::io("copying /bin/busybox (package busybox-static)"))?;
        std::os::unix::fs::symlink("busybox", bin.join("sleep")).map_err(Error::io("linking sleep"))
    })
}

/// Writes an OCI image archive named `name` of the root file system `make_rootfs` writes, with
/// image configuration `config` (`Env`, `Cmd`, `Entrypoint`), into `dir`; returns the archive.
fn oci_archive(
    dir: &Path,
    name: &str,
    config: &serde_json::Value,
    make_rootfs: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let (rootfs, layout) = (dir.join("rootfs"), dir.join("oci"));
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(Error::io(format!("creating {}", blobs.display())))?;
    make_rootfs(&rootfs)?;
    let layer_tar = dir.join("layer.tar");
    tar(&rootfs, &layer_tar)?;
    let layer = blob(&blobs, &layer_tar, "application/vnd.oci.image.layer.v1.tar")?;
    // An uncompressed layer's diff ID is its own digest.
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},
    });
    let config = write_blob(&blobs, dir, &config, "application/vnd.oci.image.config.v1+json")?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config,
        "layers": [layer],
    });
    let mut manifest = write_blob(&blobs, dir, &manifest, "application/vnd.oci.image.manifest.v1+json")?;
    manifest["annotations"] = json!({"io.containerd.image.name": name});
    let index = json!({"schemaVersion": 2, "manifests": [manifest]});
    let write = |file: &str, s: &str| fs::write(layout.join(file), s).map_err(Error::io(format!("writing {file}")));
    write("index.json", &index.to_string())?;
    write("oci-layout", r#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let archive = dir.join("image.tar");
    tar(&layout, &archive)?;
    let _ = fs::remove_dir_all(&rootfs);
    let _ = fs::remove_dir_all(&layout);
    Ok(archive)
}
