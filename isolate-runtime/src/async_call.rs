//! Async callers on tokio (feature `tokio`; Linux only, as the crate): a
//! second driver of the call engine (`supervise.rs`), and the child's
//! runtime for an `async fn` body.
//!
//! No thread per call: for each wait the engine's watches (the pidfd, the
//! pipes, the socket while the request is sent) are registered with
//! tokio's reactor and raced against a timer for the deadline. They are
//! deregistered before the engine acts, since it may close a pipe at EOF.
//! Dropping the call's future drops the engine, whose `Child` kills the
//! process group and reaps the child.
//!
//! Everything tokio-specific is in [`wait`]: another runtime would need
//! only its own way to wait for a descriptor and a deadline.

use std::future::{Future, poll_fn};
use std::io;
use std::os::fd::AsFd;
use std::pin::pin;
use std::task::Poll;
use std::time::Instant;

use serde::Serialize;
use smallvec::SmallVec;
use tokio::io::Interest;

use crate::child::progress::ProgressSink;
use crate::child::registry::Entry;
use crate::options::isolate::{self, Isolate, StartMethod};
use crate::options::throttle;
use crate::parent::backend::ReplyChannel;
use crate::parent::outcome;
use crate::parent::progress::ProgressStream;
use crate::parent::stdio::OutputRelay;
use crate::parent::supervise::{CallEngine, Child, Exit, Outgoing, Source, Step};
use crate::start::forkserver;
use crate::start::spawn::{self, Prepared, Running, Start};
use crate::sys;
use crate::vocabulary::error::Error;
use crate::wire::codec::Codec;

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
pub async fn run_with_progress<R, P: ProgressSink + Send>(
    call: Result<AsyncCall, Error>,
    codec: Codec<R>,
    mut progress: P,
) -> Result<R, Error> {
    run_delivering(call, codec, Some(&mut progress)).await
}

/// An async call's sink: `Send`, so the future holding it is.
type SendSink<'p> = dyn ProgressSink + Send + 'p;

async fn run_delivering<R>(
    call: Result<AsyncCall, Error>,
    codec: Codec<R>,
    sink: Option<&mut SendSink<'_>>,
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

/// [`supervise`](crate::parent::supervise::supervise), awaited.
async fn supervise(
    child: Child,
    deadline: Option<Instant>,
    reply: &mut ReplyChannel,
    outgoing: Outgoing<'_>,
    output: OutputRelay,
    progress: Option<&mut ProgressStream<'_, SendSink<'_>>>,
) -> Result<Exit, Error> {
    let mut engine = CallEngine::new(child, deadline, reply, outgoing, output, progress);
    while !engine.is_over() {
        if engine.is_past_deadline(Instant::now()) {
            engine.on_deadline();
            break;
        }
        let registered = register(&engine)?;
        let ready = wait(registered, engine.deadline()).await?;
        if !ready.is_empty() && engine.on_ready(ready) == Step::Finished {
            break;
        }
    }
    engine.finish()
}

/// The engine's descriptors, lent to the reactor for one wait.
type Registered<'e> = SmallVec<[(sys::reactor::Registration<'e>, Source); 6]>;

/// Registers what the engine waits for now with the current runtime's
/// reactor.
fn register<'e>(engine: &'e CallEngine<'_, '_, SendSink<'_>>) -> Result<Registered<'e>, Error> {
    check_runtime()?;
    engine
        .watches()
        .iter()
        .map(|watch| {
            let interest = if watch.source.wants_write() {
                Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            sys::reactor::register(watch.fd, interest).map(|fd| (fd, watch.source))
        })
        .collect::<Result<_, _>>()
        .map_err(|e| Error::spawn("watch the child process with tokio's reactor", e))
}

/// Whether the call is polled inside a tokio runtime, whose reactor and
/// timers it needs.
fn check_runtime() -> Result<(), Error> {
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
async fn wait(
    registered: Registered<'_>,
    deadline: Option<Instant>,
) -> Result<SmallVec<[Source; 6]>, Error> {
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
/// # Panics
///
/// If the runtime cannot be built (the call reports the child's panic).
pub fn block_on<F: Future>(body: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build the isolated async function's tokio runtime in the child")
        .block_on(body)
}
