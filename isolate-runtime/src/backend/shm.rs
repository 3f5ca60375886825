//! The shared-memory backend: a memfd the parent creates, the child writes
//! its reply into, and the parent seals once the child has exited and maps
//! read-only for decoding, so the reply is never copied into a buffer of
//! the parent's own (FAULTS.md I7, L13).
//!
//! Sealing comes first: `F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK |
//! F_SEAL_SEAL` means no one (a grandchild holding the descriptor, the
//! child's own C code) can change or shrink the file under the mapping, so
//! the parent never sees its bytes change while it decodes and never gets
//! SIGBUS. A file the parent cannot seal (someone still has a writable
//! shared mapping of it) is refused.

use std::fs::File;
use std::ops::{Deref, Range};
use std::os::fd::{AsFd, BorrowedFd};

use memmap2::Mmap;
use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};

use super::check_reply_len;
use crate::error::Error;
use crate::wire::FrameError;

/// The seals the parent adds before it maps the reply.
fn seals() -> SealFlag {
    SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_SEAL
}

#[derive(Debug)]
pub(crate) struct ShmReply {
    file: File,
}

impl ShmReply {
    pub(crate) fn create() -> Result<Self, Error> {
        let fd = memfd_create(
            c"bombsquad-reply",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )
        .map_err(|e| Error::spawn("create the reply memfd (memfd_create)", e))?;
        Ok(Self {
            file: File::from(fd),
        })
    }

    pub(crate) fn child_end(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Seals the memfd and maps it read-only, once the child has exited.
    /// A memfd longer than a reply under `limit` may be is refused unmapped.
    pub(crate) fn map(self, limit: u64) -> Result<Option<Mapped>, FrameError> {
        fcntl(&self.file, FcntlArg::F_ADD_SEALS(seals())).map_err(|e| {
            format!("seal the reply memfd: {e} (a process still has it mapped for writing)")
        })?;
        let sealed = fcntl(&self.file, FcntlArg::F_GET_SEALS)
            .map_err(|e| format!("read the reply memfd's seals: {e}"))?;
        if !SealFlag::from_bits_truncate(sealed).contains(seals()) {
            return Err(format!("the reply memfd is not sealed (seals {sealed:#x})").into());
        }
        let len = self
            .file
            .metadata()
            .map_err(|e| format!("stat the reply memfd: {e}"))?
            .len();
        if check_reply_len(len, limit)? == 0 {
            return Ok(None); // mmap refuses an empty file
        }
        // SAFETY: the file is sealed against writes, growth and shrinking
        // (checked just above) and no writable mapping of it exists (adding
        // F_SEAL_WRITE fails otherwise), so the mapped bytes cannot change
        // while they are borrowed and no page can vanish (no SIGBUS).
        let map =
            unsafe { Mmap::map(&self.file) }.map_err(|e| format!("map the reply memfd: {e}"))?;
        Ok(Some(Mapped {
            map,
            file: self.file,
        }))
    }
}

/// The sealed memfd, mapped read-only.
#[derive(Debug)]
pub(crate) struct Mapped {
    map: Mmap,
    file: File,
}

impl Mapped {
    /// Reads `range` into fresh memory of its exact size with `pread`: one
    /// copy, and the mapping's pages never join this process's resident set.
    pub(crate) fn read_range(&self, range: Range<usize>) -> Result<Vec<u8>, String> {
        super::read_exact_range(&self.file, range, "the reply memfd")
    }
}

impl Deref for Mapped {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.map
    }
}
