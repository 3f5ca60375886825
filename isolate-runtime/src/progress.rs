//! Messages from a running call to its caller: [`Progress`].
//!
//! The caller holds a `Progress` made with a callback (or a channel); the
//! child gets one that writes each message as a `Progress` frame to a
//! descriptor of its own (a dedicated pipe for a one-shot call). The parent
//! reads that stream while it supervises the child and hands each frame to
//! the caller's `Progress` ([`deliver`]), on the calling thread, in order.
//! A child that sends faster than the caller takes its messages blocks on
//! the full pipe: the parent holds at most one frame and one read ahead.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::panic::catch_unwind;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, PoisonError, mpsc};

use nix::fcntl::OFlag;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{self, FrameKind, HEADER_LEN};
use crate::error::{CodecStage, Error};
use crate::panic::message_of;
use crate::sys;

/// Messages an isolated function sends its caller while it runs.
///
/// An isolated function takes at most one `Progress<M>` parameter. The
/// caller passes one made with [`Progress::new`] (a callback),
/// [`Progress::channel`] (an iterator for another thread) or
/// [`Progress::ignore`]; the function calls [`send`](Progress::send). Every
/// message the child sent arrives, in order, before the call returns, and
/// the callback runs on the calling thread. Messages cross the process
/// boundary as MessagePack, so `M` must be `Serialize + DeserializeOwned`.
///
/// Whatever the backend, the messages travel on a pipe of their own, made
/// only for functions that take a `Progress`. A child that sends faster
/// than the caller takes them is slowed down by that pipe: the caller never
/// buffers more than one message ahead.
///
/// A child that crashes has sent everything up to its last completed
/// `send`: those messages are delivered, then the call returns its error.
/// A message that fails to decode in the caller fails the call with
/// [`Error::Codec`] at [`CodecStage::DecodeProgress`] (the child is
/// killed); a malformed frame fails it with [`Error::Protocol`]. A callback
/// that panics ends the call: the child's process group is killed and the
/// child reaped, then the panic continues in the caller.
///
/// Only `#[bombsquad]` functions carry progress; the closure forms
/// ([`fork`](crate::fork), [`Isolate::fork`](crate::Isolate::fork)) do not:
/// a `Progress` captured by their closure runs its callback in the child,
/// where nobody sees it.
///
/// # Examples
///
/// ```
/// use bombsquad::{Progress, bombsquad};
///
/// #[bombsquad]
/// fn crunch(steps: u32, progress: Progress<u32>) -> u64 {
///     for step in 0..steps {
///         progress.send(step);
///     }
///     42
/// }
///
/// let mut seen = Vec::new();
/// let (progress, messages) = Progress::channel();
/// let total = std::thread::scope(|s| {
///     s.spawn(|| seen.extend(messages));
///     crunch(3, progress)
/// });
/// assert_eq!(total.unwrap(), 42);
/// assert_eq!(seen, [0, 1, 2]);
///
/// // A callback runs on the calling thread as each message arrives.
/// let total = crunch(2, Progress::new(|step| println!("step {step}")));
/// assert_eq!(total.unwrap(), 42);
/// ```
pub struct Progress<M> {
    sink: Sink<M>,
}

/// Where a `Progress` puts what it is sent.
enum Sink<M> {
    /// In the caller: a callback, run with each message.
    Callback(Mutex<Box<dyn FnMut(M) + Send>>),
    /// In the caller: nothing.
    Ignore,
    /// In a child: a frame on the progress descriptor.
    Child(PhantomData<fn(M)>),
}

impl<M> Progress<M> {
    /// Runs `callback` with each message, on the thread that called the
    /// isolated function, as the message arrives.
    ///
    /// # Examples
    ///
    /// ```
    /// use bombsquad::{Progress, bombsquad};
    ///
    /// #[bombsquad(start_method = "fork")]
    /// fn count_to(n: u32, progress: Progress<String>) {
    ///     for i in 1..=n {
    ///         progress.send(format!("{i} of {n}"));
    ///     }
    /// }
    ///
    /// let (sender, receiver) = std::sync::mpsc::channel();
    /// count_to(2, Progress::new(move |line| sender.send(line).unwrap())).unwrap();
    /// assert_eq!(receiver.try_iter().collect::<Vec<_>>(), ["1 of 2", "2 of 2"]);
    /// ```
    pub fn new(callback: impl FnMut(M) + Send + 'static) -> Self {
        Self {
            sink: Sink::Callback(Mutex::new(Box::new(callback))),
        }
    }

    /// Discards every message, without decoding it.
    ///
    /// # Examples
    ///
    /// ```
    /// use bombsquad::{Progress, bombsquad};
    ///
    /// #[bombsquad]
    /// fn quiet(progress: Progress<u8>) -> u8 {
    ///     progress.send(1);
    ///     2
    /// }
    ///
    /// assert_eq!(quiet(Progress::ignore()).unwrap(), 2);
    /// ```
    #[must_use]
    pub fn ignore() -> Self {
        Self { sink: Sink::Ignore }
    }

    /// A `Progress` for the child side; generated code passes it to the
    /// function's body.
    fn child() -> Self {
        Self {
            sink: Sink::Child(PhantomData),
        }
    }
}

impl<M: Send + 'static> Progress<M> {
    /// A `Progress` and the iterator of its messages, for another thread to
    /// consume while the call runs. The iterator ends once the call is over
    /// and the `Progress` dropped (an isolated function takes it by value,
    /// so at the end of the call).
    ///
    /// The channel between the two is unbounded: messages the consumer has
    /// not taken yet wait in memory, so the iterator may also be read after
    /// the call, on the same thread. Use [`Progress::new`] to have a slow
    /// consumer slow the child down instead.
    ///
    /// # Examples
    ///
    /// ```
    /// use bombsquad::{Progress, bombsquad};
    ///
    /// #[bombsquad(backend = "pipe")]
    /// fn squares(n: u64, progress: Progress<u64>) -> u64 {
    ///     (1..=n).map(|i| { progress.send(i * i); i * i }).sum()
    /// }
    ///
    /// let (progress, messages) = Progress::channel();
    /// assert_eq!(squares(3, progress).unwrap(), 14);
    /// assert_eq!(messages.collect::<Vec<_>>(), [1, 4, 9]);
    /// ```
    #[must_use]
    pub fn channel() -> (Self, ProgressMessages<M>) {
        let (sender, receiver) = mpsc::channel();
        let progress = Self::new(move |message| {
            // A consumer that stopped listening wants no more messages.
            let _ = sender.send(message);
        });
        (progress, ProgressMessages { receiver })
    }
}

impl<M: Serialize> Progress<M> {
    /// Sends `message` to the caller.
    ///
    /// In a child (inside an isolated function) the message is encoded and
    /// written at once; it blocks while the caller is behind by a pipe's
    /// worth of messages. A message the caller can no longer receive (it
    /// gave the call up) is dropped. Sending from several threads is safe:
    /// each message arrives whole. Messages sent by threads that outlive
    /// the function may be lost.
    ///
    /// On a `Progress` the caller made (the function run in-process), the
    /// message goes straight to its callback.
    ///
    /// # Panics
    ///
    /// In a child, if `M`'s `Serialize` implementation fails or panics (the
    /// call then reports the panic as any other). In the caller, if the
    /// callback panics.
    pub fn send(&self, message: M) {
        match &self.sink {
            Sink::Callback(callback) => {
                let mut callback = callback.lock().unwrap_or_else(PoisonError::into_inner);
                callback(message);
            }
            Sink::Ignore => {}
            Sink::Child(_) => {
                let payload = codec::to_msgpack(&message)
                    .unwrap_or_else(|e| panic!("could not encode a progress message: {e}"));
                let _ = send_frame(&payload);
            }
        }
    }
}

impl<M> fmt::Debug for Progress<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sink = match self.sink {
            Sink::Callback(_) => "callback",
            Sink::Ignore => "ignore",
            Sink::Child(_) => "child",
        };
        f.debug_struct("Progress").field("sink", &sink).finish()
    }
}

/// The messages of a [`Progress::channel`], in the order the child sent
/// them. The iterator blocks for the next message and ends once the call is
/// over and its `Progress` dropped.
pub struct ProgressMessages<M> {
    receiver: mpsc::Receiver<M>,
}

impl<M> Iterator for ProgressMessages<M> {
    type Item = M;

    fn next(&mut self) -> Option<M> {
        self.receiver.recv().ok()
    }
}

impl<M> fmt::Debug for ProgressMessages<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProgressMessages").finish_non_exhaustive()
    }
}

/// The caller's end of a call's progress, with its message type erased:
/// takes one encoded message.
///
/// Not public API: generated code passes a `&mut Progress<M>` as
/// `&mut dyn ProgressSink`.
pub trait ProgressSink {
    /// Decodes `payload` and hands the message on.
    ///
    /// # Errors
    ///
    /// The message does not decode (its `Deserialize` failed or panicked).
    ///
    /// # Panics
    ///
    /// If the callback panics.
    fn deliver(&mut self, payload: &[u8]) -> Result<(), String>;
}

impl<M: Serialize + DeserializeOwned> ProgressSink for Progress<M> {
    fn deliver(&mut self, payload: &[u8]) -> Result<(), String> {
        match &mut self.sink {
            Sink::Callback(callback) => {
                let decoded = catch_unwind(|| codec::from_msgpack::<M>(payload))
                    .unwrap_or_else(|panic| Err(message_of(panic.as_ref())));
                let callback = callback.get_mut().unwrap_or_else(PoisonError::into_inner);
                callback(decoded?);
            }
            Sink::Ignore => {}
            // A nested call's messages, passed on to this child's caller as
            // they came: the same type, already encoded.
            Sink::Child(_) => {
                let _ = send_frame(payload);
            }
        }
        Ok(())
    }
}

/// Not public API: the sink generated code passes for a function's
/// `Progress` parameter. Its bounds put a non-serde message type's error on
/// the parameter.
pub fn sink<M: Serialize + DeserializeOwned>(
    progress: &mut Progress<M>,
) -> Option<&mut dyn ProgressSink> {
    Some(progress)
}

/// Not public API: the `Progress` a child's function body gets.
#[must_use]
pub fn for_child<M>() -> Progress<M> {
    Progress::child()
}

/// Hands one encoded message to `sink`, on the calling thread.
///
/// # Errors
///
/// [`Error::Codec`] at [`CodecStage::DecodeProgress`] when the message does
/// not decode.
///
/// # Panics
///
/// If the caller's callback panics: the caller should end the call (kill
/// and reap the child), then let the panic continue.
pub(crate) fn deliver(sink: &mut dyn ProgressSink, payload: &[u8]) -> Result<(), Error> {
    sink.deliver(payload)
        .map_err(|message| Error::codec(CodecStage::DecodeProgress, message))
}

/// Where a child's `Progress` writes; -1 when it has none (then messages
/// are dropped).
static PROGRESS_FD: AtomicI32 = AtomicI32::new(-1);

/// Keeps the frames of threads that send at once apart.
static WRITE_LOCK: Mutex<()> = Mutex::new(());

/// Makes `fd` the descriptor this process's child-side `Progress` writes
/// to: a one-shot child's progress pipe, or a worker's socket; -1 for none.
/// A new child starts with none (`child::become_child`).
pub(crate) fn set_fd(fd: RawFd) {
    PROGRESS_FD.store(fd, Ordering::Relaxed);
}

/// Holds back progress frames while a reply goes to `fd`, if progress goes
/// there too (a worker's socket), so a thread still sending messages
/// cannot split the reply.
pub(crate) fn lock_if_shared(fd: RawFd) -> Option<std::sync::MutexGuard<'static, ()>> {
    (fd >= 0 && PROGRESS_FD.load(Ordering::Relaxed) == fd)
        .then(|| WRITE_LOCK.lock().unwrap_or_else(PoisonError::into_inner))
}

/// Writes one `Progress` frame carrying `payload` to the progress
/// descriptor, whole, even when several threads send at once.
///
/// # Errors
///
/// The write failed (the caller is gone); nothing is written without a
/// progress descriptor.
pub(crate) fn send_frame(payload: &[u8]) -> io::Result<()> {
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
    frame.extend_from_slice(&codec::header(FrameKind::Progress, payload.len()));
    frame.extend_from_slice(payload);
    let _guard = WRITE_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    let fd = PROGRESS_FD.load(Ordering::Relaxed);
    if fd < 0 {
        return Ok(());
    }
    // SAFETY: the runtime handed this descriptor over with `set_fd` and
    // never closes it before the process leaves.
    let fd = unsafe { sys::borrow_fd(fd) };
    sys::write_all(fd, &frame)
}

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
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
            .map_err(|e| Error::spawn("create the progress pipe", e))?;
        sys::set_nonblocking(&read).map_err(|e| Error::spawn("configure the progress pipe", e))?;
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
    use std::sync::Arc;

    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut frame = codec::header(FrameKind::Progress, payload.len()).to_vec();
        frame.extend_from_slice(payload);
        frame
    }

    fn recorder() -> (Progress<String>, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let progress = Progress::new({
            let seen = Arc::clone(&seen);
            move |m| seen.lock().unwrap().push(m)
        });
        (progress, seen)
    }

    #[test]
    fn a_callers_progress_delivers_locally() {
        let (progress, seen) = recorder();
        progress.send("a".to_owned());
        progress.send("b".to_owned());
        assert_eq!(*seen.lock().unwrap(), ["a", "b"]);
        Progress::<u8>::ignore().send(1);
    }

    #[test]
    fn the_iterator_ends_when_the_progress_is_dropped() {
        let (progress, messages) = Progress::channel();
        progress.send(1u8);
        progress.send(2);
        drop(progress);
        assert_eq!(messages.collect::<Vec<_>>(), [1, 2]);
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
