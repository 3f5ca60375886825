//! Where the child's reply goes: a pipe the parent drains while the child
//! runs, an unnamed temp file the parent reads after the child exits, or a
//! memfd the parent seals and maps after the child exits.

mod file;
mod pipe;
mod shm;

use std::ops::{Deref, Range};
use std::os::fd::BorrowedFd;
use std::path::Path;

use crate::error::Error;

/// How the reply travels from child to parent.
///
/// # Examples
///
/// ```
/// use bombsquad::{Backend, Isolate};
///
/// let len = Isolate::new()
///     .backend(Backend::Pipe)
///     .fork(|| vec![7u8; 1 << 20].len())
///     .unwrap();
/// assert_eq!(len, 1 << 20);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Backend {
    /// An unnamed temp file (`O_TMPFILE`, mode 0600) in the temp dir; the
    /// reply survives in the file however the child dies. The default, as
    /// in Python's bombsquad.
    #[default]
    File,
    /// A pipe, drained by the parent while the child writes; needs no
    /// temp dir.
    Pipe,
    /// Shared memory: a memfd the parent creates and the child writes;
    /// after the child exits the parent seals it and decodes straight from
    /// a read-only mapping, with no copy into a buffer first. Needs no temp
    /// dir; the reply lives in memory (not on disk) until the call returns.
    Shm,
}

/// The parent's end of a reply channel.
#[derive(Debug)]
pub(crate) enum ReplyChannel {
    Pipe(pipe::PipeReply),
    File(file::FileReply),
    Shm(shm::ShmReply),
}

/// Everything the child wrote: read into the parent's memory, or the sealed
/// memfd mapped read-only.
#[derive(Debug)]
pub(crate) enum Reply {
    Read(Vec<u8>),
    Mapped(shm::Mapped),
}

impl Reply {
    /// The bytes in `range` as a `Vec` of exactly that size, made from the
    /// reply's own buffer (moved to its front, the rest given back) or
    /// read from the sealed memfd straight into fresh memory: never a
    /// second full-size buffer.
    pub(crate) fn into_range(self, range: Range<usize>) -> Result<Vec<u8>, String> {
        match self {
            Self::Read(mut bytes) => {
                let len = range.len();
                bytes.copy_within(range, 0);
                bytes.truncate(len);
                bytes.shrink_to_fit();
                Ok(bytes)
            }
            Self::Mapped(mapped) => mapped.read_range(range),
        }
    }
}

impl Deref for Reply {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Self::Read(bytes) => bytes,
            Self::Mapped(mapped) => mapped,
        }
    }
}

impl ReplyChannel {
    pub(crate) fn create(backend: Backend, temp_dir: Option<&Path>) -> Result<Self, Error> {
        Ok(match backend {
            Backend::Pipe => Self::Pipe(pipe::PipeReply::create()?),
            Backend::File => Self::File(file::FileReply::create(temp_dir)?),
            Backend::Shm => Self::Shm(shm::ShmReply::create()?),
        })
    }

    /// The descriptor the child writes its reply to.
    pub(crate) fn child_end(&self) -> BorrowedFd<'_> {
        match self {
            Self::Pipe(pipe) => pipe.child_end(),
            Self::File(file) => file.child_end(),
            Self::Shm(shm) => shm.child_end(),
        }
    }

    /// Drops the parent's copy of the child's end once the child has its own.
    pub(crate) fn close_child_end(&mut self) {
        if let Self::Pipe(pipe) = self {
            pipe.close_child_end();
        }
    }

    /// A descriptor to poll for readability while the child runs.
    pub(crate) fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        match self {
            Self::Pipe(pipe) => pipe.poll_fd(),
            Self::File(_) | Self::Shm(_) => None,
        }
    }

    /// Takes in what the child has written so far, up to a budget per call.
    ///
    /// # Errors
    ///
    /// A malformed frame header (the child is lying or corrupt).
    pub(crate) fn read_available(&mut self) -> Result<(), String> {
        match self {
            Self::Pipe(pipe) => pipe.read_available().map(drop),
            Self::File(_) | Self::Shm(_) => Ok(()),
        }
    }

    /// Everything the child wrote, once it has exited.
    ///
    /// # Errors
    ///
    /// The reply could not be read or is larger than any frame may be.
    pub(crate) fn finish(self) -> Result<Reply, String> {
        match self {
            Self::Pipe(mut pipe) => {
                pipe.drain()?;
                Ok(Reply::Read(pipe.into_bytes()))
            }
            Self::File(file) => file.read_all().map(Reply::Read),
            Self::Shm(shm) => Ok(shm
                .map()?
                .map_or_else(|| Reply::Read(Vec::new()), Reply::Mapped)),
        }
    }
}
