//! The pipe backend: the parent drains the pipe while the child writes (a
//! pipe holds only its capacity; a writer blocks until it is read), checking
//! each frame header as it arrives so a lying length is refused at once.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::fcntl::{FcntlArg, fcntl};

use crate::codec::{self, HEADER_LEN};
use crate::error::Error;
use crate::sys;

/// Asked-for pipe capacity for a large reply: fewer wake-ups. The kernel
/// caps it at `/proc/sys/fs/pipe-max-size`; failure is harmless. Asked for
/// only once a frame header announces more than [`DEFAULT_CAPACITY`]: the
/// `fcntl` costs about 5% of a trivial fork-mode call.
const PIPE_CAPACITY: i32 = 1 << 20;
/// What a new pipe holds (Linux: 16 pages).
const DEFAULT_CAPACITY: usize = 64 << 10;
/// Most the buffer grows ahead of the data on a frame's announced length.
const MAX_RESERVE_AHEAD: usize = 64 << 20;
/// Most one wake-up reads before the supervisor gets to check its deadline
/// again: a child writing nonstop never lets the pipe run empty.
const READ_BUDGET: usize = 16 << 20;
/// The buffer's first size: a small reply fits in one page. A frame header
/// then reserves room for its whole payload (up to [`MAX_RESERVE_AHEAD`]),
/// so the buffer is never grown (and copied) by guesswork: a trivial call
/// used to grow it from 64 KiB to 128 KiB right after the reply arrived,
/// copying the whole buffer into fresh pages (about 30 page faults).
const FIRST_CAPACITY: usize = 4 << 10;

#[derive(Debug)]
pub(crate) struct PipeReply {
    read: OwnedFd,
    write: Option<OwnedFd>,
    bytes: Vec<u8>,
    /// Offset of the next frame header not yet checked.
    next_header: usize,
    eof: bool,
    /// Whether the pipe was asked for [`PIPE_CAPACITY`].
    grown: bool,
}

impl PipeReply {
    pub(crate) fn create() -> Result<Self, Error> {
        let (read, write) = crate::stdio::pipe_from_child("reply pipe")?;
        Ok(Self {
            read,
            write: Some(write),
            bytes: Vec::new(),
            next_header: 0,
            eof: false,
            grown: false,
        })
    }

    pub(crate) fn child_end(&self) -> BorrowedFd<'_> {
        self.write.as_ref().expect("child end taken").as_fd()
    }

    pub(crate) fn close_child_end(&mut self) {
        self.write = None;
    }

    pub(crate) fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        (!self.eof).then(|| self.read.as_fd())
    }

    /// Reads until the pipe is empty or [`READ_BUDGET`] bytes were read (it
    /// never blocks). Returns whether it stopped on the budget.
    pub(crate) fn read_available(&mut self) -> Result<bool, String> {
        let start = self.bytes.len();
        while !self.eof {
            if self.bytes.len() - start >= READ_BUDGET {
                return Ok(true);
            }
            let min_spare = if self.bytes.capacity() == 0 {
                FIRST_CAPACITY
            } else {
                HEADER_LEN
            };
            match sys::read_into_spare(self.read.as_fd(), &mut self.bytes, min_spare) {
                Ok(0) => self.eof = true,
                Ok(_) => self.check_headers()?,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("read the reply pipe: {e}")),
            }
        }
        Ok(false)
    }

    /// Reads everything left, once the child has exited.
    pub(crate) fn drain(&mut self) -> Result<(), String> {
        while self.read_available()? {}
        Ok(())
    }

    fn check_headers(&mut self) -> Result<(), String> {
        while let Some(head) = self
            .bytes
            .get(self.next_header..self.next_header + HEADER_LEN)
        {
            let (_, len) = codec::parse_header(head.try_into().expect("header length"))?;
            let len = usize::try_from(len).map_err(|e| e.to_string())?;
            self.next_header += HEADER_LEN + len;
            if len > DEFAULT_CAPACITY && !self.grown {
                // Either end resizes the same pipe; the write end may be closed.
                let _ = fcntl(&self.read, FcntlArg::F_SETPIPE_SZ(PIPE_CAPACITY));
                self.grown = true;
            }
            let ahead = self.next_header.saturating_sub(self.bytes.len());
            self.bytes.reserve(ahead.min(MAX_RESERVE_AHEAD));
        }
        Ok(())
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}
