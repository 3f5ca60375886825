//! Async callers on tokio (feature `tokio`; Linux only, as the crate): a
//! second driver of the call engine (`supervise.rs`), and the child's
//! runtime for an `async fn` body.
//!
//! No thread per call: the engine's watches (the pidfd, the pipes, the
//! socket while the request is sent) are kept in an epoll set of the
//! call's own (`parent/watch_set.rs`), which is registered with tokio's
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
use std::os::fd::AsFd;
use std::task::Poll;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::child::progress::ProgressSink;
use crate::child::registry::Entry;
use crate::options::isolate::{self, Isolate, StartMethod};
use crate::options::throttle;
use crate::parent::backend::ReplyChannel;
use crate::parent::outcome;
use crate::parent::progress::ProgressStream;
use crate::parent::reactor::{self, check_runtime};
use crate::parent::stdio::OutputRelay;
use crate::parent::supervise::{CallEngine, Child, Exit, KILL_GRACE, Outgoing, Step};
use crate::parent::watch_set::WatchSet;
use crate::start::forkserver;
use crate::start::spawn::{self, Prepared, Running, Start};
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
    check_runtime()?;
    // Declared after the engine, dropped before it.
    let mut set = WatchSet::new()?;
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
        let ready = set.wait(engine.deadline()).await?;
        if !ready.is_empty() && engine.on_ready(ready) == Step::Finished {
            break;
        }
    }
    drop(set);
    // A child killed at its deadline may not die at once (D state): its
    // death is awaited here, not waited for on this thread by `finish`.
    if let Some(pidfd) = engine.killed_child_alive() {
        reactor::exit_within(pidfd, KILL_GRACE).await;
    }
    engine.finish_within(Duration::ZERO)
}

/// Runs an `async fn` body with no `.await` in it (the attribute's
/// `awaits.rs` decides) in the child, without a runtime: such a future is
/// done at its first poll. Should it not be, which only a mistake of that
/// scan could cause, the rest runs on a runtime ([`block_on`]).
///
/// # Panics
///
/// As [`block_on`], if it falls back to it.
pub fn poll_once<F: Future>(body: F) -> F::Output {
    let mut body = std::pin::pin!(body);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match body.as_mut().poll(&mut context) {
        Poll::Ready(output) => output,
        Poll::Pending => block_on(body),
    }
}

/// Runs an `async fn` body in the child, on a current-thread tokio runtime
/// with I/O and timers that no task of an earlier call can run on.
///
/// A worker's previous call left its runtime behind: when no task is alive
/// on it (none spawned, or all done), it is as good as a fresh one and
/// serves this call too, which spares building one (~4 µs, a warm awaited
/// call's largest part). When a task is left, it gets a fresh runtime
/// instead, and the old one is dropped once this call's body is done: its
/// tasks never run again, as a current-thread runtime runs them only
/// inside `block_on`.
///
/// The runtime is kept, not dropped, once the body is done: a one-shot
/// child leaves by `_exit` right after its reply, so its runtime's shutdown
/// (~7 µs) is never paid.
///
/// # Panics
///
/// If the runtime cannot be built (the call reports the child's panic).
pub fn block_on<F: Future>(body: F) -> F::Output {
    thread_local! {
        static LAST_RUNTIME: std::cell::Cell<Option<tokio::runtime::Runtime>> =
            const { std::cell::Cell::new(None) };
    }
    let (runtime, retired) = match LAST_RUNTIME.take() {
        Some(idle) if idle.metrics().num_alive_tasks() == 0 => (idle, None),
        retired => (
            crate::child::runtime::fresh()
                .expect("build the isolated async function's tokio runtime in the child"),
            retired,
        ),
    };
    let output = runtime.block_on(body);
    drop(retired);
    LAST_RUNTIME.set(Some(runtime));
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pending at its first poll (it wakes itself), then ready.
    struct PendingOnce(bool);

    impl Future for PendingOnce {
        type Output = u32;

        fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<u32> {
            if std::mem::replace(&mut self.0, true) {
                return Poll::Ready(7);
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    #[test]
    fn a_body_that_was_not_done_at_its_first_poll_finishes_on_a_runtime() {
        assert_eq!(poll_once(async { 3 }), 3);
        assert_eq!(poll_once(PendingOnce(false)), 7);
    }
}
