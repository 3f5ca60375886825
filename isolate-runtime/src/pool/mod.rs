//! Pools of warm workers: processes that stay up and serve call after call,
//! replaced when one dies, so a crash fails only the call it was running
//! (docs/FAULTS.md J1-J6).
//!
//! The calling thread runs its call itself on a worker it checks out, so a
//! warm call costs one round trip over two pipes; only starting a worker goes
//! through the keeper thread (`parent/keeper.rs`, docs/FAULTS.md F3). An awaited
//! call (`awaited.rs`, feature `tokio`) takes the same steps with each wait
//! awaited: for a worker (a waker kept in the pool's state), for its
//! `Hello`, and for its answer (the exchange of `process.rs` driven on
//! tokio's reactor).

#[cfg(feature = "tokio")]
mod awaited;
mod options;
mod process;
mod readiness;
mod statics;
mod task;

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::task::Waker;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use serde::Serialize;

use crate::child::progress::{self, ProgressSink};
use crate::options::isolate::{Isolate, StartMethod};
use crate::parent::backend::Reply;
use crate::parent::outcome;
use crate::sys;
use crate::vocabulary::error::{CodecStage, Error};
use crate::vocabulary::panic_report::message_of;
use crate::wire::codec::Codec;
use crate::wire::{self, CallId, FrameKind, Frames};

#[cfg(feature = "tokio")]
pub use awaited::{PooledCall, prepare_pooled, run_pooled, run_pooled_with_progress};
pub use options::WorkerOptions;
pub(crate) use process::Launch;
use process::{CallEnd, WorkerProcess};
pub use statics::{StaticPool, call_pooled, shutdown_pools};
pub use task::{RegisteredTask, RemoteWorker, Task, Worker, init_task, serve_task};

/// How many start failures in a row, within [`FAILURE_WINDOW`], break a pool.
const MAX_START_FAILURES: u32 = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(10);
/// The first pause after a failed start; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The engine behind [`Worker`], [`RemoteWorker`] and `#[bombsquad(pool = N)]`.
#[derive(Debug)]
pub(crate) struct Pool {
    launch: Launch,
    options: WorkerOptions,
    /// The process that made the pool; no other may use it (docs/FAULTS.md F9).
    owner: u32,
    depth: u32,
    state: Mutex<State>,
    /// Signalled when a worker is checked in, lost, or the pool closes.
    changed: Condvar,
    restarts: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    idle: Vec<WorkerProcess>,
    /// Workers that exist or are starting: idle, busy or on their way.
    live: usize,
    /// Kill handles (pidfds) of every live worker, busy ones included.
    members: Vec<(u32, OwnedFd)>,
    /// Callers waiting in `checkout` for a worker: a check-in wakes one
    /// only when there is one (a futex syscall saved on every warm call).
    waiting: usize,
    /// Async callers waiting for a worker (`awaited.rs`), by their id:
    /// all are woken on any change, and look again.
    wakers: Wakers,
    closed: bool,
    failures: Failures,
}

/// Async callers waiting for a worker, each with its id.
type Wakers = Vec<(u64, Waker)>;

/// Consecutive start failures (docs/FAULTS.md J2).
#[derive(Debug, Default)]
struct Failures {
    count: u32,
    first: Option<Instant>,
    /// Set once the pool is broken: the error every call gets until `until`.
    broken: Option<(Instant, StartupFailure)>,
}

/// The last start failure of a broken pool, kept to make a fresh error for
/// each call that finds the pool broken.
#[derive(Debug, Clone)]
struct StartupFailure {
    attempts: u32,
    exitcode: Option<i32>,
    reason: String,
    stderr_tail: Vec<u8>,
}

impl StartupFailure {
    fn error(&self) -> Error {
        Error::WorkerStartup {
            attempts: self.attempts,
            exitcode: self.exitcode,
            reason: self.reason.clone(),
            stderr_tail: self.stderr_tail.clone(),
        }
    }
}

impl Pool {
    pub(crate) fn new(launch: Launch, options: WorkerOptions) -> Result<Self, Error> {
        if let Some(method) = options
            .isolate
            .start_method
            .filter(|&m| m != StartMethod::Spawn)
        {
            return Err(Error::InvalidOptions {
                message: format!(
                    "a pool's workers are always spawned, but its Isolate asks for \
                     start_method {}; leave start_method out of WorkerOptions::isolate",
                    method.name()
                ),
            });
        }
        let depth = crate::child::next_depth()?;
        Ok(Self {
            launch,
            options,
            owner: sys::current_pid(),
            depth,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            restarts: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts every worker (for an eager `spawn`).
    pub(crate) fn fill(&self) -> Result<(), Error> {
        let mut started = Vec::with_capacity(self.options.workers);
        let result = (0..self.options.workers).try_for_each(|_| {
            started.push(self.checkout()?);
            Ok(())
        });
        for worker in started {
            self.checkin(worker);
        }
        result
    }

    /// Workers replaced after they died, timed out or were lost.
    pub(crate) fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// The pids of the live workers.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.lock().members.iter().map(|(pid, _)| *pid).collect()
    }

    /// Runs one call with `args`, decoding the answer with `codec`.
    #[track_caller]
    pub(crate) fn call<A: Serialize + ?Sized, R>(
        &self,
        args: &A,
        codec: Codec<R>,
        progress: Option<&mut dyn ProgressSink>,
    ) -> Result<R, Error> {
        self.call_as(&self.options.isolate, args, codec, progress)
    }

    /// [`call`](Self::call), with `isolate`'s per-call options (timeout,
    /// panic mode, name, callbacks) in place of the pool's.
    #[track_caller]
    pub(crate) fn call_as<A: Serialize + ?Sized, R>(
        &self,
        isolate: &Isolate,
        args: &A,
        codec: Codec<R>,
        mut progress: Option<&mut dyn ProgressSink>,
    ) -> Result<R, Error> {
        self.check_owner()?;
        let call_id = wire::next_call_id();
        let request = encode_request(args, call_id)?;
        let limit = isolate.result_limit();
        let mut crashes = 0;
        loop {
            let worker = self.checkout()?;
            let pid = worker.pid();
            let deadline = isolate.deadline();
            // A panicking progress callback unwinds through here: the worker
            // is killed and reaped as it drops, and its slot is given back.
            let slot = Slot { pool: self, pid };
            let mut deliver = |payload: &[u8]| match progress.as_deref_mut() {
                Some(sink) => progress::deliver(sink, payload),
                None => Ok(()),
            };
            let (worker, end) = worker.call(&request, call_id, limit, deadline, &mut deliver);
            std::mem::forget(slot);
            let may_retry = crashes < self.options.retries;
            match self.settle(worker, end, pid, call_id, isolate, codec, may_retry) {
                Settled::Done(result) => return result,
                Settled::Again => {}
                Settled::Retry => {
                    std::thread::sleep(backoff(crashes));
                    crashes += 1;
                }
            }
        }
    }

    /// What a call on the worker `pid` comes to, once it `end`ed: its
    /// result, or another try on another worker (a crash is retried only
    /// if it `may_retry`). The worker is checked in, or forgotten when lost.
    #[allow(clippy::too_many_arguments)]
    #[track_caller]
    fn settle<R>(
        &self,
        worker: Option<WorkerProcess>,
        end: CallEnd,
        pid: u32,
        call_id: CallId,
        isolate: &Isolate,
        codec: Codec<R>,
        may_retry: bool,
    ) -> Settled<R> {
        let limit = isolate.result_limit();
        match end {
            CallEnd::Answered { reply } => {
                let mut worker = worker.expect("an answering worker lives on");
                let result = decode_answer(&mut worker, reply, call_id, limit, codec);
                if matches!(
                    result,
                    Err(Error::Protocol { .. } | Error::ResultTooLarge { .. })
                ) {
                    // A worker that answers nonsense is not trusted again.
                    drop(worker);
                    self.lost(pid);
                } else {
                    self.checkin(worker);
                }
                Settled::Done(outcome::deliver(result, isolate, pid, 0))
            }
            // Nothing ran: a fresh worker gets the request (docs/FAULTS.md F11, J3).
            CallEnd::Undelivered => {
                self.lost(pid);
                Settled::Again
            }
            CallEnd::Lost { exit, oom, reply } => {
                self.lost(pid);
                if self.lock().closed {
                    return Settled::Done(Err(Error::PoolClosed));
                }
                let exitcode = exit.termination.map_or(0, exitcode_of);
                let read = || Ok(Reply::checked(reply, call_id));
                let result = outcome::judge(*exit, read, codec, isolate, &oom);
                if may_retry && matches!(result, Err(Error::NonzeroExitcode(_))) {
                    return Settled::Retry;
                }
                Settled::Done(outcome::deliver(result, isolate, pid, exitcode))
            }
        }
    }

    fn check_owner(&self) -> Result<(), Error> {
        if sys::current_pid() == self.owner {
            Ok(())
        } else {
            Err(Error::PoolInForkedChild { owner: self.owner })
        }
    }

    /// An idle worker, a new one if the pool has room, or the next one
    /// checked in.
    fn checkout(&self) -> Result<WorkerProcess, Error> {
        let mut state = self.lock();
        loop {
            match self.find(&mut state)? {
                Some(Found::Idle(worker)) => return Ok(worker),
                Some(Found::Room) => {
                    drop(state);
                    return self.start_worker();
                }
                None => {}
            }
            state.waiting += 1;
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.waiting -= 1;
        }
    }

    /// An idle worker, or room for a new one (counted in `live` at once);
    /// `None` when every worker is busy.
    fn find(&self, state: &mut State) -> Result<Option<Found>, Error> {
        if state.closed {
            return Err(Error::PoolClosed);
        }
        if let Some((until, failure)) = &state.failures.broken {
            if Instant::now() < *until {
                return Err(failure.error());
            }
            state.failures = Failures::default(); // cooled down: try again
        }
        if let Some(worker) = state.idle.pop() {
            return Ok(Some(Found::Idle(worker)));
        }
        if state.live < self.options.workers {
            state.live += 1;
            return Ok(Some(Found::Room));
        }
        Ok(None)
    }

    /// Starts a worker for a slot already counted in `live`, retrying with
    /// backoff; five failures in a row within 10 s break the pool.
    fn start_worker(&self) -> Result<WorkerProcess, Error> {
        loop {
            match WorkerProcess::start(&self.launch, &self.options.isolate, self.depth) {
                Ok(worker) => return Ok(self.started(worker)),
                Err(error) => std::thread::sleep(self.start_failed(error)?),
            }
        }
    }

    /// Counts a worker that started (and said hello) as a member.
    fn started(&self, worker: WorkerProcess) -> WorkerProcess {
        let mut state = self.lock();
        state.failures = Failures::default();
        if let Some(handle) = worker.kill_handle() {
            state.members.push((worker.pid(), handle));
        }
        worker
    }

    /// Counts a failed start: the pause before the next try, or the error
    /// that ends the tries (the slot is given back then).
    fn start_failed(&self, error: Error) -> Result<Duration, Error> {
        let mut state = self.lock();
        let retry = is_retriable(&error) && !state.closed;
        let failures = &mut state.failures;
        let now = Instant::now();
        if failures
            .first
            .is_none_or(|first| now - first > FAILURE_WINDOW)
        {
            *failures = Failures {
                first: Some(now),
                ..Failures::default()
            };
        }
        failures.count += 1;
        let count = failures.count;
        if retry && count < MAX_START_FAILURES {
            return Ok(backoff(count - 1));
        }
        state.live -= 1;
        let error = if retry {
            let failure = startup_failure(count, &error);
            let error = failure.error();
            state.failures.broken = Some((now + FAILURE_WINDOW, failure));
            error
        } else {
            error
        };
        let wakers = self.notify_all(&mut state);
        drop(state);
        wake(wakers);
        Err(error)
    }

    /// Returns a worker after a call: idle again, or retired when it has
    /// served its `max_calls` or grown past `max_rss_growth` (docs/FAULTS.md J5).
    fn checkin(&self, mut worker: WorkerProcess) {
        let spent = self
            .options
            .max_calls
            .is_some_and(|max| worker.calls >= max);
        let grown = self.options.max_rss_growth.is_some_and(|growth| {
            let Some(rss) = worker.rss() else {
                return false;
            };
            let baseline = *worker.rss_baseline.get_or_insert(rss);
            rss.saturating_sub(baseline) > growth
        });
        let mut state = self.lock();
        let waiting = state.waiting > 0;
        let wakers = std::mem::take(&mut state.wakers);
        if spent || grown || state.closed {
            let pid = worker.pid();
            state.members.retain(|(member, _)| *member != pid);
            state.live -= 1;
            drop(state);
            worker.retire(self.options.shutdown_grace);
        } else {
            state.idle.push(worker);
            drop(state);
        }
        if waiting {
            self.changed.notify_one();
        }
        wake(wakers);
    }

    /// Forgets a worker that died or was killed (it is already reaped).
    fn lost(&self, pid: u32) {
        crate::vocabulary::diagnostics::worker_lost(pid);
        self.restarts.fetch_add(1, Ordering::Relaxed);
        self.forget(pid);
    }

    /// Gives back the slot of a worker that is gone.
    fn forget(&self, pid: u32) {
        let mut state = self.lock();
        state.members.retain(|(member, _)| *member != pid);
        state.live -= 1;
        let wakers = self.notify_all(&mut state);
        drop(state);
        wake(wakers);
    }

    /// Wakes every caller waiting for a worker; the async ones are woken
    /// by [`wake`] once the lock is dropped.
    fn notify_all(&self, state: &mut State) -> Wakers {
        self.changed.notify_all();
        std::mem::take(&mut state.wakers)
    }

    /// Asks every worker to leave, waits up to `grace` for them, then kills
    /// their process groups. Calls in flight end with [`Error::PoolClosed`];
    /// later calls get it at once. Returns within `grace` plus a little.
    pub(crate) fn shutdown(&self, grace: Duration) {
        let (idle, handles, wakers) = {
            let mut state = self.lock();
            state.closed = true;
            state.live -= state.idle.len();
            let idle = std::mem::take(&mut state.idle);
            let handles: Vec<OwnedFd> = state
                .members
                .drain(..)
                .filter_map(|(_, handle)| handle.try_clone().ok())
                .collect();
            (idle, handles, self.notify_all(&mut state))
        };
        wake(wakers);
        for worker in &idle {
            worker.ask_to_leave();
        }
        wait_for_exit(&handles, Instant::now() + grace);
        for handle in &handles {
            // Busy ones are reaped by their callers once they see them die.
            let _ = sys::pidfd_signal(handle.as_fd(), libc::SIGKILL, true);
            let _ = sys::pidfd_signal(handle.as_fd(), libc::SIGKILL, false);
        }
        drop(idle); // reaps them
    }
}

/// What a caller looking for a worker found.
#[expect(
    clippy::large_enum_variant,
    reason = "moved once per checkout; boxing would allocate on every warm call"
)]
enum Found {
    Idle(WorkerProcess),
    /// Room for one more worker, counted in `live`: the caller starts it.
    Room,
}

/// What a call on a worker came to.
enum Settled<R> {
    Done(Result<R, Error>),
    /// The request never reached the worker: send it to another at once.
    Again,
    /// The worker crashed: send the request to another after a backoff.
    Retry,
}

/// A busy worker's place in the pool, given back if its call unwinds.
struct Slot<'a> {
    pool: &'a Pool,
    pid: u32,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.pool.forget(self.pid);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if !self.lock().closed {
            self.shutdown(self.options.shutdown_grace);
        }
    }
}

/// Wakes async callers waiting for a worker: they look again.
fn wake(wakers: Wakers) {
    for (_, waker) in wakers {
        waker.wake();
    }
}

/// Waits until every process in `pidfds` has exited, or `deadline`.
fn wait_for_exit(pidfds: &[OwnedFd], deadline: Instant) {
    loop {
        let mut fds: Vec<PollFd<'_>> = pidfds
            .iter()
            .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            .collect();
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || poll(&mut fds, PollTimeout::ZERO).unwrap_or(0) == fds.len() as i32 {
            return;
        }
        let _ = poll(&mut fds[..1], PollTimeout::from(10u8));
    }
}

/// A start that may succeed if tried again: not a program that cannot be
/// run at all (ENOENT, EACCES), but a crash, a timeout or EAGAIN.
fn is_retriable(error: &Error) -> bool {
    match error {
        Error::Spawn { source, .. } => source.raw_os_error() == Some(libc::EAGAIN),
        Error::NestingTooDeep { .. } | Error::PoolInForkedChild { .. } => false,
        _ => true,
    }
}

fn startup_failure(attempts: u32, error: &Error) -> StartupFailure {
    let (exitcode, stderr_tail) = match error {
        Error::NonzeroExitcode(exit) => (Some(exit.exitcode()), exit.stderr_tail().to_vec()),
        Error::Timeout { report, .. } => (None, report.stderr_tail().to_vec()),
        _ => (None, Vec::new()),
    };
    StartupFailure {
        attempts,
        exitcode,
        reason: error.to_string(),
        stderr_tail,
    }
}

/// 50 ms, doubling per attempt, at most 2 s.
fn backoff(attempt: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << attempt.min(16))
        .min(MAX_BACKOFF)
}

fn exitcode_of(termination: crate::vocabulary::termination::Termination) -> i32 {
    match termination {
        crate::vocabulary::termination::Termination::Exited(code) => code,
        crate::vocabulary::termination::Termination::Signaled { signal, .. } => -signal,
    }
}

/// The `Request` frame of the call `call_id`, encoded before a worker is
/// taken, so arguments that fail to encode cost nothing.
fn encode_request<A: Serialize + ?Sized>(args: &A, call_id: CallId) -> Result<Vec<u8>, Error> {
    let encoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut frame = Vec::new();
        wire::append_frame(&mut frame, FrameKind::Request, call_id, |out| {
            rmp_serde::encode::write_named(out, args).map_err(|e| e.to_string())
        })?;
        Ok::<_, String>(frame)
    }));
    match encoded {
        Ok(Ok(frame)) => Ok(frame),
        Ok(Err(message)) => Err(Error::codec(CodecStage::EncodeArguments, message)),
        Err(payload) => Err(Error::codec(
            CodecStage::EncodeArguments,
            message_of(payload.as_ref()),
        )),
    }
}

/// The result an answering worker sent: from the arena for a large one
/// (at most `limit` bytes), checked against the checksum the
/// `ArenaReturn` frame carries.
fn decode_answer<R>(
    worker: &mut WorkerProcess,
    reply: Vec<u8>,
    call_id: CallId,
    limit: u64,
    codec: Codec<R>,
) -> Result<R, Error> {
    let pid = worker.pid();
    let protocol = |message: &str| Error::protocol(pid, message);
    let arena = match Frames::checked(&reply).last() {
        Some(Ok(frame)) if frame.kind == FrameKind::ArenaReturn => Some(frame.payload),
        _ => None,
    };
    let Some(payload) = arena else {
        return outcome::judge_frames(pid, Reply::checked(reply, call_id), codec);
    };
    let (len, rest) = payload
        .split_first_chunk::<8>()
        .ok_or_else(|| protocol("a short arena frame"))?;
    let (checksum, head) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| protocol("a short arena frame"))?;
    let tail = worker
        .arena_bytes(u64::from_le_bytes(*len), limit)
        .map_err(|refusal| refusal.into_error(pid))?;
    outcome::decode_parts(pid, head, tail, u32::from_le_bytes(*checksum), codec)
}
