//! `switch-cni install` and `uninstall`: the plugin put in place the way Kubernetes network
//! plugins are, by a node's DaemonSet (docs/kubernetes.md).
//!
//! ```text
//!   BIN_DIR/switch-cni, BIN_DIR/switch     the running switch-cni and the `switch` beside it
//!                                          (switch-cni starts a userspace switch's process
//!                                          from the `switch` next to itself)
//!   CONF_DIR/10-switch.conflist            --conf FILE, checked, or the default (conflist.rs)
//!   BIN_DIR/.switch-cni.installed          what install wrote in each directory, by file
//!   CONF_DIR/.switch-cni.installed         identity (device, inode, size, change time)
//! ```
//! Every file is replaced atomically: written to a temporary file in the same directory,
//! synced and closed, then renamed over the old one, so a runtime executing the plugin at that
//! moment runs the old file or the new one, never a half-written one (and never one still open
//! for writing, which exec refuses with ETXTBSY). Everything is checked and every temporary
//! file written before the first rename: bad input or a full disk changes nothing. The
//! binaries go first and the configuration last (a runtime never sees a network whose plugin
//! is not there yet); uninstall goes the other way. A file whose content and mode are already
//! the ones to install is left untouched, so a second install changes nothing. Uninstall removes a file
//! only if it is still the very file install wrote (its identity in the record): a file
//! someone else put there, or changed since, is left alone, and so is anything else in the
//! directories. The record has no `.conf`, `.conflist` or `.json` ending: runtimes do not read
//! it as a network.
use std::{
    collections::BTreeMap,
    fs::{self, File},
    io::{self, Read as _, Write as _},
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::conflist::{self, Defaults};
use crate::{
    datapath::userspace::daemon::switch_binary,
    error::{Context as _, Error, Result},
    sys::files,
};

/// The configuration's file name: runtimes load the lexically first file of their conf
/// directory, and `10-` sorts before the usual `87-podman-bridge.conflist` and friends.
pub const CONF_FILE: &str = "10-switch.conflist";

/// The record of what install wrote, one in each directory.
pub const RECORD_FILE: &str = ".switch-cni.installed";

/// Where the configuration comes from.
#[derive(Clone, Debug)]
pub enum ConfSource {
    /// The user's conflist (`--conf FILE`).
    File(PathBuf),
    /// The default conflist made from options.
    Default(Defaults),
}

/// What `install` and `uninstall` did to one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Written where there was none.
    Installed,
    /// Written over another content.
    Replaced,
    /// Had the content already.
    Unchanged,
    /// Removed (it was the file install wrote).
    Removed,
    /// Not there.
    Absent,
    /// There, but not the file install wrote (someone else's, or changed since): kept.
    LeftAlone,
}

/// One file and what was done to it.
#[derive(Clone, Debug, Serialize)]
pub struct FileReport {
    /// The file.
    pub path: PathBuf,
    /// What was done.
    pub action: Action,
}

/// What `install` or `uninstall` did.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Each file, in the order handled.
    pub files: Vec<FileReport>,
    /// Whether any file changed.
    pub changed: bool,
}

impl Report {
    fn new(files: Vec<FileReport>) -> Self {
        let changed = files.iter().any(|f| matches!(f.action, Action::Installed | Action::Replaced | Action::Removed));
        Self { files, changed }
    }
}

/// A file to put in place: where, from what, with which mode.
struct Target {
    path: PathBuf,
    content: Content,
    mode: u32,
}

enum Content {
    /// A file's bytes, copied as they are (the binaries: not read into memory whole).
    CopyOf(PathBuf),
    Bytes(Vec<u8>),
}

/// Puts both binaries into `bin_dir` and the configuration into `conf_dir`.
pub fn install(bin_dir: &Path, conf_dir: &Path, conf: &ConfSource) -> Result<Report> {
    directory("--bin-dir", bin_dir)?;
    directory("--conf-dir", conf_dir)?;
    let conf = match conf {
        ConfSource::File(f) => conflist::read_user_conflist(f)?,
        ConfSource::Default(d) => d.conflist()?,
    };
    let plugin = std::env::current_exe().context("finding the switch-cni binary")?;
    // The plugin finds `switch` beside itself; so does install, to copy it.
    let switch = switch_binary()
        .map_err(|_| Error::Command(format!("no switch binary next to {}: install copies both", plugin.display())))?;
    let targets = [
        Target { path: bin_dir.join("switch-cni"), content: Content::CopyOf(plugin), mode: 0o755 },
        Target { path: bin_dir.join("switch"), content: Content::CopyOf(switch), mode: 0o755 },
        Target { path: conf_dir.join(CONF_FILE), content: Content::Bytes(conf), mode: 0o644 },
    ];
    let mut staged = Staged(vec![]);
    let mut files = vec![];
    for t in &targets {
        let action = match fs::symlink_metadata(&t.path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Action::Installed,
            Err(e) => return Err(e).context(format!("inspecting {}", t.path.display())),
            Ok(m) if m.is_file() && m.mode() & 0o7777 == t.mode && same_content(&t.path, &t.content)? => {
                Action::Unchanged
            }
            Ok(_) => Action::Replaced,
        };
        if action != Action::Unchanged {
            staged.0.push((stage(t)?, t.path.clone()));
        }
        files.push(FileReport { path: t.path.clone(), action });
    }
    // Every file is staged: only renames are left, in the order of `targets`.
    while let Some((tmp, path)) = staged.0.first() {
        fs::rename(tmp, path).context(format!("replacing {}", path.display()))?;
        staged.0.remove(0);
    }
    for dir in [bin_dir, conf_dir] {
        sync_dir(dir)?;
        let mut record = Record::read(dir)?;
        for t in targets.iter().filter(|t| t.path.parent() == Some(dir)) {
            record.note(&t.path)?;
        }
        record.write(dir)?;
    }
    Ok(Report::new(files))
}

/// Removes what `install` put into `bin_dir` and `conf_dir`, if it is still what install wrote.
pub fn uninstall(bin_dir: &Path, conf_dir: &Path) -> Result<Report> {
    directory("--bin-dir", bin_dir)?;
    directory("--conf-dir", conf_dir)?;
    let mut files = vec![];
    // The configuration first: no runtime is left with a network whose plugin is gone.
    for (dir, names) in [(conf_dir, &[CONF_FILE][..]), (bin_dir, &["switch-cni", "switch"][..])] {
        let mut record = Record::read(dir)?;
        for name in names {
            let path = dir.join(name);
            let action = match fs::symlink_metadata(&path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Action::Absent,
                Err(e) => return Err(e).context(format!("inspecting {}", path.display())),
                Ok(m) if record.files.get(*name) == Some(&Identity::of(&m)) => {
                    fs::remove_file(&path).context(format!("removing {}", path.display()))?;
                    Action::Removed
                }
                Ok(_) => Action::LeftAlone,
            };
            if action != Action::LeftAlone {
                record.files.remove(*name);
            }
            files.push(FileReport { path, action });
        }
        sync_dir(dir)?;
        record.write(dir)?;
    }
    Ok(Report::new(files))
}

/// Refuses a directory option that names no directory.
fn directory(option: &'static str, dir: &Path) -> Result<()> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::invalid(option, dir.display().to_string(), "not a directory")),
        Err(e) => Err(Error::invalid(option, dir.display().to_string(), e.to_string())),
    }
}

/// Temporary files not renamed into place yet, removed if install stops before that.
struct Staged(Vec<(PathBuf, PathBuf)>);

impl Drop for Staged {
    fn drop(&mut self) {
        for (tmp, _) in &self.0 {
            let _ = fs::remove_file(tmp);
        }
    }
}

/// Writes `t`'s content to a new temporary file beside it, synced and closed; returns its path.
fn stage(t: &Target) -> Result<PathBuf> {
    let name = t.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = t.path.with_file_name(format!(".{name}.switch-cni-{}.tmp", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let written = (|| {
        let mut f = fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(t.mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        match &t.content {
            Content::CopyOf(src) => {
                io::copy(&mut File::open(src)?, &mut f)?;
            }
            Content::Bytes(b) => f.write_all(b)?,
        }
        // The mode again: the umask may have narrowed it at creation.
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(t.mode))?;
        f.sync_all()
        // `f` is closed here, before the rename: exec refuses a file open for writing.
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e).context(format!("writing {}", tmp.display()));
    }
    Ok(tmp)
}

/// Whether the file at `path` has `content` already.
fn same_content(path: &Path, content: &Content) -> Result<bool> {
    let context = || format!("reading {}", path.display());
    let mut have = File::open(path).context(context())?;
    match content {
        Content::Bytes(b) => {
            let mut buf = vec![];
            have.read_to_end(&mut buf).context(context())?;
            Ok(&buf == b)
        }
        Content::CopyOf(src) => {
            let mut want = File::open(src).context(format!("reading {}", src.display()))?;
            if have.metadata().context(context())?.len() != want.metadata().context(context())?.len() {
                return Ok(false);
            }
            let (mut a, mut b) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
            loop {
                let n = want.read(&mut a).context(format!("reading {}", src.display()))?;
                if n == 0 {
                    return Ok(true);
                }
                have.read_exact(&mut b[..n]).context(context())?;
                if a[..n] != b[..n] {
                    return Ok(false);
                }
            }
        }
    }
}

/// Makes the renames in `dir` durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).context(format!("syncing {}", dir.display()))
}

/// Which file a name is: device, inode, size and change time. Any write, rename over, chmod
/// or copy gives another identity, so a file with this one is the file install wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    ctime_sec: i64,
    ctime_nsec: i64,
}

impl Identity {
    fn of(m: &fs::Metadata) -> Self {
        Self { dev: m.dev(), ino: m.ino(), size: m.size(), ctime_sec: m.ctime(), ctime_nsec: m.ctime_nsec() }
    }
}

/// What install wrote into one directory: file name to identity.
#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    files: BTreeMap<String, Identity>,
}

impl Record {
    /// The directory's record; none yet is an empty one.
    fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(RECORD_FILE);
        match fs::read(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).context(format!("reading {}", path.display())),
            // A record that does not parse names no file as ours: nothing is removed by it.
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).unwrap_or_default()),
        }
    }

    /// Notes the file at `path` (in place now, with the content install wants) as ours.
    fn note(&mut self, path: &Path) -> Result<()> {
        let m = fs::symlink_metadata(path).context(format!("inspecting {}", path.display()))?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        self.files.insert(name, Identity::of(&m));
        Ok(())
    }

    /// Saves the record if it changed; removes it once it names no file.
    fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(RECORD_FILE);
        if self.files.is_empty() {
            return match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e).context(format!("removing {}", path.display())),
                _ => Ok(()),
            };
        }
        if Self::read(dir)? == *self {
            return Ok(());
        }
        let mut bytes = serde_json::to_vec_pretty(self).expect("the record serializes");
        bytes.push(b'\n');
        files::write_private_atomic(&path, &bytes)
    }
}
