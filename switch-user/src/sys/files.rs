//! Files the switch keeps under `/run/switch`, made so that no other local user can read,
//! hold or redirect them: the directory is 0700, files are 0600, and nothing is opened through
//! a symbolic link someone planted (`O_NOFOLLOW`, and new files with `O_EXCL`).
use std::{
    fs::{self, File, OpenOptions},
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::Path,
};

use crate::error::{Context as _, Error, Result};

/// Makes `dir` (and its parents) and restricts it to root (0700). A symbolic link or a file in
/// its place is refused.
pub fn private_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).context(format!("creating {}", dir.display()))?;
    let meta = fs::symlink_metadata(dir).context(format!("inspecting {}", dir.display()))?;
    if !meta.is_dir() {
        return Err(Error::Command(format!("{} is not a directory; not using it", dir.display())));
    }
    if meta.permissions().mode() & 0o777 != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .context(format!("restricting {} to root", dir.display()))?;
    }
    Ok(())
}

/// Opens `path` for writing, creating it 0600; never through a symbolic link. An existing
/// file (made by an older version) is restricted to 0600 too. `truncate` empties it.
pub fn open_private(path: &Path, truncate: bool) -> Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(truncate)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .context(format!("opening {}", path.display()))?;
    f.set_permissions(fs::Permissions::from_mode(0o600)).context(format!("restricting {}", path.display()))?;
    Ok(f)
}

/// Replaces `path` with `bytes` atomically: a fresh temporary file (any file or link already
/// at its name is removed first, never followed), fsync, rename.
pub fn write_private_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).context(format!("removing {}", tmp.display())),
    }
    let mut f = OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .context(format!("writing {}", tmp.display()))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).context(format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).context(format!("replacing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_are_0600_and_links_are_not_followed() {
        let dir = std::env::temp_dir().join(format!("switch-files-test-{}", std::process::id()));
        private_dir(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        // A link planted where the temporary file goes is removed, its target left alone.
        let victim = dir.join("victim");
        fs::write(&victim, b"precious").unwrap();
        let state = dir.join("state.json");
        std::os::unix::fs::symlink(&victim, dir.join("state.tmp")).unwrap();
        write_private_atomic(&state, b"{}").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(fs::read(&state).unwrap(), b"{}");
        assert_eq!(fs::metadata(&state).unwrap().permissions().mode() & 0o777, 0o600);
        // Opening through a link is refused.
        let link = dir.join("lock");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(open_private(&link, false).is_err());
        // An existing file of another mode is restricted.
        let log = dir.join("log");
        fs::write(&log, b"").unwrap();
        fs::set_permissions(&log, fs::Permissions::from_mode(0o644)).unwrap();
        open_private(&log, true).unwrap();
        assert_eq!(fs::metadata(&log).unwrap().permissions().mode() & 0o777, 0o600);
        fs::remove_dir_all(&dir).unwrap();
    }
}
