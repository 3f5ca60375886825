//! The shared arena: a memfd the parent creates and both the parent and a
//! worker keep mapped across calls, so a large result crosses with one copy
//! into memory that is already faulted in (after the first call) instead of
//! through a socket.
//!
//! The worker grows the file when a result needs more room; it never
//! shrinks, so the parent's older, smaller mapping stays valid and is
//! replaced only when a result is larger than it.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;

use memmap2::MmapMut;
use nix::sys::memfd::{MFdFlags, memfd_create};

/// Results at least this large go through the arena; smaller ones are
/// cheaper through the socket.
pub(crate) const MIN_ARENA_RESULT: usize = 1 << 20;

/// One side's mapping of the arena.
#[derive(Debug)]
pub(crate) struct Arena {
    file: File,
    map: Option<MmapMut>,
}

impl Arena {
    /// The parent's side: a new, empty memfd.
    pub(crate) fn create() -> nix::Result<Self> {
        let fd = memfd_create(c"bombsquad-arena", MFdFlags::MFD_CLOEXEC)?;
        Ok(Self::from_fd(fd))
    }

    pub(crate) fn from_fd(fd: OwnedFd) -> Self {
        Self {
            file: File::from(fd),
            map: None,
        }
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    fn mapped_len(&self) -> usize {
        self.map.as_ref().map_or(0, |map| map.len())
    }

    /// The worker's side: copies `bytes` to the arena's start, growing it
    /// (to a power of two, at least 1 MiB) when it is too small. Returns
    /// their CRC-32.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> std::io::Result<u32> {
        if self.mapped_len() < bytes.len() {
            let len = bytes.len().next_power_of_two().max(MIN_ARENA_RESULT);
            self.map = None;
            self.file.set_len(len as u64)?;
            self.map = Some(crate::sys::map_arena(&self.file, len)?);
        }
        let map = self.map.as_mut().expect("mapped above");
        // Not fused with the copy: a large copy in one piece uses glibc's
        // non-temporal stores, and in cache-sized pieces it measured 15 ms
        // slower per 64 MiB than this extra pass (~3 ms).
        let checksum = crc32fast::hash(bytes);
        map[..bytes.len()].copy_from_slice(bytes);
        Ok(checksum)
    }

    /// The parent's side: the first `len` bytes the worker wrote.
    pub(crate) fn read(&mut self, len: usize) -> Result<&[u8], String> {
        if self.mapped_len() < len {
            let size = self
                .file
                .metadata()
                .map_err(|e| format!("read the arena's size: {e}"))?
                .len();
            let size = usize::try_from(size).map_err(|e| e.to_string())?;
            if size < len {
                return Err(format!(
                    "the worker announced {len} bytes in an arena of {size} bytes"
                ));
            }
            self.map = None;
            self.map = Some(
                crate::sys::map_arena(&self.file, size)
                    .map_err(|e| format!("map the arena: {e}"))?,
            );
        }
        Ok(&self.map.as_ref().expect("mapped above")[..len])
    }
}

/// The parent's side: `bytes` (a large result in the arena) copied into a
/// fresh `Vec` of the exact size, in one piece (see [`Arena::write`] for
/// why), into huge pages (`sys::copy_to_fresh`). `MADV_POPULATE_WRITE`
/// was measured too and saves nothing: it takes the same 4 KiB faults,
/// only earlier.
pub(crate) fn copy_out(bytes: &[u8]) -> Vec<u8> {
    crate::sys::copy_to_fresh(bytes)
}

/// The worker's arena, once the parent has handed it over.
static WORKER_ARENA: Mutex<Option<Arena>> = Mutex::new(None);

/// Installs the arena in a worker process.
pub(crate) fn install(fd: OwnedFd) {
    *WORKER_ARENA
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arena::from_fd(fd));
}

/// In a worker with an arena and for a large `tail`: copies it there and
/// returns its CRC-32; `None` when it must go through the socket.
#[inline]
pub(crate) fn place(tail: &[u8]) -> Option<u32> {
    // Inline for the size check: a forked child's small result never runs
    // (so never faults in) the code below.
    if tail.len() < MIN_ARENA_RESULT {
        return None;
    }
    place_large(tail)
}

fn place_large(tail: &[u8]) -> Option<u32> {
    let mut arena = WORKER_ARENA.try_lock().ok()?;
    arena.as_mut()?.write(tail).ok()
}
