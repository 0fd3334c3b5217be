//! A podman environment that never touches the machine's own podman set-up.
//!
//! Podman's defaults do not work on this machine kind and would mix with whatever the machine
//! runs, so every environment is a directory with:
//! - a `containers.conf` (`CONTAINERS_CONF`) with the settings that work here (see
//!   shared/notes/containers.md): the CNI backend, runc (crun fails on hybrid cgroups), the
//!   cgroupfs manager and a file event log (no systemd), ulimits within the VM's hard limits,
//!   its own network config directory (never /etc/cni/net.d) and the plugin directories the
//!   caller names, and `netns = "none"` (a container started without `--network` gets no
//!   network instead of podman's default bridge, which nobody would clean up);
//! - its own container storage and libpod state (`CONTAINERS_STORAGE_CONF`): `podman ps -a`
//!   shows only its containers, and none lands in /var/lib/containers (podman 4.3 still writes
//!   its blob-info cache there, runc its state under /run/runc, libcni its result cache under
//!   /var/lib/cni: the [`WATCH`]ed directories, removed afterwards if podman made them);
//! - `ipam` for host-local's `dataDir` and `net.d` for the conflists;
//! - its [`ledger`](crate::ledger::own) of host objects.
//!
//! [`Env::remove`] takes it all away: containers (through podman, so CNI DEL releases
//! interfaces, addresses and rules), what the ledger lists, the mounts and the directory, and
//! gives the host back if the environment holds its own record (`host.json`).
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use crate::{
    Error, Result,
    command::output_as,
    host::{HostState, Watch},
    image, ledger, toml_str, workdir,
};

/// What podman 4.3, libcni and the reference plugins leave on the host.
pub const WATCH: Watch = Watch {
    // The blob-info cache, storage's and runc's run directories, libcni's result cache.
    dirs: &["/var/lib/containers", "/run/containers", "/var/lib/cni", "/run/runc"],
    nat_chains: &PORTMAP_CHAINS,
    // `netns-UUID` (`cni-UUID` in other versions).
    netns_prefixes: &["netns-", "cni-"],
    chains: &[],
};

/// Portmap's top-level chains, which it leaves behind after the last container; the first
/// holds one rule per published port.
pub const PORTMAP_CHAINS: [&str; 3] = ["CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ"];

/// The file of an environment holding its own record of the host.
const HOST_RECORD: &str = "host.json";

/// The `containers.conf` of a podman environment rooted at `dir` that finds CNI plugins in
/// `plugin_dirs`, in order.
pub fn containers_conf(dir: &Path, plugin_dirs: &[&Path]) -> Result<String> {
    let plugins: Vec<String> = plugin_dirs.iter().map(|d| toml_str(d)).collect::<Result<_>>()?;
    Ok(format!(
        r#"# Written by switch (its bench or its tests) for one podman environment; see
# shared/notes/containers.md.
[containers]
# No network unless --network says which: without it podman would bring up its own default
# network (bridge cni-podman0 on 10.88.0.0/16, with the firewall plugin's CNI-FORWARD chains),
# whatever `default_network` names.
netns = "none"
# The VM's hard limits (no CAP_SYS_RESOURCE to raise them): podman's default 1048576 fails.
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = {events}
# crun fails here: "cgroups in hybrid mode not supported".
runtime = "runc"
tmp_dir = {tmp}

[network]
network_backend = "cni"
network_config_dir = {netd}
cni_plugin_dirs = [{plugins}]
"#,
        events = toml_str(&dir.join("events.log"))?,
        tmp = toml_str(&dir.join("tmp"))?,
        netd = toml_str(&dir.join("net.d"))?,
        plugins = plugins.join(", "),
    ))
}

/// The `storage.conf` of a podman environment rooted at `dir`, reading images also from the
/// environment `image_store` (the tests import their image once per process, into an
/// environment of its own).
pub fn storage_conf(dir: &Path, image_store: Option<&Path>) -> Result<String> {
    let extra = match image_store {
        Some(s) => format!("[storage.options]\nadditionalimagestores = [{}]\n", toml_str(&s.join("storage/root"))?),
        None => String::new(),
    };
    Ok(format!(
        "[storage]\ndriver = \"overlay\"\ngraphroot = {}\nrunroot = {}\n{extra}",
        toml_str(&dir.join("storage/root"))?,
        toml_str(&dir.join("storage/runroot"))?,
    ))
}

/// One podman environment (its directory; nothing else is held).
pub struct Env {
    dir: PathBuf,
}

impl Env {
    /// The environment at `dir`, as it is (to use or remove one made earlier).
    pub fn at(dir: &Path) -> Self {
        Self { dir: dir.to_owned() }
    }

    /// Makes the environment at `dir`, finding CNI plugins in `plugin_dirs` and images also in
    /// `image_store` (another environment).
    pub fn create(dir: &Path, plugin_dirs: &[&Path], image_store: Option<&Path>) -> Result<Self> {
        for d in ["net.d", "ipam", "tmp", "storage/root", "storage/runroot"] {
            fs::create_dir_all(dir.join(d)).map_err(Error::io(format!("creating {}/{d}", dir.display())))?;
        }
        let write = |file: &str, s: String| fs::write(dir.join(file), s).map_err(Error::io(format!("writing {file}")));
        write("containers.conf", containers_conf(dir, plugin_dirs)?)?;
        write("storage.conf", storage_conf(dir, image_store)?)?;
        Ok(Self::at(dir))
    }

    /// The environment's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records the host as it is now in the environment (given back by [`Env::remove`]).
    pub fn record_host(&self) -> Result<()> {
        HostState::now(&WATCH, None).save(&self.dir.join(HOST_RECORD))
    }

    /// `podman ARGS` under this environment's configuration, to be run by the caller.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("podman");
        cmd.args(args)
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf"));
        cmd
    }

    /// Runs `podman ARGS`; its stdout.
    pub fn output(&self, args: &[&str]) -> Result<String> {
        output_as(&mut self.command(args), || format!("podman {}", args.first().unwrap_or(&"")))
    }

    /// Imports busybox-static's root file system as image `name` (`CMD /bin/sh`, `PATH=/bin`).
    pub fn import_busybox(&self, name: &str) -> Result<()> {
        let (rootfs, tar) = (self.dir.join("rootfs"), self.dir.join("rootfs.tar"));
        image::busybox_rootfs(&rootfs)?;
        image::tar(&rootfs, &tar)?;
        let tar_s = tar.to_string_lossy();
        // Without `ENV PATH` nothing is found in the container.
        self.output(&["import", "--change", r#"CMD ["/bin/sh"]"#, "--change", "ENV PATH=/bin", &tar_s, name])?;
        let _ = fs::remove_dir_all(&rootfs);
        let _ = fs::remove_file(&tar);
        Ok(())
    }

    /// The names of every container in the environment's storage (also one a failed run made).
    pub fn containers(&self) -> Vec<String> {
        let out = self.output(&["ps", "--all", "--format", "{{.Names}}"]).unwrap_or_default();
        out.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect()
    }

    /// Removes every container of the environment (no stop timeout).
    pub fn remove_containers(&self) -> Result<()> {
        self.output(&["rm", "--all", "--force", "--time", "0"]).map(drop)
    }

    /// Removes everything the environment made: its containers, what its ledger lists
    /// (`switch_bin` takes switches down), its mounts and its directory, and gives back its own
    /// record of the host if it has one. Returns what could not be removed or given back.
    pub fn remove(&self, switch_bin: &Path) -> Vec<String> {
        if !self.dir.exists() {
            return vec![];
        }
        let mut left = vec![];
        if self.dir.join("containers.conf").exists()
            && !self.containers().is_empty()
            && let Err(e) = self.remove_containers()
        {
            left.push(e.to_string());
        }
        left.extend(ledger::remove_owned(&self.dir, switch_bin, &PORTMAP_CHAINS));
        if let Some(host) = HostState::read(&self.dir.join(HOST_RECORD)) {
            left.extend(host.give_back().errors);
        }
        left.extend(workdir::remove(&self.dir));
        left
    }
}

/// Removes the environments `TMP/PREFIX-PID-...` of killed processes (see [`Env::remove`]),
/// image stores (`...-image`) last: the others' containers use them. Returns the directories.
pub fn sweep_stale(prefix: &str, switch_bin: &Path) -> Vec<PathBuf> {
    let mut stale = workdir::stale(prefix);
    stale.sort_by_key(|p| p.to_string_lossy().ends_with("-image"));
    for dir in &stale {
        Env::at(dir).remove(switch_bin);
    }
    stale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_stays_in_the_environment_directory() {
        let conf =
            containers_conf(Path::new("/tmp/x"), &[Path::new("/opt/switch"), Path::new("/usr/lib/cni")]).unwrap();
        assert!(conf.contains(r#"network_config_dir = "/tmp/x/net.d""#), "{conf}");
        assert!(conf.contains(r#"cni_plugin_dirs = ["/opt/switch", "/usr/lib/cni"]"#), "{conf}");
        assert!(toml_str(Path::new("/tmp/a\"b")).is_err());
        let storage = storage_conf(Path::new("/tmp/x"), Some(Path::new("/tmp/img"))).unwrap();
        assert!(storage.contains(r#"graphroot = "/tmp/x/storage/root""#), "{storage}");
        assert!(storage.contains(r#"additionalimagestores = ["/tmp/img/storage/root"]"#), "{storage}");
        assert!(!storage_conf(Path::new("/tmp/x"), None).unwrap().contains("additionalimagestores"));
    }
}
