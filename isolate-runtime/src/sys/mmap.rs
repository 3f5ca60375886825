//! Memory maps of the memfds that carry large replies and results.

use std::fs::File;
use std::io;

use memmap2::{Mmap, MmapMut, MmapOptions};
use nix::fcntl::{FcntlArg, SealFlag, fcntl};

/// Maps a memfd read-only, once it is sealed against writes, growth and
/// shrinking: its bytes cannot change while they are borrowed, and no page
/// can vanish (no SIGBUS).
///
/// # Errors
///
/// The file lacks one of those seals, or `mmap` fails.
pub(crate) fn map_sealed(file: &File) -> io::Result<Mmap> {
    let needed = SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SHRINK;
    let seals = SealFlag::from_bits_truncate(fcntl(file, FcntlArg::F_GET_SEALS)?);
    if !seals.contains(needed) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the memfd is not sealed against writes, growth and shrinking",
        ));
    }
    // SAFETY: sealed as checked above, and F_SEAL_WRITE can only be added
    // while no writable shared mapping exists, so none does.
    unsafe { Mmap::map(file) }
}

/// Maps the first `len` bytes of a worker's arena (a memfd shared by a
/// parent and its worker) read-write, pages populated.
///
/// # Errors
///
/// `mmap` fails.
pub(crate) fn map_arena(file: &File, len: usize) -> io::Result<MmapMut> {
    // SAFETY: the arena is shared only between a parent and its worker; the
    // worker writes it only while the parent waits for its reply, and
    // neither side shrinks the file, so the mapping is never truncated under
    // a reader and never written while the parent reads it.
    unsafe { MmapOptions::new().len(len).populate().map_mut(file) }
}
