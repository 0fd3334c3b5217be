//! What an eBPF switch costs in kernel memory: the `memlock` the kernel accounts to each of its
//! maps and programs (`/proc/self/fdinfo` of a descriptor of each), summed. That is the memory
//! the maps and programs hold (preallocated entries, hash buckets, ring and per-CPU areas,
//! JIT images); the kernel's own bookkeeping of an object (a few hundred bytes) is not in it.
//!
//! Every map counts once, whether the switch pinned it or only a program uses it (aya-log's
//! ring, the programs' global data): the programs' map ids are walked too.
use std::{
    collections::BTreeMap,
    fs,
    os::fd::{AsFd, AsRawFd},
    path::Path,
};

use aya::{maps::MapInfo, programs::ProgramInfo};
use serde::Serialize;

use super::Pins;
use crate::error::{Result, bpf};

/// Kernel memory of one switch.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Footprint {
    /// Bytes of each map, by name.
    pub maps: BTreeMap<String, u64>,
    /// Bytes of the programs (their instructions and JIT images).
    pub programs: u64,
}

impl Footprint {
    /// Maps and programs together.
    pub fn total(&self) -> u64 {
        self.maps.values().sum::<u64>() + self.programs
    }
}

/// The `memlock` line of the fdinfo of descriptor `fd` of this process (0 without one).
pub(super) fn memlock(fd: impl AsFd) -> Result<u64> {
    let path = format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd());
    let info = fs::read_to_string(&path).map_err(|e| crate::error::Error::Io { context: path, source: e })?;
    Ok(info.lines().find_map(|l| l.strip_prefix("memlock:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0))
}

/// Bytes of map `id` and its name.
fn map_memory(id: u32) -> Result<(String, u64)> {
    let info = MapInfo::from_id(id).map_err(bpf("reading a map's info"))?;
    let fd = info.fd().map_err(bpf("opening a map by id"))?;
    let name = info.name_as_str().filter(|n| !n.is_empty()).map_or_else(|| format!("map#{id}"), str::to_owned);
    Ok((name, memlock(fd)?))
}

/// The kernel memory of the switch pinned at `pins`.
pub fn measure(pins: &Pins) -> Result<Footprint> {
    let mut ids = std::collections::BTreeSet::new();
    let mut programs = 0;
    for entry in fs::read_dir(pins.dir())
        .map_err(|e| crate::error::Error::Io { context: format!("reading {}", pins.dir().display()), source: e })?
    {
        let Ok(entry) = entry else { continue };
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        if entry.file_name().to_string_lossy().starts_with("prog_") {
            let (bytes, maps) = program(&path)?;
            programs += bytes;
            ids.extend(maps);
        } else if let Ok(info) = MapInfo::from_pin(&path) {
            ids.insert(info.id());
        }
    }
    let mut maps = BTreeMap::new();
    for id in ids {
        let (name, bytes) = map_memory(id)?;
        *maps.entry(name).or_insert(0) += bytes;
    }
    Ok(Footprint { maps, programs })
}

/// Bytes of the program pinned at `path` and the ids of the maps it uses.
fn program(path: &Path) -> Result<(u64, Vec<u32>)> {
    let info = ProgramInfo::from_pin(path).map_err(bpf(format!("opening {}", path.display())))?;
    let bytes = info.memory_locked().map_err(bpf("reading a program's memory"))?;
    let maps = info.map_ids().map_err(bpf("reading a program's maps"))?.unwrap_or_default();
    Ok((u64::from(bytes), maps))
}
