//! Loading, pinning and attaching the datapath.
use std::{
    fs, io,
    path::{Path, PathBuf},
};

use aya::{
    EbpfLoader,
    programs::{SchedClassifier, TcAttachType, links::FdLink},
};
use switch_common::{maps as names, programs};

use crate::error::{Context as _, Error, Result, bpf};

/// The datapath object, built by build.rs from the switch-ebpf crate.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/switch-datapath"));

/// Root of every switch's pins.
pub const PIN_ROOT: &str = "/sys/fs/bpf/switch";

/// Every map the datapath has and the controller pins.
pub const MAPS: [&str; 5] = [names::FDB, names::PORTS, names::PORT_SLOTS, names::STATS, names::CONFIG];

/// Paths of one switch's pins.
#[derive(Clone, Debug)]
pub struct Pins {
    dir: PathBuf,
}

impl Pins {
    /// Pins of switch `name`.
    pub fn new(name: &str) -> Self {
        Self { dir: Path::new(PIN_ROOT).join(name) }
    }

    /// `/sys/fs/bpf/switch/NAME`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The pinned program.
    pub fn prog(&self) -> PathBuf {
        self.dir.join("prog_ingress")
    }

    /// A pinned map.
    pub fn map(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The pinned TCX link of port `ifname`.
    pub fn link(&self, ifname: &str) -> PathBuf {
        self.dir.join("links").join(ifname)
    }

    /// Whether anything of this switch is pinned.
    pub fn exists(&self) -> bool {
        self.dir.exists()
    }

    /// Whether the program and every map are pinned.
    pub fn complete(&self) -> bool {
        self.prog().exists() && MAPS.iter().all(|m| self.map(m).exists())
    }

    /// Loads a fresh copy of the datapath and pins its program and maps. On failure nothing
    /// stays pinned.
    pub fn create(&self) -> Result<()> {
        let made = self.try_create();
        if made.is_err() {
            let _ = self.remove();
        }
        made
    }

    fn try_create(&self) -> Result<()> {
        fs::create_dir_all(self.dir.join("links")).context(format!("creating {}", self.dir.display()))?;
        let mut ebpf = EbpfLoader::new().load(EBPF_OBJECT).map_err(bpf("loading the datapath object"))?;
        let prog: &mut SchedClassifier = ebpf
            .program_mut(programs::TC_INGRESS)
            .ok_or_else(|| Error::Command(format!("datapath object has no program {}", programs::TC_INGRESS)))?
            .try_into()
            .map_err(bpf("datapath program has the wrong type"))?;
        prog.load().map_err(bpf("loading the datapath program into the kernel (verifier)"))?;
        prog.pin(self.prog()).map_err(bpf(format!("pinning {}", self.prog().display())))?;
        for name in MAPS {
            let map = ebpf.map(name).ok_or_else(|| Error::Command(format!("datapath object has no map {name}")))?;
            map.pin(self.map(name)).map_err(bpf(format!("pinning {}", self.map(name).display())))?;
        }
        Ok(())
    }

    /// Attaches the datapath to the TCX ingress of host interface `ifname` and pins the link.
    /// An existing pinned link for `ifname` (from an interrupted run) is replaced.
    pub fn attach(&self, ifname: &str) -> Result<()> {
        self.detach(ifname)?;
        let mut prog = SchedClassifier::from_pin(self.prog()).map_err(bpf("opening the pinned datapath program"))?;
        let id = prog
            .attach(ifname, TcAttachType::Ingress)
            .map_err(bpf(format!("attaching the datapath to {ifname} (TCX ingress)")))?;
        let link = prog.take_link(id).map_err(bpf("taking the TCX link"))?;
        let link: FdLink = link.try_into().map_err(bpf("TCX link is not an fd link"))?;
        link.pin(self.link(ifname)).map_err(bpf(format!("pinning the link of {ifname}")))?;
        Ok(())
    }

    /// Detaches the datapath from `ifname` by removing the link's pin (the kernel destroys the
    /// link when its last reference goes). Nothing pinned is not an error.
    pub fn detach(&self, ifname: &str) -> Result<()> {
        let p = self.link(ifname);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).context(format!("removing {}", p.display())),
        }
    }

    /// Names of the interfaces that have a pinned link.
    pub fn attached(&self) -> Vec<String> {
        fs::read_dir(self.dir.join("links"))
            .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
            .unwrap_or_default()
    }

    /// Removes every pin of the switch: the program and maps are freed once no link uses them.
    pub fn remove(&self) -> Result<()> {
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).context(format!("removing {}", self.dir.display())),
        }
    }

    /// Kernel id of the pinned program (for attaching the log reader).
    pub fn prog_id(&self) -> Result<u32> {
        let prog = SchedClassifier::from_pin(self.prog()).map_err(bpf("opening the pinned datapath program"))?;
        Ok(prog.info().map_err(bpf("reading program info"))?.id())
    }
}
