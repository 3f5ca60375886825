//! The caller's side of a one-shot call's progress: the pipe the child
//! writes its messages to, read while the parent supervises the child.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::child::progress::{ProgressSink, deliver};
use crate::sys;
use crate::vocabulary::error::Error;
use crate::wire::{CallId, FrameKind, FrameReader, Limit};

/// What one wake-up reads at most before the messages are delivered: the
/// size of a pipe (a child blocked on a full pipe goes on at once).
const READ_CHUNK: usize = 64 << 10;

/// What draining reads at most once the child is gone: more than any pipe
/// holds, so only an escaped grandchild that keeps writing reaches it.
const DRAIN_BUDGET: usize = 16 << 20;

/// The caller's side of one call's progress: the pipe the child writes
/// its messages to, read while the child runs. `S` is the sink's type: an
/// async call's is `Send`, so its future is.
pub(crate) struct ProgressStream<'s, S: ?Sized + ProgressSink = dyn ProgressSink + 's> {
    read: OwnedFd,
    write: Option<OwnedFd>,
    /// Bytes read and not yet delivered: at most one frame and one read.
    frames: FrameReader,
    /// The call whose messages these are.
    call_id: CallId,
    eof: bool,
    sink: &'s mut S,
}

impl<S: ?Sized + ProgressSink> fmt::Debug for ProgressStream<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProgressStream")
            .field("read", &self.read)
            .field("write", &self.write)
            .field("pending", &self.frames.pending())
            .field("eof", &self.eof)
            .finish_non_exhaustive()
    }
}

impl<'s, S: ?Sized + ProgressSink> ProgressStream<'s, S> {
    /// A pipe for the messages of the call `call_id`, when `sink` is some:
    /// its read end non-blocking (the parent polls it), its write end
    /// blocking (a child that outpaces the caller waits). A message may be
    /// as large as a result (`max_result`), and 1 MiB whatever that is.
    pub(crate) fn create(
        sink: Option<&'s mut S>,
        call_id: CallId,
        max_result: u64,
    ) -> Result<Option<Self>, Error> {
        let Some(sink) = sink else {
            return Ok(None);
        };
        let (read, write) = crate::parent::stdio::pipe_from_child("progress pipe")?;
        Ok(Some(Self {
            read,
            write: Some(write),
            frames: FrameReader::new(Limit::Results(max_result)),
            call_id,
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
        let protocol = |message: String| Error::protocol(pid, format!("progress: {message}"));
        if self.eof {
            return Ok(0);
        }
        let read = match sys::read_into_spare(self.read.as_fd(), self.frames.buffer(), READ_CHUNK) {
            Ok(0) => {
                self.eof = true;
                0
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(protocol(format!("read the progress pipe: {e}"))),
        };
        let result = loop {
            let frame = match self.frames.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break Ok(read),
                Err(e) => break Err(protocol(e.into_message())),
            };
            if frame.kind != FrameKind::Progress {
                break Err(protocol(format!("unexpected {:?} frame", frame.kind)));
            }
            if frame.call_id != self.call_id {
                break Err(protocol(format!(
                    "a message for call {}, during call {}",
                    frame.call_id, self.call_id
                )));
            }
            // Delivered or refused, the frame is done with.
            if let Err(error) = deliver(&mut *self.sink, self.frames.payload(&frame)) {
                break Err(error);
            }
        };
        self.frames.consume();
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
    use super::*;
    use crate::child::progress::tests::recorder;
    use crate::vocabulary::error::CodecStage;

    use crate::wire::codec;
    use crate::wire::{self, HEADER_LEN};

    const CALL: CallId = 41;

    fn frame(payload: &[u8]) -> Vec<u8> {
        wire::frame(FrameKind::Progress, CALL, payload)
    }

    #[test]
    fn frames_split_anywhere_arrive_whole_and_in_order() {
        let (mut progress, seen) = recorder();
        let mut bytes = Vec::new();
        for word in ["one", "two", "three"] {
            bytes.extend(frame(&codec::to_msgpack(word).unwrap()));
        }
        let mut stream = ProgressStream::create(Some(&mut progress), CALL, wire::MAX_FRAME_LEN)
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
        assert_eq!(stream.frames.pending(), 0);
        drop(stream);
        assert_eq!(*seen.lock().unwrap(), ["one", "two", "three"]);
    }

    #[test]
    fn a_bad_frame_is_a_protocol_error_and_a_bad_message_a_codec_error() {
        let (mut progress, _) = recorder();
        let mut stream = ProgressStream::create(Some(&mut progress), CALL, wire::MAX_FRAME_LEN)
            .unwrap()
            .unwrap();
        let writer = stream.write.take().unwrap();
        sys::write_all(writer.as_fd(), &frame(&codec::to_msgpack(&7u32).unwrap())).unwrap();
        match stream.read_available(9) {
            Err(Error::Codec { stage, .. }) => assert_eq!(stage, CodecStage::DecodeProgress),
            other => panic!("expected a codec error, got {other:?}"),
        }
        let other = wire::frame(FrameKind::Return, CALL, b"junk");
        sys::write_all(writer.as_fd(), &other).unwrap();
        match stream.read_available(9) {
            Err(Error::Protocol { pid, message, .. }) => {
                assert_eq!(pid, 9);
                assert_eq!(message, "progress: unexpected Return frame");
            }
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }

    #[test]
    fn a_cut_frame_is_dropped_when_draining() {
        let (mut progress, seen) = recorder();
        let mut stream = ProgressStream::create(Some(&mut progress), CALL, wire::MAX_FRAME_LEN)
            .unwrap()
            .unwrap();
        let writer = stream.write.take().unwrap();
        let whole = frame(&[0xc0; 100]);
        sys::write_all(writer.as_fd(), &whole[..HEADER_LEN + 3]).unwrap();
        drop(writer);
        stream.drain(1).unwrap();
        drop(stream);
        assert!(seen.lock().unwrap().is_empty());
    }

    #[test]
    fn a_message_for_another_call_or_with_a_flipped_bit_is_a_protocol_error() {
        let (mut progress, seen) = recorder();
        let mut stream = ProgressStream::create(Some(&mut progress), CALL, wire::MAX_FRAME_LEN)
            .unwrap()
            .unwrap();
        let writer = stream.write.take().unwrap();
        let word = codec::to_msgpack("word").unwrap();
        let stray = wire::frame(FrameKind::Progress, CALL + 1, &word);
        sys::write_all(writer.as_fd(), &stray).unwrap();
        match stream.read_available(9) {
            Err(Error::Protocol { message, .. }) => {
                assert_eq!(
                    message,
                    format!(
                        "progress: a message for call {}, during call {CALL}",
                        CALL + 1
                    )
                );
            }
            other => panic!("expected a protocol error, got {other:?}"),
        }
        drop(stream);
        let mut stream = ProgressStream::create(Some(&mut progress), CALL, wire::MAX_FRAME_LEN)
            .unwrap()
            .unwrap();
        let writer = stream.write.take().unwrap();
        let mut flipped = frame(&word);
        flipped[HEADER_LEN + 2] ^= 0x20;
        sys::write_all(writer.as_fd(), &flipped).unwrap();
        match stream.read_available(9) {
            Err(Error::Protocol { message, .. }) => {
                assert!(
                    message.starts_with("progress: checksum mismatch in a Progress frame"),
                    "{message}"
                );
            }
            other => panic!("expected a protocol error, got {other:?}"),
        }
        drop(stream);
        assert!(seen.lock().unwrap().is_empty());
    }
}
