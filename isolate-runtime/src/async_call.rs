//! Async callers on tokio (feature `tokio`; Linux only, as the crate): a
//! second driver of the call engine (`supervise.rs`), and the child's
//! runtime for an `async fn` body.
//!
//! No thread per call: the engine's watches (the pidfd, the pipes, the
//! socket while the request is sent) are kept in an epoll set of the
//! call's own (`async_watch_set.rs`), which is registered with tokio's
//! reactor once and raced against a timer for the deadline. Dropping the
//! call's future drops the engine, whose `Child` kills the process group
//! and reaps the child. A pool's exchange registers the worker's
//! descriptors for each wait instead (`pool/awaited.rs`, through [`lend`]
//! and [`wait`]): a warm call waits once.
//!
//! Everything tokio-specific is in [`lend`], [`wait`] and the set's
//! `wait`: another runtime would need only its own way to wait for a
//! descriptor and a deadline.

use std::future::{Future, poll_fn};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::pin::pin;
use std::task::Poll;
use std::time::Instant;

use serde::Serialize;
use smallvec::SmallVec;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::async_watch_set::WatchSet;
use crate::backend::ReplyChannel;
use crate::codec::Codec;
use crate::error::Error;
use crate::isolate::{self, Isolate, StartMethod};
use crate::progress::{ProgressSink, ProgressStream};
use crate::registry::Entry;
use crate::spawn::{self, Prepared, Running, Start};
use crate::stdio::OutputRelay;
use crate::supervise::{CallEngine, Child, Exit, Outgoing, Source, Step};
use crate::{forkserver, outcome, throttle};

/// A registered function's call, prepared when its wrapper is called: the
/// options, and the request already encoded, so the future owns only bytes
/// and is `'static` whatever the arguments borrowed.
#[derive(Debug)]
pub struct AsyncCall {
    options: Isolate,
    prepared: Prepared,
    start: fn(Start) -> Result<Child, Error>,
}

/// Prepares an `async fn` call with `start_method = "spawn"`.
///
/// # Errors
///
/// As the blocking call's, before its child starts.
pub fn prepare_spawned<A: Serialize + ?Sized>(
    options: &Isolate,
    entry: &'static Entry,
    args: &A,
) -> Result<AsyncCall, Error> {
    prepare(StartMethod::Spawn, options, entry, args)
}

/// Prepares an `async fn` call with `start_method = "forkserver"`.
///
/// # Errors
///
/// As the blocking call's, before its child starts.
pub fn prepare_forkserved<A: Serialize + ?Sized>(
    options: &Isolate,
    entry: &'static Entry,
    args: &A,
) -> Result<AsyncCall, Error> {
    prepare(StartMethod::Forkserver, options, entry, args)
}

/// The `declared` start method, or the scope's, of the calling thread at
/// the time of the call (not of the first poll).
fn prepare<A: Serialize + ?Sized>(
    declared: StartMethod,
    options: &Isolate,
    entry: &'static Entry,
    args: &A,
) -> Result<AsyncCall, Error> {
    throttle::check()?;
    let options = isolate::scoped(options).map_or_else(|| options.clone(), |(scoped, _)| scoped);
    let start = match options.start_method.unwrap_or(declared) {
        StartMethod::Spawn => spawn::re_execute,
        StartMethod::Forkserver => forkserver::fork_from_server,
        StartMethod::Fork => {
            return Err(Error::InvalidOptions {
                message: format!(
                    "Isolate::scope asks for start_method fork but {} is an async function: \
                     forking from an async runtime's threads is unsafe; use spawn or forkserver",
                    options.name.as_deref().unwrap_or("the function")
                ),
            });
        }
    };
    let prepared = spawn::prepare(&options, entry, args)?;
    Ok(AsyncCall {
        options,
        prepared,
        start,
    })
}

/// Runs a prepared call: waits for a permit, starts the child and awaits
/// its end on tokio's reactor, never blocking the executor's thread for
/// longer than a start. Dropped before the end, it kills the child's
/// process group and reaps the child.
///
/// # Errors
///
/// As the blocking call's; [`Error::Spawn`] when it is polled outside a
/// tokio runtime, or after its runtime shut down.
///
/// # Panics
///
/// Re-raises the child's panic (in `PanicMode::Resume`) when polled to
/// completion.
pub async fn run<R>(call: Result<AsyncCall, Error>, codec: Codec<R>) -> Result<R, Error> {
    run_delivering(call, codec, None).await
}

/// [`run`], delivering the messages the child sends to `progress` (on the
/// thread that polls the future) as they arrive.
///
/// # Errors
///
/// As [`run`]'s, and as a blocking call's with a `Progress`.
///
/// # Panics
///
/// As [`run`]; a panic of the progress callback continues once the child
/// is killed and reaped.
pub async fn run_with_progress<R, P: ProgressSink>(
    call: Result<AsyncCall, Error>,
    codec: Codec<R>,
    mut progress: P,
) -> Result<R, Error> {
    run_delivering(call, codec, Some(&mut progress)).await
}

async fn run_delivering<R>(
    call: Result<AsyncCall, Error>,
    codec: Codec<R>,
    sink: Option<&mut dyn ProgressSink>,
) -> Result<R, Error> {
    let AsyncCall {
        options,
        prepared,
        start,
    } = call?;
    // Before a child is started that the call could not watch.
    check_runtime()?;
    // Held until the child is reaped.
    let _permit = poll_fn(|cx| match throttle::try_acquire_or_wake(cx.waker()) {
        Some(permit) => Poll::Ready(permit),
        None => Poll::Pending,
    })
    .await;
    let Running {
        child,
        deadline,
        mut reply,
        socket,
        output,
        mut progress,
        oom,
    } = spawn::start_call(&options, &prepared, sink, start)?;
    let outgoing = Outgoing::new(socket.as_fd(), &prepared.request);
    let exit = supervise(
        child,
        deadline,
        &mut reply,
        outgoing,
        output,
        progress.as_mut(),
    )
    .await?;
    outcome::conclude(exit, reply, codec, &options, &oom)
}

/// [`supervise`](crate::supervise::supervise), awaited.
async fn supervise(
    child: Child,
    deadline: Option<Instant>,
    reply: &mut ReplyChannel,
    outgoing: Outgoing<'_>,
    output: OutputRelay,
    progress: Option<&mut ProgressStream<'_>>,
) -> Result<Exit, Error> {
    let mut engine = CallEngine::new(child, deadline, reply, outgoing, output, progress);
    check_runtime()?;
    // Declared after the engine, dropped before it; the registration
    // before the set.
    let mut set = WatchSet::new()?;
    let lent = set.lend()?;
    while !engine.is_over() {
        if engine.is_past_deadline(Instant::now()) {
            engine.on_deadline();
            break;
        }
        set.follow(
            engine
                .watches()
                .iter()
                .map(|watch| (watch.fd, watch.source)),
        )?;
        let ready = set.wait(&lent, engine.deadline()).await?;
        if !ready.is_empty() && engine.on_ready(ready) == Step::Finished {
            break;
        }
    }
    drop(lent);
    drop(set);
    engine.finish()
}

/// A descriptor the engine owns, lent to the reactor for one wait.
/// Dropping its `AsyncFd` deregisters it and closes nothing.
#[derive(Debug)]
pub(crate) struct Lent(RawFd);

impl AsRawFd for Lent {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Registered descriptors, each with what it stands for.
pub(crate) type Registered<T = Source> = SmallVec<[(AsyncFd<Lent>, T); 6]>;

/// Whether a registered descriptor is waited on to write.
pub(crate) trait Watched: Copy {
    fn wants_write(self) -> bool;
}

impl Watched for Source {
    fn wants_write(self) -> bool {
        Source::wants_write(self)
    }
}

/// Registers `fd`, standing for `what`, with the current runtime's reactor.
///
/// The caller keeps `fd` open while the registration lives, and acts on
/// it (closes it) only once the registration is dropped: the waits here
/// drop theirs when they return, and a dropped call future drops them
/// before the descriptors' owner, as it unwinds its scopes innermost
/// first.
pub(crate) fn lend<T: Watched>(fd: BorrowedFd<'_>, what: T) -> Result<(AsyncFd<Lent>, T), Error> {
    let interest = if what.wants_write() {
        Interest::WRITABLE
    } else {
        Interest::READABLE
    };
    // SAFETY: the descriptor is open now, and its owner keeps it open while
    // registered (the contract above).
    unsafe { AsyncFd::register_with_interest(Lent(fd.as_raw_fd()), interest) }
        .map(|fd| (fd, what))
        .map_err(|e| {
            Error::spawn(
                "watch the child process with tokio's reactor",
                io::Error::from(e),
            )
        })
}

/// Whether the call is polled inside a tokio runtime, whose reactor and
/// timers it needs.
pub(crate) fn check_runtime() -> Result<(), Error> {
    match tokio::runtime::Handle::try_current() {
        Ok(_) => Ok(()),
        Err(e) => Err(Error::spawn(
            "wait for the child process: an async isolated call must be awaited inside a \
             tokio runtime",
            io::Error::other(e),
        )),
    }
}

/// Waits until some of `registered` are ready (returned, once
/// deregistered) or `deadline` passes (nothing returned).
pub(crate) async fn wait<T: Watched>(
    registered: Registered<T>,
    deadline: Option<Instant>,
) -> Result<SmallVec<[T; 6]>, Error> {
    let mut timer = pin!(deadline.map(|at| tokio::time::sleep_until(at.into())));
    poll_fn(|cx| {
        let mut ready = SmallVec::new();
        for (fd, source) in &registered {
            let polled = if source.wants_write() {
                fd.poll_write_ready(cx).map_ok(drop)
            } else {
                fd.poll_read_ready(cx).map_ok(drop)
            };
            match polled {
                Poll::Ready(Ok(())) => ready.push(*source),
                // The runtime is shutting down: its reactor will not wake us.
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(Err(Error::spawn(
                        "wait for the child process (tokio's runtime is shutting down)",
                        e,
                    )));
                }
                Poll::Pending => {}
            }
        }
        if !ready.is_empty() {
            return Poll::Ready(Ok(ready));
        }
        match timer.as_mut().as_pin_mut().map(|timer| timer.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Ok(SmallVec::new())),
            _ => Poll::Pending,
        }
    })
    .await
}

/// Runs an `async fn` body in the child, on a fresh current-thread tokio
/// runtime with I/O and timers.
///
/// The runtime is kept, not dropped, once the body is done: a one-shot
/// child leaves by `_exit` right after its reply, so its runtime's
/// shutdown (~7 µs) is never paid; a worker drops the previous call's
/// runtime when its next call's body is done. Its tasks never run again
/// either way: a current-thread runtime runs them only inside `block_on`.
///
/// # Panics
///
/// If the runtime cannot be built (the call reports the child's panic).
pub fn block_on<F: Future>(body: F) -> F::Output {
    thread_local! {
        static LAST_RUNTIME: std::cell::Cell<Option<tokio::runtime::Runtime>> =
            const { std::cell::Cell::new(None) };
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build the isolated async function's tokio runtime in the child");
    let output = runtime.block_on(body);
    drop(LAST_RUNTIME.replace(Some(runtime)));
    output
}
