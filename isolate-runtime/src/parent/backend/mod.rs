//! Where the child's reply goes: a pipe the parent drains while the child
//! runs, an unnamed temp file the parent reads after the child exits, or a
//! memfd the parent seals and maps after the child exits.

mod file;
mod pipe;
mod shm;

use std::borrow::Cow;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::FileExt;
use std::rc::Rc;

use crate::options::isolate::Isolate;
use crate::vocabulary::error::Error;
use crate::wire::codec::ReplyBytes;
use crate::wire::{self, CallId, Frame, FrameError, Frames};

pub(crate) use file::{ResultCheck, Verdict};

pub(crate) use crate::options::backend::Backend;

/// What a reply may hold besides its result: frame headers, a `Padding`
/// frame (under a page), the panic reports of panics a function caught
/// (each at most `wire::SMALL_FRAME_LIMIT`; a function that catches
/// hundreds of them with `RUST_BACKTRACE=1` sends megabytes). A reply
/// larger than the result's limit plus this is refused whole, whatever its
/// frames say, and a reply file's frames before its result are held in
/// memory up to this much.
pub(crate) const FRAMING_ALLOWANCE: u64 = 16 << 20;

/// The most a reply may hold: `limit` for its result, plus
/// [`FRAMING_ALLOWANCE`].
fn reply_limit(limit: u64) -> u64 {
    limit.saturating_add(FRAMING_ALLOWANCE)
}

/// The parent's end of a reply channel.
#[derive(Debug)]
pub(crate) struct ReplyChannel {
    kind: ChannelKind,
    call_id: CallId,
    /// The largest result accepted (`Isolate::max_result`).
    limit: u64,
}

#[derive(Debug)]
enum ChannelKind {
    Pipe(pipe::PipeReply),
    File(file::FileReply),
    Shm(shm::ShmReply),
}

/// Everything the child wrote, for the call `call_id`: read into the
/// parent's memory, the sealed memfd mapped read-only, or a reply file
/// read up to the payload of the `Return` frame that ends it.
#[derive(Debug)]
pub(crate) struct Reply {
    body: Body,
    call_id: CallId,
    /// Whether every whole frame's checksum was checked as it arrived.
    checked: bool,
    /// The largest frame accepted.
    limit: u64,
}

#[derive(Debug)]
enum Body {
    Read(Vec<u8>),
    Mapped(shm::Mapped),
    File(file::FileView),
}

/// Where a reply's frames are: those held in memory, checked, and the
/// payload of a final `Return` frame left in the reply file, checked as it
/// is read.
#[derive(Debug)]
pub(crate) struct Layout<'a> {
    pub(crate) frames: Vec<Frame<'a>>,
    pub(crate) unread_result: Option<Range<usize>>,
}

impl Reply {
    /// `bytes` read from a channel, not yet checked, for the call `call_id`.
    pub(crate) fn read(bytes: Vec<u8>, call_id: CallId) -> Self {
        Self {
            body: Body::Read(bytes),
            call_id,
            checked: false,
            limit: wire::MAX_FRAME_LEN,
        }
    }

    /// `bytes` whose whole frames a `FrameReader` checked as they arrived.
    pub(crate) fn checked(bytes: Vec<u8>, call_id: CallId) -> Self {
        Self {
            checked: true,
            ..Self::read(bytes, call_id)
        }
    }

    /// The reply's frames for deciding the call: each one checked (its
    /// checksum, and that it belongs to this call).
    ///
    /// # Errors
    ///
    /// The first bad frame, or a last frame cut short.
    pub(crate) fn layout(&self) -> Result<Layout<'_>, FrameError> {
        let (bytes, unread_result) = match &self.body {
            Body::Read(bytes) => (&bytes[..], None),
            Body::Mapped(mapped) => mapped.view().walked()?,
            Body::File(view) => view.walked()?,
        };
        let frames = if self.checked {
            Frames::checked(bytes)
        } else {
            Frames::new(bytes)
        };
        let frames = frames
            .map(|frame| frame.and_then(|frame| self.belongs(frame)))
            .collect::<Result<_, _>>()?;
        Ok(Layout {
            frames,
            unread_result,
        })
    }

    fn belongs<'a>(&self, frame: Frame<'a>) -> Result<Frame<'a>, FrameError> {
        let size = frame.payload.len() as u64;
        let limit = wire::Limit::Results(self.limit).for_kind(frame.kind);
        if size > limit {
            return Err(FrameError::TooLarge { size, limit });
        }
        if frame.call_id == self.call_id {
            return Ok(frame);
        }
        Err(FrameError::Malformed(format!(
            "a {:?} frame for call {}, in the reply to call {}",
            frame.kind, frame.call_id, self.call_id
        )))
    }

    /// The frames at the reply's start, up to the first that is not whole
    /// and checked, for describing a crash (the reply of a crashed child is
    /// often cut short).
    pub(crate) fn leading_frames(&self) -> Vec<Frame<'_>> {
        Frames::new(self)
            .map_while(Result::ok)
            .take_while(|frame| frame.call_id == self.call_id)
            .collect()
    }

    /// The reply's last `len` bytes (fewer if it is shorter), where a
    /// crashing child's fault record lies.
    pub(crate) fn trailing(&self, len: usize) -> Cow<'_, [u8]> {
        match &self.body {
            Body::Read(bytes) => Cow::Borrowed(&bytes[bytes.len().saturating_sub(len)..]),
            Body::Mapped(mapped) => Cow::Owned(mapped.view().trailing(len)),
            Body::File(view) => Cow::Owned(view.trailing(len)),
        }
    }

    /// The check of a result left in the reply file, shared with whoever
    /// decodes it: decoding reads the result, and checks it as it reads.
    pub(crate) fn result_check(&self) -> Option<Rc<ResultCheck>> {
        match &self.body {
            Body::File(view) => view.result_check(),
            Body::Mapped(mapped) => mapped.view().result_check(),
            Body::Read(_) => None,
        }
    }
}

/// The reply's bytes held in memory: for a reply file, only the frames
/// before a result left in it.
impl ReplyBytes for Reply {
    /// The bytes in `range`: borrowed where the reply holds them, read
    /// from the reply file where it left them there.
    ///
    /// # Errors
    ///
    /// As [`ReplyBytes::take_range`].
    fn get(&self, range: Range<usize>) -> Result<Cow<'_, [u8]>, String> {
        match &self.body {
            Body::Read(bytes) => ReplyBytes::get(bytes, range),
            Body::Mapped(mapped) => mapped.get(range).map(Cow::Borrowed),
            Body::File(view) => view.get(range),
        }
    }

    /// The bytes in `range` as a `Vec` of exactly that size, made from the
    /// reply's own buffer (moved to its front, the rest given back) or
    /// read from the sealed memfd or the reply file straight into fresh
    /// memory: never a second full-size buffer.
    ///
    /// # Errors
    ///
    /// The memfd or the file could not be read, or the file no longer
    /// holds `range` (something shrank it after the child exited), or the
    /// result read from the file does not match its checksum.
    fn take_range(&mut self, range: Range<usize>) -> Result<Vec<u8>, String> {
        match &mut self.body {
            Body::Read(bytes) => bytes.take_range(range),
            Body::Mapped(mapped) => mapped.read_range(range),
            Body::File(view) => view.read_range(range),
        }
    }
}

impl std::ops::Deref for Reply {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.body {
            Body::Read(bytes) => bytes,
            Body::Mapped(mapped) => mapped.view().head(),
            Body::File(view) => view.head(),
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
    read_into(file, &mut bytes, range.start, what)?;
    Ok(bytes)
}

/// Fills `buffer` from `file` at `offset` with `pread`.
fn read_into(file: &File, buffer: &mut [u8], offset: usize, what: &str) -> Result<(), String> {
    file.read_exact_at(buffer, offset as u64)
        .map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => format!(
                "{what} ends before byte {}: it shrank while it was read",
                offset + buffer.len()
            ),
            _ => format!("read {what}: {e}"),
        })
}

impl FrameError {
    /// The call's error: [`Error::Protocol`] naming the child, or
    /// [`Error::ResultTooLarge`]. (Here, above the wire, which knows no
    /// calls' errors.)
    pub(crate) fn into_error(self, pid: u32) -> Error {
        match self {
            Self::Malformed(message) => Error::protocol(pid, message),
            Self::TooLarge { size, limit } => Error::ResultTooLarge { size, limit },
        }
    }
}

/// A reply (file or memfd) of `len` bytes over `limit` for its result
/// (docs/FAULTS.md E12).
fn check_reply_len(len: u64, limit: u64) -> Result<usize, FrameError> {
    if len > reply_limit(limit) {
        return Err(FrameError::TooLarge { size: len, limit });
    }
    usize::try_from(len).map_err(|e| FrameError::Malformed(e.to_string()))
}

impl ReplyChannel {
    /// A channel for the call `call_id`: the frames the child sends on it
    /// must carry that id.
    pub(crate) fn create(options: &Isolate, call_id: CallId) -> Result<Self, Error> {
        let limit = options.result_limit();
        let kind = match options.backend {
            Backend::Pipe => ChannelKind::Pipe(pipe::PipeReply::create(limit)?),
            Backend::File => {
                ChannelKind::File(file::FileReply::create(options.temp_dir.as_deref())?)
            }
            Backend::Shm => ChannelKind::Shm(shm::ShmReply::create()?),
        };
        Ok(Self {
            kind,
            call_id,
            limit,
        })
    }

    /// The id the child's frames must carry.
    #[cfg(test)]
    pub(crate) fn call_id(&self) -> CallId {
        self.call_id
    }

    /// The descriptor the child writes its reply to.
    pub(crate) fn child_end(&self) -> BorrowedFd<'_> {
        match &self.kind {
            ChannelKind::Pipe(pipe) => pipe.child_end(),
            ChannelKind::File(file) => file.child_end(),
            ChannelKind::Shm(shm) => shm.child_end(),
        }
    }

    /// A descriptor to poll for readability while the child runs.
    pub(crate) fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.kind {
            ChannelKind::Pipe(pipe) => pipe.poll_fd(),
            ChannelKind::File(_) | ChannelKind::Shm(_) => None,
        }
    }

    /// Takes in what the child has written so far, up to a budget per call.
    ///
    /// # Errors
    ///
    /// A malformed frame (the child is lying or corrupt), or a reply over
    /// the limit.
    pub(crate) fn read_available(&mut self) -> Result<(), FrameError> {
        match &mut self.kind {
            ChannelKind::Pipe(pipe) => pipe.read_available().map(drop),
            ChannelKind::File(_) | ChannelKind::Shm(_) => Ok(()),
        }
    }

    /// Everything the child wrote, once it has exited. A reply file is
    /// read only as far as its frame headers lead: a malformed one costs
    /// the parent what it read to find it malformed, never its whole length.
    ///
    /// # Errors
    ///
    /// The reply could not be read, or is larger than the limit allows.
    pub(crate) fn finish(self) -> Result<Reply, FrameError> {
        let (call_id, limit) = (self.call_id, self.limit);
        let (body, checked) = match self.kind {
            ChannelKind::Pipe(mut pipe) => {
                pipe.drain()?;
                (Body::Read(pipe.into_bytes()), true)
            }
            ChannelKind::File(file) => match file.finish(limit, call_id)? {
                file::Finished::Whole(bytes) => (Body::Read(bytes), false),
                file::Finished::Walked(view) => (Body::File(view), false),
            },
            ChannelKind::Shm(shm) => (shm.finish(limit, call_id)?, false),
        };
        Ok(Reply {
            body,
            call_id,
            checked,
            limit,
        })
    }
}
