//! Checks run before a command changes anything, so a machine that cannot run the switch gets
//! one clear line instead of a failure half-way.
use crate::error::{Error, Result};

/// bpffs magic number (`BPF_FS_MAGIC` in linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// Where pins live.
pub const BPFFS: &str = "/sys/fs/bpf";

/// Root, bpffs and a kernel with TCX (6.6+).
pub fn check() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::NotRoot);
    }
    match nix::sys::statfs::statfs(BPFFS) {
        Ok(st) if st.filesystem_type().0 == BPF_FS_MAGIC => {}
        _ => return Err(Error::NoBpffs),
    }
    let release = nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
    match kernel_version(&release) {
        Some(v) if v >= (6, 6) => Ok(()),
        Some(_) => Err(Error::KernelTooOld { release, missing: "TCX attachments need Linux 6.6 or newer".into() }),
        None => Err(Error::KernelTooOld { release, missing: "cannot read the kernel version".into() }),
    }
}

/// (major, minor) from a `uname -r` string such as `6.18.44-fc-v669`.
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    #[test]
    fn kernel_versions() {
        assert_eq!(super::kernel_version("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(super::kernel_version("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(super::kernel_version("6.6"), Some((6, 6)));
        assert_eq!(super::kernel_version("garbage"), None);
    }
}
