//! The pipe backend: the parent drains the pipe while the child writes (a
//! pipe holds only its capacity; a writer blocks until it is read), reading
//! frames as they arrive, so a lying length or a reply over the limit is
//! refused at once and each checksum is computed while its bytes are in
//! the cache.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::fcntl::{FcntlArg, fcntl};

use super::reply_limit;
use crate::sys;
use crate::vocabulary::error::Error;
use crate::wire::{FrameError, FrameReader, HEADER_LEN, Limit};

/// Asked-for pipe capacity for a large reply: fewer wake-ups. The kernel
/// caps it at `/proc/sys/fs/pipe-max-size`; failure is harmless. Asked for
/// only once a frame header announces more than [`DEFAULT_CAPACITY`]: the
/// `fcntl` costs about 5% of a trivial fork-mode call.
const PIPE_CAPACITY: i32 = 1 << 20;
/// What a new pipe holds (Linux: 16 pages).
const DEFAULT_CAPACITY: u64 = 64 << 10;
/// Most one wake-up reads before the supervisor gets to check its deadline
/// again: a child writing nonstop never lets the pipe run empty.
const READ_BUDGET: usize = 16 << 20;

#[derive(Debug)]
pub(crate) struct PipeReply {
    read: OwnedFd,
    /// The child's end, kept open here until the call is over: the
    /// child's exit then wakes the caller once (its pidfd), not also for
    /// the pipe's end. The reply is drained without waiting for that end.
    write: OwnedFd,
    frames: FrameReader,
    /// The largest result accepted.
    limit: u64,
    eof: bool,
    /// Whether the pipe was asked for [`PIPE_CAPACITY`].
    grown: bool,
}

impl PipeReply {
    pub(crate) fn create(limit: u64) -> Result<Self, Error> {
        let (read, write) = crate::parent::stdio::pipe_from_child("reply pipe")?;
        Ok(Self {
            read,
            write,
            frames: FrameReader::new(Limit::Results(limit)),
            limit,
            eof: false,
            grown: false,
        })
    }

    pub(crate) fn child_end(&self) -> BorrowedFd<'_> {
        self.write.as_fd()
    }

    pub(crate) fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        (!self.eof).then(|| self.read.as_fd())
    }

    /// Reads until the pipe is empty or [`READ_BUDGET`] bytes were read (it
    /// never blocks). Returns whether it stopped on the budget. A read that
    /// left room in the buffer emptied the pipe: it stops there rather than
    /// pay a read that fails with `EAGAIN` (a trivial reply comes in one
    /// read; anything written later makes the pipe readable again).
    pub(crate) fn read_available(&mut self) -> Result<bool, FrameError> {
        let start = self.frames.bytes().len();
        while !self.eof {
            if self.frames.bytes().len() - start >= READ_BUDGET {
                return Ok(true);
            }
            let buffer = self.frames.buffer();
            // A small reply fits in the first read; a frame header then
            // reserves room for its whole payload (up to 64 MiB ahead), so
            // the buffer is never grown (and copied) by guesswork.
            let min_spare = if buffer.capacity() == 0 {
                sys::SMALL_READ
            } else {
                HEADER_LEN
            };
            match sys::read_into_spare(self.read.as_fd(), buffer, min_spare) {
                Ok(0) => self.eof = true,
                Ok(_) => {
                    let emptied = buffer.len() < buffer.capacity();
                    self.take_frames()?;
                    if emptied {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("read the reply pipe: {e}").into()),
            }
        }
        Ok(false)
    }

    /// Reads everything left, once the child has exited.
    pub(crate) fn drain(&mut self) -> Result<(), FrameError> {
        while self.read_available()? {}
        Ok(())
    }

    /// Checks the frames that arrived whole; they stay in the buffer.
    fn take_frames(&mut self) -> Result<(), FrameError> {
        while self.frames.next_frame()?.is_some() {}
        let size = self.frames.bytes().len() as u64;
        if size > reply_limit(self.limit) {
            return Err(FrameError::TooLarge {
                size,
                limit: self.limit,
            });
        }
        if !self.grown
            && self
                .frames
                .announced()
                .is_some_and(|len| len > DEFAULT_CAPACITY)
        {
            // Either end resizes the same pipe; the write end may be closed.
            let _ = fcntl(&self.read, FcntlArg::F_SETPIPE_SZ(PIPE_CAPACITY));
            self.grown = true;
        }
        Ok(())
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.frames.into_bytes()
    }
}
