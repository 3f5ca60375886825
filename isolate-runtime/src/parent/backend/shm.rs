//! The shared-memory backend: a memfd the parent creates, the child writes
//! its reply into, and the parent seals once the child has exited, reads
//! as the file backend reads its file, and maps read-only for decoding, so
//! a result decoded in place is never copied into a buffer of the parent's
//! own (docs/FAULTS.md I7, L13).
//!
//! Sealing comes first: `F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK |
//! F_SEAL_SEAL` means no one (a grandchild holding the descriptor, the
//! child's own C code) can change or shrink the file under the mapping, so
//! the parent never sees its bytes change while it decodes and never gets
//! SIGBUS. A file the parent cannot seal (someone still has a writable
//! shared mapping of it) is refused.

use std::fs::File;
use std::ops::Range;
use std::os::fd::{AsFd, BorrowedFd};

use memmap2::Mmap;
use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};

use super::Body;
use super::file::{FileView, Finished, NamedFile, finish_reply};
use crate::vocabulary::error::Error;
use crate::wire::{CallId, FrameError};

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

    /// Seals the memfd once the child has exited, then reads it as the
    /// file backend reads its file (a short reply whole, a long one only as
    /// far as its frame headers lead), and maps it read-only when it ends
    /// in a result left unread, for decoding to borrow.
    ///
    /// # Errors
    ///
    /// The memfd could not be sealed, read or mapped, or is longer than a
    /// reply under `limit` may be.
    pub(crate) fn finish(self, limit: u64, call_id: CallId) -> Result<Body, FrameError> {
        fcntl(&self.file, FcntlArg::F_ADD_SEALS(seals())).map_err(|e| {
            format!("seal the reply memfd: {e} (a process still has it mapped for writing)")
        })?;
        let sealed = fcntl(&self.file, FcntlArg::F_GET_SEALS)
            .map_err(|e| format!("read the reply memfd's seals: {e}"))?;
        if !SealFlag::from_bits_truncate(sealed).contains(seals()) {
            return Err(format!("the reply memfd is not sealed (seals {sealed:#x})").into());
        }
        let file = NamedFile {
            file: self.file,
            what: "the reply memfd",
        };
        let view = match finish_reply(file, limit, call_id)? {
            Finished::Whole(bytes) => return Ok(Body::Read(bytes)),
            Finished::Walked(view) if view.result_check().is_none() => return Ok(Body::File(view)),
            Finished::Walked(view) => view,
        };
        let map =
            crate::sys::map_sealed(view.file()).map_err(|e| format!("map the reply memfd: {e}"))?;
        Ok(Body::Mapped(Mapped { map, view }))
    }
}

/// A sealed memfd that ends in a result, mapped read-only: the result is
/// borrowed from the mapping by a decoder that reads it in place (checked
/// there first), or read with `pread` into fresh memory of its own size
/// (checked as it is read), so its pages never join this process's
/// resident set twice.
#[derive(Debug)]
pub(crate) struct Mapped {
    map: Mmap,
    view: FileView,
}

impl Mapped {
    pub(crate) fn view(&self) -> &FileView {
        &self.view
    }

    /// `range` in fresh memory of its exact size.
    pub(crate) fn read_range(&self, range: Range<usize>) -> Result<Vec<u8>, String> {
        self.view.read_range(range)
    }

    /// `range`, borrowed from the mapping; a range that runs to the end of
    /// the result is checked against its checksum first.
    pub(crate) fn get(&self, range: Range<usize>) -> Result<&[u8], String> {
        if let Some(result) = self.view.result_check()
            && result.completes(&range)
        {
            result.check_in_place(&self.map)?;
        }
        Ok(&self.map[range])
    }
}
