//! The caller's side of a one-shot call's progress: the pipe the child
//! writes its messages to, read while the parent supervises the child.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::codec::{self, FrameKind, HEADER_LEN};
use crate::error::Error;
use crate::progress::{ProgressSink, deliver};
use crate::sys;

/// What one wake-up reads at most before the messages are delivered: the
/// size of a pipe (a child blocked on a full pipe goes on at once).
const READ_CHUNK: usize = 64 << 10;

/// What draining reads at most once the child is gone: more than any pipe
/// holds, so only an escaped grandchild that keeps writing reaches it.
const DRAIN_BUDGET: usize = 16 << 20;

/// The caller's side of one call's progress: the pipe the child writes
/// its messages to, read while the child runs.
pub(crate) struct ProgressStream<'s> {
    read: OwnedFd,
    write: Option<OwnedFd>,
    /// Bytes read and not yet delivered: at most one frame and one read.
    pending: Vec<u8>,
    eof: bool,
    sink: &'s mut dyn ProgressSink,
}

impl fmt::Debug for ProgressStream<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProgressStream")
            .field("read", &self.read)
            .field("write", &self.write)
            .field("pending", &self.pending.len())
            .field("eof", &self.eof)
            .finish_non_exhaustive()
    }
}

impl<'s> ProgressStream<'s> {
    /// A pipe for the call's messages, when `sink` is some: its read end
    /// non-blocking (the parent polls it), its write end blocking (a child
    /// that outpaces the caller waits).
    pub(crate) fn create(sink: Option<&'s mut dyn ProgressSink>) -> Result<Option<Self>, Error> {
        let Some(sink) = sink else {
            return Ok(None);
        };
        let (read, write) = crate::stdio::pipe_from_child("progress pipe")?;
        Ok(Some(Self {
            read,
            write: Some(write),
            pending: Vec::new(),
            eof: false,
            sink,
        }))
    }

    /// The descriptor the child writes its messages to.
    pub(crate) fn child_end(&self) -> BorrowedFd<'_> {
        self.write.as_ref().expect("child end taken").as_fd()
    }

    /// Drops the parent's copy of the child's end once the child has its own.
    pub(crate) fn close_child_end(&mut self) {
        self.write = None;
    }

    /// A descriptor to poll for readability while the child runs.
    pub(crate) fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        (!self.eof).then(|| self.read.as_fd())
    }

    /// Reads once (it never blocks) and delivers every complete message.
    /// Returns how many bytes it read.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] (with `pid`) for a malformed frame,
    /// [`Error::Codec`] for a message that does not decode.
    ///
    /// # Panics
    ///
    /// If the caller's callback panics.
    pub(crate) fn read_available(&mut self, pid: u32) -> Result<usize, Error> {
        let protocol = |message: String| Error::Protocol {
            pid,
            message: format!("progress: {message}"),
        };
        if self.eof {
            return Ok(0);
        }
        let read = match sys::read_into_spare(self.read.as_fd(), &mut self.pending, READ_CHUNK) {
            Ok(0) => {
                self.eof = true;
                0
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(protocol(format!("read the progress pipe: {e}"))),
        };
        let mut delivered = 0;
        let result = loop {
            let Some(head) = self.pending[delivered..].first_chunk::<HEADER_LEN>() else {
                break Ok(read);
            };
            let len = match codec::parse_header(head) {
                Ok((FrameKind::Progress, len)) => len,
                Ok((kind, _)) => break Err(protocol(format!("unexpected {kind:?} frame"))),
                Err(message) => break Err(protocol(message)),
            };
            let start = delivered + HEADER_LEN;
            let Some(end) = usize::try_from(len)
                .ok()
                .and_then(|len| start.checked_add(len))
            else {
                break Err(protocol(format!("frame of {len} bytes")));
            };
            let Some(payload) = self.pending.get(start..end) else {
                break Ok(read);
            };
            // Delivered or refused, the frame is done with.
            delivered = end;
            if let Err(error) = deliver(&mut *self.sink, payload) {
                break Err(error);
            }
        };
        self.pending.drain(..delivered);
        result
    }

    /// Delivers what is left in the pipe once the child is gone. A frame
    /// cut short (a child killed while it wrote) is dropped: how the child
    /// ended says what happened.
    ///
    /// # Errors
    ///
    /// As [`read_available`](Self::read_available).
    pub(crate) fn drain(&mut self, pid: u32) -> Result<(), Error> {
        let mut budget = DRAIN_BUDGET;
        while budget > 0 && !self.eof {
            match self.read_available(pid)? {
                0 if !self.eof => break, // empty, a grandchild holds it open
                n => budget = budget.saturating_sub(n),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::error::CodecStage;
    use crate::progress::Progress;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut frame = codec::header(FrameKind::Progress, payload.len()).to_vec();
        frame.extend_from_slice(payload);
        frame
    }

    fn recorder() -> (Progress<'static, String>, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let progress = Progress::new({
            let seen = Arc::clone(&seen);
            move |m| seen.lock().unwrap().push(m)
        });
        (progress, seen)
    }

    #[test]
    fn frames_split_anywhere_arrive_whole_and_in_order() {
        let (mut progress, seen) = recorder();
        let mut bytes = Vec::new();
        for word in ["one", "two", "three"] {
            bytes.extend(frame(&codec::to_msgpack(word).unwrap()));
        }
        let mut stream = ProgressStream::create(Some(&mut progress))
            .unwrap()
            .unwrap();
        let writer = stream.write.take().unwrap();
        for piece in bytes.chunks(5) {
            sys::write_all(writer.as_fd(), piece).unwrap();
            stream.read_available(1).unwrap();
        }
        drop(writer);
        stream.drain(1).unwrap();
        assert!(stream.eof);
        assert!(stream.pending.is_empty());
        drop(stream);
        assert_eq!(*seen.lock().unwrap(), ["one", "two", "three"]);
    }

    #[test]
    fn a_bad_frame_is_a_protocol_error_and_a_bad_message_a_codec_error() {
        let (mut progress, _) = recorder();
        let mut stream = ProgressStream::create(Some(&mut progress))
            .unwrap()
            .unwrap();
        let writer = stream.write.take().unwrap();
        sys::write_all(writer.as_fd(), &frame(&codec::to_msgpack(&7u32).unwrap())).unwrap();
        match stream.read_available(9) {
            Err(Error::Codec { stage, .. }) => assert_eq!(stage, CodecStage::DecodeProgress),
            other => panic!("expected a codec error, got {other:?}"),
        }
        let mut other = codec::header(FrameKind::Return, 0).to_vec();
        other.extend_from_slice(b"junk");
        sys::write_all(writer.as_fd(), &other).unwrap();
        match stream.read_available(9) {
            Err(Error::Protocol { pid, message }) => {
                assert_eq!(pid, 9);
                assert_eq!(message, "progress: unexpected Return frame");
            }
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }

    #[test]
    fn a_cut_frame_is_dropped_when_draining() {
        let (mut progress, seen) = recorder();
        let mut stream = ProgressStream::create(Some(&mut progress))
            .unwrap()
            .unwrap();
        let writer = stream.write.take().unwrap();
        sys::write_all(writer.as_fd(), &codec::header(FrameKind::Progress, 100)).unwrap();
        sys::write_all(writer.as_fd(), b"cut").unwrap();
        drop(writer);
        stream.drain(1).unwrap();
        drop(stream);
        assert!(seen.lock().unwrap().is_empty());
    }
}
