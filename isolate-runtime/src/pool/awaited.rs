//! Awaited pool calls (feature `tokio`; Linux only, as the crate): the
//! `async fn` with `pool = N`, [`Worker::call_async`](super::Worker::call_async)
//! and [`RemoteWorker::call_async`](super::RemoteWorker::call_async).
//!
//! The same pool as a blocking call's, with an awaiting driver of each of
//! its waits: a caller waiting for a free worker registers a waker with
//! the pool (woken with the blocking waiters), a worker's start and its
//! request/reply exchange ([`Exchange`]) wait on tokio's reactor (the
//! pidfd, the channel and the output pipes, as `async_call.rs` does for a
//! one-shot child), and the backoffs are tokio timers. No thread per call,
//! no `spawn_blocking`.
//!
//! Dropping a call's future mid-call drops its worker, whose `Child` kills
//! the process group and reaps it, and gives its slot back: the pool
//! starts a fresh worker for the next call. A worker being started when
//! its future is dropped goes the same way.

use std::future::poll_fn;
use std::os::fd::BorrowedFd;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use nix::poll::PollFlags;
use serde::Serialize;
use smallvec::SmallVec;

use super::process::{Loss, Ready, WorkerProcess};
use super::readiness::Readiness;
use super::statics::{StaticPool, check_scoped, pool_of};
use super::{Found, Pool, Settled, Slot, WorkerOptions, backoff, encode_request, wake};
use crate::child::progress::{self, ProgressSink};
use crate::child::registry::Entry;
use crate::options::isolate::{self, Isolate};
use crate::parent::reactor::{self, Registered, Watched, check_runtime, lend, wait};
use crate::parent::supervise::KILL_GRACE;
use crate::vocabulary::error::Error;
use crate::wire::codec::Codec;
use crate::wire::{self, CallId, FrameReader, Limit, NO_CALL};

/// A progress callback that an awaiting exchange may hold across its waits.
type Deliver<'a> = dyn FnMut(&[u8]) -> Result<(), Error> + Send + 'a;

/// A pooled `async fn`'s call, prepared when its wrapper is called: the
/// pool, the per-call options and the request already encoded, so the
/// future owns no argument. Not public API.
#[doc(hidden)]
#[derive(Debug)]
pub struct PooledCall {
    pool: &'static Pool,
    /// The options of an `Isolate::scope` over the pool's; `None`: the
    /// pool's own (not copied for each call).
    scoped: Option<Isolate>,
    request: Vec<u8>,
    call_id: CallId,
}

/// Prepares a call of a `pool = N` `async fn`: makes its pool on the first
/// call, takes the calling thread's `Isolate::scope`, encodes the request.
/// Not public API.
///
/// # Errors
///
/// As the blocking pooled call's, before a worker is asked.
#[doc(hidden)]
pub fn prepare_pooled<A: Serialize + ?Sized>(
    pool: &'static StaticPool,
    options: impl FnOnce() -> WorkerOptions,
    entry: &'static Entry,
    args: &A,
) -> Result<PooledCall, Error> {
    let pool = pool_of(pool, options, entry)?;
    let scoped = match isolate::scoped(&pool.options.isolate) {
        None => None,
        Some((scoped, set)) => {
            check_scoped(&scoped, &set).map_err(|e| e.of_function(scoped.name.as_deref()))?;
            Some(scoped)
        }
    };
    let isolate = scoped.as_ref().unwrap_or(&pool.options.isolate);
    let (request, call_id) = pool
        .request(args)
        .map_err(|e| e.of_function(isolate.name.as_deref()))?;
    Ok(PooledCall {
        pool,
        scoped,
        request,
        call_id,
    })
}

/// Runs a prepared pooled call, awaiting a free worker and its answer.
/// Not public API.
///
/// # Errors
///
/// As the blocking pooled call's; [`Error::Spawn`] when it is polled
/// outside a tokio runtime, or after its runtime shut down.
///
/// # Panics
///
/// Re-raises the body's panic (in `PanicMode::Resume`) when polled to
/// completion.
#[doc(hidden)]
pub async fn run_pooled<R>(call: Result<PooledCall, Error>, codec: Codec<R>) -> Result<R, Error> {
    run_delivering(call, codec, None).await
}

/// [`run_pooled`], delivering the body's progress messages to `progress`.
/// Not public API.
///
/// # Errors
///
/// As [`run_pooled`]'s.
///
/// # Panics
///
/// As [`run_pooled`]; a panic of the progress callback continues once the
/// worker is killed and reaped.
#[doc(hidden)]
pub async fn run_pooled_with_progress<R, P: ProgressSink + Send>(
    call: Result<PooledCall, Error>,
    codec: Codec<R>,
    mut progress: P,
) -> Result<R, Error> {
    run_delivering(call, codec, Some(&mut progress)).await
}

async fn run_delivering<R>(
    call: Result<PooledCall, Error>,
    codec: Codec<R>,
    progress: Option<&mut (dyn ProgressSink + Send)>,
) -> Result<R, Error> {
    let PooledCall {
        pool,
        scoped,
        request,
        call_id,
    } = call?;
    let isolate = scoped.as_ref().unwrap_or(&pool.options.isolate);
    pool.call_async(isolate, &request, call_id, codec, progress)
        .await
        .map_err(|e| e.of_function(isolate.name.as_deref()))
}

impl Pool {
    /// The `Request` frame for `args`, with its fresh call id.
    ///
    /// # Errors
    ///
    /// [`Error::PoolInForkedChild`] in a process that did not make the
    /// pool; [`Error::Codec`] when `args` do not encode.
    pub(crate) fn request<A: Serialize + ?Sized>(
        &self,
        args: &A,
    ) -> Result<(Vec<u8>, CallId), Error> {
        self.check_owner()?;
        let call_id = wire::next_call_id();
        Ok((encode_request(args, call_id)?, call_id))
    }

    /// [`call`](Pool::call), awaited: `args` are encoded at once, the
    /// future borrows only the pool.
    pub(crate) fn call_soon<A: Serialize + ?Sized, R>(
        &self,
        args: &A,
        codec: Codec<R>,
    ) -> impl Future<Output = Result<R, Error>> + Send + use<'_, A, R> {
        let request = self.request(args);
        async move {
            let (request, call_id) = request?;
            let isolate = &self.options.isolate;
            self.call_async(isolate, &request, call_id, codec, None)
                .await
        }
    }

    /// [`call_as`](Pool::call_as), awaited: the `Request` frame `request`
    /// for the call `call_id`, on a worker awaited from the pool.
    pub(crate) async fn call_async<R>(
        &self,
        isolate: &Isolate,
        request: &[u8],
        call_id: CallId,
        codec: Codec<R>,
        mut progress: Option<&mut (dyn ProgressSink + Send)>,
    ) -> Result<R, Error> {
        check_runtime()?;
        self.check_owner()?;
        let mut crashes = 0;
        loop {
            let mut worker = self.checkout_async().await?;
            let pid = worker.pid();
            let deadline = isolate.deadline();
            // Given back if the future is dropped or a progress callback
            // panics: the worker is killed and reaped as it drops.
            let slot = Slot { pool: self, pid };
            let mut deliver = |payload: &[u8]| match progress.as_deref_mut() {
                Some(sink) => progress::deliver(sink, payload),
                None => Ok(()),
            };
            let started = Instant::now();
            let mut frames = FrameReader::new(Limit::Results(isolate.result_limit()));
            let exchanged = match worker.check_silent() {
                Ok(()) => {
                    exchange(
                        &mut worker,
                        request,
                        call_id,
                        &mut frames,
                        deadline,
                        &mut deliver,
                    )
                    .await?
                }
                Err(loss) => Err(loss),
            };
            // A worker killed for the loss may not die at once (D state):
            // its death is awaited here, not waited for on this thread.
            if let Some(pidfd) = worker.kill_for(&exchanged) {
                reactor::exit_within(pidfd, KILL_GRACE).await;
            }
            let (worker, end) = worker.called(exchanged, frames, started, Duration::ZERO);
            std::mem::forget(slot);
            let may_retry = crashes < self.options.retries;
            // No result is held across the backoff's await (its type need not be `Send`).
            let pause = match self.settle(worker, end, pid, call_id, isolate, codec, may_retry) {
                Settled::Done(result) => return result,
                Settled::Again => None,
                Settled::Retry => Some(backoff(crashes)),
            };
            if let Some(pause) = pause {
                tokio::time::sleep(pause).await;
                crashes += 1;
            }
        }
    }

    /// [`checkout`](Pool::checkout), awaited.
    async fn checkout_async(&self) -> Result<WorkerProcess, Error> {
        let waiting = Waiting {
            pool: self,
            id: next_waiter_id(),
            left_waker: AtomicBool::new(false),
        };
        let found = poll_fn(|cx| waiting.poll_find(cx)).await?;
        drop(waiting);
        match found {
            Found::Idle(worker) => Ok(worker),
            Found::Room => {
                let room = Room { pool: self };
                let worker = self.start_worker_async().await;
                // Given back by `start_failed` after a failure, taken by
                // the worker after a start.
                std::mem::forget(room);
                worker
            }
        }
    }

    /// [`start_worker`](Pool::start_worker), awaited.
    async fn start_worker_async(&self) -> Result<WorkerProcess, Error> {
        loop {
            match self.start_async().await {
                Ok(worker) => return Ok(self.started(worker)),
                Err(error) => tokio::time::sleep(self.start_failed(error)?).await,
            }
        }
    }

    /// Starts a worker and awaits its `Hello`.
    async fn start_async(&self) -> Result<WorkerProcess, Error> {
        let options = &self.options.isolate;
        let (mut worker, mut frames, started) =
            WorkerProcess::launch(&self.launch, options, self.depth)?;
        let deadline = WorkerProcess::hello_deadline(started);
        let greeted = exchange(
            &mut worker,
            &[],
            NO_CALL,
            &mut frames,
            deadline,
            &mut |_| Ok(()),
        )
        .await?;
        worker.greeted(greeted, frames, options, started)
    }
}

/// A caller waiting for a free worker: its waker stays with the pool while
/// it waits, and leaves with it.
struct Waiting<'p> {
    pool: &'p Pool,
    id: u64,
    /// Whether its waker was left with the pool: a caller served at its
    /// first look (a warm call's usual case) has nothing to take back.
    left_waker: AtomicBool,
}

impl Waiting<'_> {
    fn poll_find(&self, cx: &mut Context<'_>) -> Poll<Result<Found, Error>> {
        let mut state = self.pool.lock();
        match self.pool.find(&mut state) {
            Ok(Some(found)) => Poll::Ready(Ok(found)),
            Err(error) => Poll::Ready(Err(error)),
            Ok(None) => {
                let waker = cx.waker();
                match state.wakers.iter_mut().find(|(id, _)| *id == self.id) {
                    Some((_, known)) => known.clone_from(waker),
                    None => state.wakers.push((self.id, waker.clone())),
                }
                self.left_waker.store(true, Ordering::Relaxed);
                Poll::Pending
            }
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.left_waker.load(Ordering::Relaxed) {
            self.pool
                .lock()
                .wakers
                .retain(|(waiter, _)| *waiter != self.id);
        }
    }
}

fn next_waiter_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Room for a worker that is being started, given back if its start is
/// dropped.
struct Room<'p> {
    pool: &'p Pool,
}

impl Drop for Room<'_> {
    fn drop(&mut self) {
        let mut state = self.pool.lock();
        state.live -= 1;
        let wakers = self.pool.notify_all(&mut state);
        drop(state);
        wake(wakers);
    }
}

/// [`WorkerProcess::exchange`], awaited on tokio's reactor. The outer
/// error: the wait itself failed (no runtime, or one shutting down).
async fn exchange(
    worker: &mut WorkerProcess,
    request: &[u8],
    call_id: CallId,
    frames: &mut FrameReader,
    deadline: Option<Instant>,
    progress: &mut Deliver<'_>,
) -> Result<Result<(), Loss>, Error> {
    let mut exchange = match worker.begin(request, call_id, deadline) {
        Ok(exchange) => exchange,
        Err(loss) => return Ok(Err(loss)),
    };
    loop {
        let ready = match exchange.next_wait(Instant::now()) {
            Ok((channel, wake)) => wait_for(worker, channel, wake).await?,
            Err(loss) => return Ok(Err(loss)),
        };
        match worker.on_ready(&mut exchange, ready, frames, progress) {
            Ok(false) => {}
            Ok(true) => return Ok(Ok(())),
            Err(loss) => return Ok(Err(loss)),
        }
    }
}

/// What a worker's descriptor stands for in a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Exit,
    Readable,
    Writable,
    Output,
}

impl Watched for Side {
    fn wants_write(self) -> bool {
        self == Self::Writable
    }
}

/// Waits on the reactor for what a blocking exchange polls (the process,
/// the channel for `channel`, the output pipes) until `wake`.
async fn wait_for(
    worker: &mut WorkerProcess,
    channel: Option<PollFlags>,
    wake: Option<Instant>,
) -> Result<Ready, Error> {
    // The common case, waiting for an answer: the worker's epoll set, as
    // one descriptor, registered once per runtime (which checks that
    // there is one).
    if channel == Some(PollFlags::POLLIN)
        && let Some(readiness) = worker.readiness()
    {
        return wait_for_set(readiness, wake).await;
    }
    check_runtime()?;
    let (pidfd, channel_fds, outputs) = worker.descriptors();
    let Some(pidfd) = pidfd else {
        // Reaped by someone else: a blocking wait says the same.
        return Ok(Ready {
            exited: true,
            ..Ready::default()
        });
    };
    let to_send = channel
        .filter(|flags| flags.contains(PollFlags::POLLOUT))
        .map(|_| channel_fds.outgoing());
    let incoming = channel.map(|_| channel_fds.incoming());
    let registered = register(pidfd, incoming, to_send, outputs)?;
    let mut ready = Ready::default();
    for side in wait(registered, wake).await? {
        match side {
            Side::Exit => ready.exited = true,
            Side::Readable => ready.readable = true,
            Side::Writable => ready.writable = true,
            Side::Output => ready.output = true,
        }
    }
    Ok(ready)
}

/// Waits on the reactor until one of the worker's descriptors is ready
/// (found in its epoll set) or `wake` comes (nothing found).
///
/// The set stays registered after the wait, so tokio may report it ready
/// for events an earlier call took already: readiness is cleared only when
/// the set, asked directly, has nothing. A registration kept from an
/// earlier wait whose runtime was dropped (a runtime's id can be reused)
/// is replaced once; one made in this wait failing means the runtime is
/// shutting down.
async fn wait_for_set(readiness: &mut Readiness, wake: Option<Instant>) -> Result<Ready, Error> {
    let mut timer = pin!(wake.map(|at| tokio::time::sleep_until(at.into())));
    // Whether this wait registered the set (then a failure is final).
    let mut made_here = false;
    loop {
        made_here |= readiness
            .lend_to_current()
            .map_err(|e| Error::spawn("watch the worker with tokio's reactor", e))?;
        let Some(lent) = readiness.lent() else {
            return Ok(Ready::default()); // not reached: lent just now
        };
        let polled = poll_fn(|cx| match lent.poll_read_ready(cx) {
            Poll::Ready(result) => Poll::Ready(Some(result)),
            Poll::Pending => match timer.as_mut().as_pin_mut().map(|timer| timer.poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(None),
                _ => Poll::Pending,
            },
        })
        .await;
        let mut guard = match polled {
            None => return Ok(Ready::default()), // the time to wake up came
            Some(Ok(guard)) => guard,
            Some(Err(_)) if !made_here => {
                readiness.reclaim();
                continue;
            }
            Some(Err(e)) => {
                return Err(Error::spawn(
                    "wait for the child process (tokio's runtime is shutting down)",
                    e,
                ));
            }
        };
        let found = readiness
            .wait(nix::poll::PollTimeout::ZERO)
            .map_err(|e| Error::spawn("wait for the worker", std::io::Error::from(e)))?;
        if found.any() {
            return Ok(found.into());
        }
        guard.clear_ready();
    }
}

fn register<'a, 'o: 'a>(
    pidfd: BorrowedFd<'a>,
    channel: Option<BorrowedFd<'a>>,
    to_send: Option<BorrowedFd<'a>>,
    outputs: impl Iterator<Item = BorrowedFd<'o>>,
) -> Result<Registered<'a, Side>, Error> {
    let mut registered: Registered<'a, Side> = SmallVec::new();
    registered.push(lend(pidfd, Side::Exit)?);
    if let Some(channel) = channel {
        registered.push(lend(channel, Side::Readable)?);
    }
    if let Some(to_send) = to_send {
        registered.push(lend(to_send, Side::Writable)?);
    }
    for output in outputs {
        registered.push(lend(output, Side::Output)?);
    }
    Ok(registered)
}
