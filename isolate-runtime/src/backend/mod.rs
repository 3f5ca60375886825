//! Where the child's reply goes: a pipe the parent drains while the child
//! runs, an unnamed temp file the parent reads after the child exits, or a
//! memfd the parent seals and maps after the child exits.

mod file;
mod pipe;
mod shm;

use std::borrow::Cow;
use std::fs::File;
use std::io;
use std::ops::{Deref, Range};
use std::os::fd::BorrowedFd;
use std::os::unix::fs::FileExt;
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

/// Everything the child wrote: read into the parent's memory, the sealed
/// memfd mapped read-only, or a reply file read up to the payload of the
/// `Return` frame that ends it.
#[derive(Debug)]
pub(crate) enum Reply {
    Read(Vec<u8>),
    Mapped(shm::Mapped),
    Unread(file::UnreadResult),
}

impl Reply {
    /// The bytes in `range` as a `Vec` of exactly that size, made from the
    /// reply's own buffer (moved to its front, the rest given back) or
    /// read from the sealed memfd or the reply file straight into fresh
    /// memory: never a second full-size buffer.
    ///
    /// # Errors
    ///
    /// The memfd or the file could not be read, or the file no longer
    /// holds `range` (something shrank it after the child exited).
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
            Self::Unread(unread) => unread.read_range(range),
        }
    }

    /// The bytes in `range`: borrowed where the reply holds them, read
    /// from the reply file where it left them there.
    ///
    /// # Errors
    ///
    /// As [`Reply::into_range`].
    pub(crate) fn get(&self, range: Range<usize>) -> Result<Cow<'_, [u8]>, String> {
        match self {
            Self::Read(bytes) => Ok(Cow::Borrowed(&bytes[range])),
            Self::Mapped(mapped) => Ok(Cow::Borrowed(&mapped[range])),
            Self::Unread(unread) => unread.get(range),
        }
    }

    /// The payload of a `Return` frame that ends a reply file and was left
    /// in it: that frame is the last, so it decides the call.
    pub(crate) fn unread_result(&self) -> Option<Range<usize>> {
        match self {
            Self::Unread(unread) => Some(unread.result()),
            Self::Read(_) | Self::Mapped(_) => None,
        }
    }

    /// The reply with every byte in memory (or mapped), for what looks at
    /// all of it: a crash's frames and trailing fault record.
    ///
    /// # Errors
    ///
    /// The reply file could not be read.
    pub(crate) fn into_whole(self) -> Result<Self, String> {
        match self {
            Self::Unread(unread) => unread.read_whole().map(Self::Read),
            whole => Ok(whole),
        }
    }
}

/// The reply's bytes; for [`Reply::Unread`] only the frames before its
/// result (see [`Reply::unread_result`]).
impl Deref for Reply {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Self::Read(bytes) => bytes,
            Self::Mapped(mapped) => mapped,
            Self::Unread(unread) => unread,
        }
    }
}

/// `range` of `file` (`what`, in errors), read with `pread` into fresh
/// memory of its exact size: one copy, whatever the file's kind.
///
/// # Errors
///
/// The read failed, or the file ends inside `range`.
fn read_exact_range(file: &File, range: Range<usize>, what: &str) -> Result<Vec<u8>, String> {
    let mut bytes = vec![0; range.len()];
    file.read_exact_at(&mut bytes, range.start as u64)
        .map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => format!(
                "{what} ends before byte {}: it shrank while it was read",
                range.end
            ),
            _ => format!("read {what}: {e}"),
        })?;
    Ok(bytes)
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
            Self::File(file) => file.finish(),
            Self::Shm(shm) => Ok(shm
                .map()?
                .map_or_else(|| Reply::Read(Vec::new()), Reply::Mapped)),
        }
    }
}
