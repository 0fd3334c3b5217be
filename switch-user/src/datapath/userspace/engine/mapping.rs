//! A shared memory mapping of a file descriptor (`mmap(MAP_SHARED)`), unmapped when dropped:
//! the packet sockets' rings (socket.rs) and the lane steering's report array (steer.rs).
use std::{
    io,
    os::fd::RawFd,
    ptr::{self, NonNull},
};

#[derive(Debug)]
pub(super) struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is memory owned by this value until it is dropped; what its users store
// in it, and how they share it with the kernel, is theirs to make safe (atomics, ownership
// words), as their own SAFETY comments say.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only gives out the base address.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd` from offset 0, readable and writable, shared with the kernel.
    pub(super) fn new(fd: RawFd, len: usize) -> io::Result<Self> {
        // SAFETY: a new mapping at an address the kernel picks; the result is checked below.
        let base =
            unsafe { libc::mmap(ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0) };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(base.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { base, len })
    }

    /// The first byte of the mapping.
    pub(super) fn base(&self) -> NonNull<u8> {
        self.base
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, with its length; its owner drops it last.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}
