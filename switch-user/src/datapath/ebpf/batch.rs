//! Reading a whole hash table in a few system calls.
//!
//! aya walks a map with two system calls per entry (`BPF_MAP_GET_NEXT_KEY`, then
//! `BPF_MAP_LOOKUP_ELEM`): 32768 of them for a full MAC table, every second while `switch
//! monitor` follows ageing. `BPF_MAP_LOOKUP_BATCH` (Linux 5.6, hash and LRU hash maps) copies up
//! to [`BATCH`] entries per call; aya 0.14 does not offer it, so it is called here.
//!
//! Like aya's walk, it is not a snapshot: the datapath adds and deletes entries meanwhile. An
//! entry deleted during the walk may be left out or still given; one added may or may not be
//! seen. Each entry is given at most once (the kernel walks bucket by bucket).
use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::{
    Pod,
    maps::{IterableMap, MapData},
};

/// Entries asked for per call.
const BATCH: usize = 1024;
/// `BPF_MAP_LOOKUP_BATCH` in the kernel's `enum bpf_cmd`.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// The `batch` member of the kernel's `union bpf_attr` (no padding: every byte is set).
#[repr(C)]
struct BatchAttr {
    /// Where to go on from (the previous call's `out_batch`); null for the first call.
    in_batch: u64,
    /// Where the kernel says the next call goes on from (for hash maps, a bucket index).
    out_batch: u64,
    keys: u64,
    values: u64,
    /// In: room for this many entries; out: how many were copied.
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Every (key, value) of `map` (a hash or LRU hash map).
pub(crate) fn entries<K: Pod, V: Pod>(map: &impl IterableMap<K, V>) -> io::Result<Vec<(K, V)>> {
    read_all(map.map())
}

fn read_all<K: Pod, V: Pod>(map: &MapData) -> io::Result<Vec<(K, V)>> {
    let mut out = Vec::new();
    let mut room = BATCH;
    let mut keys: Vec<K> = Vec::with_capacity(room);
    let mut values: Vec<V> = Vec::with_capacity(room);
    // The kernel's position tokens; 8 bytes covers the hash maps' u32 bucket index.
    let (mut from, mut next) = (0u64, 0u64);
    let mut first = true;
    loop {
        keys.reserve(room);
        values.reserve(room);
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { &raw const from as u64 },
            out_batch: &raw mut next as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: u32::try_from(room).unwrap_or(u32::MAX),
            map_fd: map.fd().as_fd().as_raw_fd() as u32,
            elem_flags: 0,
            flags: 0,
        };
        // SAFETY: `attr` is a live BatchAttr, its size passed along; the kernel writes at most
        // `count` keys and values into `keys` and `values`, which have room for `room` (>=
        // count) of each (K and V are the map's key and value types, as aya checked when it
        // opened the map), and one token into `next`.
        let ret = unsafe {
            libc::syscall(libc::SYS_bpf, BPF_MAP_LOOKUP_BATCH, &mut attr as *mut BatchAttr, size_of::<BatchAttr>())
        };
        let err = (ret < 0).then(io::Error::last_os_error);
        match err.as_ref().and_then(io::Error::raw_os_error) {
            // One bucket holds more entries than `room`: nothing was copied; again with more.
            Some(libc::ENOSPC) if room < 1 << 20 => {
                room *= 2;
                continue;
            }
            None | Some(libc::ENOENT) => {}
            Some(_) => return Err(err.unwrap_or_else(io::Error::last_os_error)),
        }
        let got = (attr.count as usize).min(room);
        // SAFETY: the kernel initialised the first `got` keys and values (Pod: any bytes are
        // valid values).
        unsafe {
            keys.set_len(got);
            values.set_len(got);
        }
        out.extend(keys.drain(..).zip(values.drain(..)));
        if err.is_some() {
            // ENOENT: the walk is over (this call may still have copied the last entries).
            return Ok(out);
        }
        from = next;
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use aya::{EbpfLoader, maps::HashMap};
    use switch_common::{FDB_F_STATIC, FdbEntry, MacKey, maps::FDB};

    use super::*;
    use crate::datapath::ebpf::loader::EBPF_OBJECT;

    #[test]
    fn a_table_is_read_whole_in_batches_each_entry_once() {
        // The datapath object's maps, made for this test alone (no program is loaded, nothing
        // is pinned or attached).
        let mut ebpf = EbpfLoader::new().load(EBPF_OBJECT).expect("loading the datapath object (run as root)");
        let mut fdb: HashMap<_, MacKey, FdbEntry> = HashMap::try_from(ebpf.map_mut(FDB).unwrap()).unwrap();
        assert_eq!(entries(&fdb).unwrap(), vec![], "an empty table");
        // More than one batch's worth.
        let n = 3 * BATCH as u32 + 17;
        for i in 0..n {
            let [a, b, c, d] = i.to_be_bytes();
            let mac = MacKey { addr: [0x02, 0, a, b, c, d], pad: [0; 2] };
            let entry = FdbEntry { ifindex: i, flags: FDB_F_STATIC, last_seen_ns: u64::from(i) * 7, remote: 0, pad: 0 };
            fdb.insert(mac, entry, 0).unwrap();
        }
        let mut got = entries(&fdb).unwrap();
        got.sort_by_key(|(_, e)| e.ifindex);
        assert_eq!(got.len(), n as usize, "every entry once");
        for (i, (mac, e)) in got.iter().enumerate() {
            let i = i as u32;
            assert_eq!(mac.addr[2..], i.to_be_bytes());
            assert_eq!((e.ifindex, e.last_seen_ns), (i, u64::from(i) * 7));
        }
        let walked: Vec<(MacKey, FdbEntry)> = fdb.iter().map(Result::unwrap).collect();
        assert_eq!(walked.len(), got.len(), "as many as aya's walk of the same table");
    }
}
