//! Messages from a running call to its caller: [`Progress`].
//!
//! The caller holds a `Progress` made with a callback (or a channel); the
//! child gets one that writes each message as a `Progress` frame to a
//! descriptor of its own (a dedicated pipe for a one-shot call). The parent
//! reads that stream while it supervises the child and hands each frame to
//! the caller's `Progress` ([`deliver`]), on the calling thread, in order.
//! A child that sends faster than the caller takes its messages blocks on
//! the full pipe: the parent holds at most one frame and one read ahead.

mod callback;
mod child;

pub use callback::AsyncProgressCallback;
pub(crate) use child::{lock_if_shared, send_frame, set_fd};

use std::fmt;
use std::marker::PhantomData;
use std::panic::catch_unwind;
use std::sync::{Mutex, PoisonError, mpsc};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::vocabulary::error::{CodecStage, Error};
use crate::vocabulary::panic_report::message_of;
use crate::wire::codec;

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
///
/// The lifetime is the callback's: a callback may borrow the caller's
/// locals, since it runs on the calling thread during the call. In a
/// function's parameter list write `Progress<M>` and it is elided.
///
/// `F` is the callback's type. [`Progress::new`] keeps the closure's own
/// type, so a `Progress` is `Send` and `Sync` exactly when its callback is
/// `Send`: a blocking call takes any callback (one holding an `Rc`, or
/// borrowing a `Cell`), an `async fn`'s call needs a `Send + 'static` one
/// (its future may move between threads). The default, `Progress<M>`, is
/// what the function's body gets, what [`ignore`](Progress::ignore) and
/// [`channel`](Progress::channel) return, and what a `Send` callback
/// converts into ([`From`]); it is `Send + Sync`, so the body may share it
/// with threads of its own.
pub struct Progress<'a, M, F: ?Sized = dyn FnMut(M) + Send + 'a> {
    sink: Sink<'a, M, F>,
}

/// Where a `Progress` puts what it is sent.
enum Sink<'a, M, F: ?Sized> {
    /// In the caller: a callback, run with each message. In a `Mutex`, so
    /// that a `Progress` with a `Send` callback is `Sync` too.
    Callback(Mutex<Box<F>>),
    /// In the caller: nothing.
    Ignore,
    /// In a child: a frame on the progress descriptor.
    Child(PhantomData<fn(M) -> &'a ()>),
}

impl<'a, M, F: FnMut(M) + 'a> Progress<'a, M, F> {
    /// Runs `callback` with each message, on the thread that called the
    /// isolated function, as the message arrives. The callback may borrow
    /// from the caller (`&mut` a local): it is done once the call returns.
    /// It need not be `Send` for a blocking call (an `Rc`, a `Cell`); an
    /// `async fn`'s call requires `Send + 'static`.
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
    /// let mut lines = Vec::new();
    /// count_to(2, Progress::new(|line| lines.push(line))).unwrap();
    /// assert_eq!(lines, ["1 of 2", "2 of 2"]);
    ///
    /// // The callback runs on this thread: it need not be `Send`.
    /// let count = std::rc::Rc::new(std::cell::Cell::new(0));
    /// let counter = std::rc::Rc::clone(&count);
    /// count_to(3, Progress::new(move |_| counter.set(counter.get() + 1))).unwrap();
    /// assert_eq!(count.get(), 3);
    /// ```
    pub fn new(callback: F) -> Self {
        Self {
            sink: Sink::Callback(Mutex::new(Box::new(callback))),
        }
    }
}

/// A `Send` callback's `Progress` as the default `Progress<M>`, for a
/// caller that names the type (a field, a helper's parameter).
///
/// # Examples
///
/// ```
/// use bombsquad::Progress;
///
/// let progress: Progress<u32> = Progress::new(|step| println!("step {step}")).into();
/// # drop(progress);
/// ```
impl<'a, M, F: FnMut(M) + Send + 'a> From<Progress<'a, M, F>> for Progress<'a, M> {
    fn from(progress: Progress<'a, M, F>) -> Self {
        let sink = match progress.sink {
            Sink::Callback(callback) => {
                let callback: Box<dyn FnMut(M) + Send + 'a> = callback
                    .into_inner()
                    .unwrap_or_else(PoisonError::into_inner);
                Sink::Callback(Mutex::new(callback))
            }
            Sink::Ignore => Sink::Ignore,
            Sink::Child(marker) => Sink::Child(marker),
        };
        Self { sink }
    }
}

impl<M> Progress<'_, M> {
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

impl<M: Send + 'static> Progress<'static, M> {
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
        let progress = Progress::new(move |message| {
            // A consumer that stopped listening wants no more messages.
            let _ = sender.send(message);
        });
        (progress.into(), ProgressMessages { receiver })
    }
}

impl<M: Serialize, F: ?Sized + FnMut(M)> Progress<'_, M, F> {
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

impl<M, F: ?Sized> fmt::Debug for Progress<'_, M, F> {
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
/// Not public API: generated code passes a `&mut Progress<M, F>` as
/// `&mut dyn ProgressSink` (a blocking call), or a `Progress` whose
/// callback is `Send` to an async call.
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

impl<M: Serialize + DeserializeOwned, F: ?Sized + FnMut(M)> ProgressSink for Progress<'_, M, F> {
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
pub fn sink<'s, M: Serialize + DeserializeOwned, F: ?Sized + FnMut(M)>(
    progress: &'s mut Progress<'_, M, F>,
) -> Option<&'s mut dyn ProgressSink> {
    Some(progress)
}

/// Not public API: the `Progress` a child's function body gets.
#[must_use]
pub fn for_child<M>() -> Progress<'static, M> {
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
pub(crate) fn deliver<S: ?Sized + ProgressSink>(sink: &mut S, payload: &[u8]) -> Result<(), Error> {
    sink.deliver(payload)
        .map_err(|message| Error::codec(CodecStage::DecodeProgress, message))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use super::*;

    /// A caller's `Progress` that records what it receives.
    pub(crate) fn recorder() -> (Progress<'static, String>, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let progress = Progress::new({
            let seen = Arc::clone(&seen);
            move |m| seen.lock().unwrap().push(m)
        });
        (progress.into(), seen)
    }

    #[test]
    fn a_callers_progress_delivers_locally() {
        let (progress, seen) = recorder();
        progress.send("a".to_owned());
        progress.send("b".to_owned());
        assert_eq!(*seen.lock().unwrap(), ["a", "b"]);
        Progress::<u8>::ignore().send(1);
    }

    /// The body's `Progress` (and `ignore`'s, `channel`'s) is shared by
    /// threads; a caller's takes any callback and converts to it when the
    /// callback is `Send`.
    #[test]
    fn the_default_progress_is_send_and_sync_and_a_callers_takes_any_callback() {
        fn send_sync<T: Send + Sync>(_: &T) {}
        send_sync(&for_child::<u32>());
        send_sync(&Progress::<u32>::ignore());
        send_sync(&Progress::<u32>::channel().0);
        let count = std::rc::Rc::new(std::cell::Cell::new(0));
        let counter = std::rc::Rc::clone(&count);
        Progress::new(move |n: u32| counter.set(counter.get() + n)).send(2);
        assert_eq!(count.get(), 2);
        // A `Send` callback's, made the default with `into`.
        let (progress, seen) = recorder();
        send_sync(&progress);
        progress.send("boxed".to_owned());
        assert_eq!(*seen.lock().unwrap(), ["boxed"]);
    }

    #[test]
    fn the_iterator_ends_when_the_progress_is_dropped() {
        let (progress, messages) = Progress::channel();
        progress.send(1u8);
        progress.send(2);
        drop(progress);
        assert_eq!(messages.collect::<Vec<_>>(), [1, 2]);
    }
}
