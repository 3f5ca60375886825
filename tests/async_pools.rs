//! Awaited pools (feature `tokio`): `#[bombsquad(pool = N)] async fn` and
//! `Worker::call_async`. Waiting for a worker and for its answer leaves the
//! executor free; every outcome is the blocking call's; a future dropped
//! mid-call kills and reaps its worker, and the next call gets its own
//! answer from a fresh one. The pool guard checks every test for leaked
//! descriptors and zombies.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bombsquad::{Error, PanicMode, Task, Worker, WorkerOptions, bombsquad};
use common::awaiting::{assert_gone_soon, current_thread, multi_thread, nonzero, pid_in};
use common::pool_guard::guard_after;
use serde::{Deserialize, Serialize};

fn null_strlen() -> usize {
    // SAFETY: not safe at all: a real segfault in C, which is the point.
    unsafe { libc::strlen(std::ptr::null()) }
}

/// A test's turn: its runtime, made once no other test runs (the pool
/// guard counts the whole process's descriptors), and the guard, whose
/// snapshot is taken after `warm_up` and checked before the runtime goes.
struct Turn {
    runtime: tokio::runtime::Runtime,
    guard: Option<common::pool_guard::Guard>,
    _turn: MutexGuard<'static, ()>,
}

fn guarded(
    runtime: fn() -> tokio::runtime::Runtime,
    warm_up: impl FnOnce(&tokio::runtime::Runtime),
) -> Turn {
    static TURN: Mutex<()> = Mutex::new(());
    let turn = TURN.lock().unwrap_or_else(PoisonError::into_inner);
    let mut made = None;
    let guard = guard_after(|| warm_up(made.insert(runtime())));
    Turn {
        runtime: made.expect("made in the warm-up"),
        guard: Some(guard),
        _turn: turn,
    }
}

impl std::ops::Deref for Turn {
    type Target = tokio::runtime::Runtime;

    fn deref(&self) -> &Self::Target {
        &self.runtime
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        drop(self.guard.take()); // checks, while the runtime lives
    }
}

/// Counts 100 ms ticks while `calls` run on the same current-thread runtime.
async fn ticks_while<F: std::future::Future>(calls: F) -> (F::Output, usize) {
    let ticks = Arc::new(AtomicUsize::new(0));
    let ticker = {
        let ticks = ticks.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_millis(100));
            loop {
                interval.tick().await;
                ticks.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    // The ticker's first tick is at once: let it pass.
    tokio::task::yield_now().await;
    let before = ticks.load(Ordering::SeqCst);
    let output = calls.await;
    let during = ticks.load(Ordering::SeqCst) - before;
    ticker.abort();
    (output, during)
}

#[bombsquad(pool = 2)]
async fn pooled_nap(millis: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(millis)).await;
    millis
}

/// Doubles `x` after `nap` ms.
#[bombsquad(pool = 4)]
async fn pooled_double(x: u64, nap: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(nap)).await;
    2 * x
}

#[bombsquad(pool = 1)]
async fn pooled_panics(message: String) -> u32 {
    panic!("{message}")
}

#[bombsquad(pool = 1, panic = "error")]
async fn pooled_panics_as_error() -> u32 {
    panic!("boom as error")
}

/// Crashes as asked, or answers its pid; the same pool throughout, so a
/// crashed worker's replacement is seen.
#[bombsquad(pool = 1)]
async fn pooled_crashes(how: String) -> u32 {
    match how.as_str() {
        "segfault" => u32::try_from(null_strlen()).unwrap(),
        "abort" => std::process::abort(),
        _ => std::process::id(),
    }
}

/// The blocking twin of `pooled_crashes`, for the errors to compare with.
#[bombsquad(pool = 1)]
fn blocking_crashes(how: String) -> u32 {
    match how.as_str() {
        "segfault" => u32::try_from(null_strlen()).unwrap(),
        "abort" => std::process::abort(),
        _ => std::process::id(),
    }
}

/// With a path: writes its pid there and sleeps for an hour. Without: its
/// pid and `value`.
#[bombsquad(pool = 1)]
async fn pooled_hangs(path: Option<String>, value: u64) -> (u32, u64) {
    if let Some(path) = path {
        std::fs::write(&path, std::process::id().to_string()).unwrap();
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    (std::process::id(), value)
}

#[bombsquad(pool = 1, timeout = "300ms")]
async fn pooled_times_out(millis: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(millis)).await;
    millis
}

/// A checksum of `bytes`, and their length.
#[bombsquad(pool = 1)]
async fn pooled_sums(bytes: Vec<u8>) -> (u64, usize) {
    (bytes.iter().map(|&b| u64::from(b)).sum(), bytes.len())
}

#[bombsquad(pool = 1)]
async fn pooled_reports(steps: u32, progress: bombsquad::Progress<u32>) -> u32 {
    for step in 0..steps {
        progress.send(step);
    }
    steps
}

#[test]
fn a_pool_awaited_from_many_tasks_never_blocks_a_current_thread_executor() {
    let runtime = guarded(current_thread, |runtime| {
        runtime.block_on(async {
            let (a, b) = tokio::join!(pooled_nap(1), pooled_nap(1));
            (a.unwrap(), b.unwrap())
        });
    });
    let (results, ticks) = runtime.block_on(ticks_while(async {
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..8 {
            calls.spawn(pooled_nap(200));
        }
        calls.join_all().await
    }));
    assert_eq!(
        results.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
        [200; 8]
    );
    // Eight 200 ms calls on two workers take at least 800 ms: a free
    // executor ticks about 8 times, a blocked one at most once or twice.
    assert!(
        ticks >= 5,
        "the ticker ticked {ticks} times while eight 200 ms calls ran on two workers"
    );
}

#[test]
fn fifty_concurrent_pooled_calls_on_a_multi_thread_runtime_each_get_their_own_answer() {
    let runtime = guarded(multi_thread, |runtime| {
        // Four calls at once, each long enough to start a worker of its own.
        let warm = runtime.block_on(async {
            tokio::join!(
                pooled_double(1, 300),
                pooled_double(2, 300),
                pooled_double(3, 300),
                pooled_double(4, 300)
            )
        });
        assert_eq!(
            [
                warm.0.unwrap(),
                warm.1.unwrap(),
                warm.2.unwrap(),
                warm.3.unwrap()
            ],
            [2, 4, 6, 8]
        );
    });
    let results = runtime.block_on(async {
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..60u64 {
            calls.spawn(async move { (i, pooled_double(i, i % 3).await) });
        }
        calls.join_all().await
    });
    assert_eq!(results.len(), 60);
    for (i, result) in results {
        assert_eq!(result.unwrap(), 2 * i);
    }
}

#[test]
fn a_panic_in_a_pooled_async_fn_is_re_raised_when_polled_to_completion() {
    let runtime = guarded(current_thread, |runtime| {
        // Makes the pool and its worker, which a panic does not end.
        let call = bombsquad::Isolate::new()
            .panic_mode(PanicMode::Error)
            .scope(|| pooled_panics("warm".to_owned()));
        assert!(matches!(
            runtime.block_on(call),
            Err(Error::Panicked { .. })
        ));
    });
    let call = pooled_panics("boom 7".to_owned());
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runtime.block_on(call)))
        .expect_err("the panic is re-raised");
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied());
    assert_eq!(message, Some("boom 7"));
}

/// Ticks counted by a task that `left_behind(true)` spawns and leaves
/// running; it lives in the worker process.
static LEFT_BEHIND_TICKS: AtomicUsize = AtomicUsize::new(0);

/// With `spawn`: spawns a task that counts a tick every millisecond, and
/// returns at once, leaving it behind. Without: its pid, and the ticks
/// counted before and after a 100 ms sleep.
#[bombsquad(pool = 1)]
async fn left_behind(spawn: bool) -> (u32, usize, usize) {
    if spawn {
        tokio::spawn(async {
            loop {
                LEFT_BEHIND_TICKS.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        return (std::process::id(), 0, 0);
    }
    let before = LEFT_BEHIND_TICKS.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after = LEFT_BEHIND_TICKS.load(Ordering::SeqCst);
    (std::process::id(), before, after)
}

#[test]
fn a_task_one_call_left_behind_never_runs_during_a_later_call_on_the_same_worker() {
    let runtime = guarded(current_thread, |runtime| {
        runtime.block_on(left_behind(false)).unwrap();
    });
    let (spawner, _, _) = runtime.block_on(left_behind(true)).unwrap();
    let (pid, before, after) = runtime.block_on(left_behind(false)).unwrap();
    assert_eq!(pid, spawner, "the same warm worker served both calls");
    // Each call's body runs on a runtime of its own: the previous call's
    // task is never polled again, so it counts nothing while this one sleeps.
    assert_eq!(
        after, before,
        "the left-behind task ran during a later call"
    );
}

/// Whether the worker runs the body in a tokio runtime: a body with
/// nothing to wait for gets none. (A function of its own, so that the
/// body does not name tokio.)
#[bombsquad(pool = 1)]
async fn pooled_has_a_runtime_without_waiting() -> bool {
    in_a_runtime()
}

fn in_a_runtime() -> bool {
    tokio::runtime::Handle::try_current().is_ok()
}

#[test]
fn a_pooled_body_with_nothing_to_wait_for_runs_without_a_runtime() {
    let runtime = guarded(current_thread, |runtime| {
        runtime
            .block_on(pooled_has_a_runtime_without_waiting())
            .unwrap();
    });
    assert!(
        !runtime
            .block_on(pooled_has_a_runtime_without_waiting())
            .unwrap()
    );
}

#[test]
fn a_panic_in_error_mode_returns_the_message_and_the_worker_serves_on() {
    let runtime = guarded(current_thread, |runtime| {
        drop(runtime.block_on(pooled_panics_as_error()))
    });
    match runtime.block_on(pooled_panics_as_error()) {
        Err(Error::Panicked {
            message, function, ..
        }) => {
            assert_eq!(message, "boom as error");
            assert_eq!(function.as_deref(), Some("pooled_panics_as_error"));
        }
        other => panic!("expected Panicked, got {other:?}"),
    }
}

#[test]
fn a_crashed_worker_gives_the_blocking_calls_error_and_is_replaced() {
    let mut first = 0;
    let runtime = guarded(current_thread, |runtime| {
        first = runtime.block_on(pooled_crashes(String::new())).unwrap();
        blocking_crashes(String::new()).unwrap();
    });
    for how in ["segfault", "abort"] {
        let awaited = nonzero(runtime.block_on(pooled_crashes(how.to_owned())));
        let blocking = nonzero(blocking_crashes(how.to_owned()));
        let signal = if how == "segfault" {
            libc::SIGSEGV
        } else {
            libc::SIGABRT
        };
        assert_eq!(awaited.signal(), Some(signal), "{awaited}");
        assert_eq!(awaited.exitcode(), -signal);
        assert_eq!(awaited.function(), Some("pooled_crashes"));
        assert_eq!(blocking.function(), Some("blocking_crashes"));
        assert_eq!(
            (awaited.signal(), awaited.code(), awaited.fault_address()),
            (blocking.signal(), blocking.code(), blocking.fault_address()),
            "{awaited} / {blocking}"
        );
        assert!(!common::process_exists(awaited.pid()), "reaped");
    }
    assert_eq!(
        nonzero(runtime.block_on(pooled_crashes("segfault".to_owned()))).fault_address(),
        Some(0)
    );
    let fresh = runtime.block_on(pooled_crashes(String::new())).unwrap();
    assert_ne!(fresh, first, "a fresh worker took the next call");
    blocking_crashes(String::new()).unwrap(); // as many workers as before
}

#[test]
fn a_pooled_timeout_kills_the_worker_and_the_next_call_is_served() {
    let runtime = guarded(current_thread, |runtime| {
        runtime.block_on(pooled_times_out(1)).unwrap();
    });
    match runtime.block_on(pooled_times_out(60_000)) {
        Err(Error::Timeout { after, pid, .. }) => {
            assert_eq!(after, Duration::from_millis(300));
            assert!(!common::process_exists(pid), "killed and reaped");
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert_eq!(runtime.block_on(pooled_times_out(2)).unwrap(), 2);
}

#[test]
fn a_future_dropped_mid_call_kills_and_reaps_its_worker_and_the_next_call_gets_its_own_answer() {
    let runtime = guarded(current_thread, |runtime| {
        runtime.block_on(pooled_hangs(None, 0)).unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3u64 {
        let path = dir.path().join(format!("pid{round}"));
        let pid = runtime.block_on(async {
            let call = tokio::spawn(pooled_hangs(Some(path.display().to_string()), round));
            let pid = pid_in(&path).await;
            call.abort();
            assert!(call.await.unwrap_err().is_cancelled());
            pid
        });
        assert_gone_soon(pid);
        let (fresh, value) = runtime.block_on(pooled_hangs(None, 100 + round)).unwrap();
        assert_eq!(value, 100 + round, "its own answer, not the dropped call's");
        assert_ne!(fresh, pid, "a fresh worker");
    }
    // tokio's own timeout drops the future the same way.
    let path = dir.path().join("pid-timeout");
    let call = pooled_hangs(Some(path.display().to_string()), 1);
    let outcome =
        runtime.block_on(async { tokio::time::timeout(Duration::from_millis(500), call).await });
    assert!(outcome.is_err(), "tokio's timeout elapsed");
    assert_gone_soon(runtime.block_on(pid_in(&path)));
    assert_eq!(runtime.block_on(pooled_hangs(None, 9)).unwrap().1, 9);
}

#[test]
fn a_task_waiting_for_a_worker_can_be_dropped_and_the_others_are_served() {
    let runtime = guarded(current_thread, |runtime| {
        runtime.block_on(pooled_hangs(None, 0)).unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pid");
    runtime.block_on(async {
        // The pool's one worker hangs; two more calls wait for it.
        let hanging = tokio::spawn(pooled_hangs(Some(path.display().to_string()), 0));
        let pid = pid_in(&path).await;
        let dropped = tokio::spawn(pooled_hangs(None, 1));
        let served = tokio::spawn(pooled_hangs(None, 2));
        tokio::time::sleep(Duration::from_millis(50)).await;
        dropped.abort();
        hanging.abort();
        assert!(dropped.await.unwrap_err().is_cancelled());
        assert!(hanging.await.unwrap_err().is_cancelled());
        let (fresh, value) = served.await.unwrap().unwrap();
        assert_eq!(value, 2);
        assert_ne!(fresh, pid);
    });
}

#[test]
fn a_pooled_call_polled_after_its_runtime_is_gone_fails_and_its_worker_is_reaped() {
    let runtime = guarded(current_thread, |runtime| {
        runtime.block_on(pooled_hangs(None, 0)).unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pid");
    let first = current_thread();
    let mut call = Box::pin(pooled_hangs(Some(path.display().to_string()), 1));
    let pid = first.block_on(async {
        tokio::select! {
            done = &mut call => panic!("the call ended early: {done:?}"),
            pid = pid_in(&path) => pid,
        }
    });
    drop(first);
    match runtime.block_on(call) {
        Err(Error::Spawn { what, .. }) => assert_eq!(
            what,
            "wait for the child process (tokio's runtime is shutting down)"
        ),
        other => panic!("expected a spawn error, got {other:?}"),
    }
    assert_gone_soon(pid);
    let (fresh, value) = runtime.block_on(pooled_hangs(None, 3)).unwrap();
    assert_eq!(value, 3);
    assert_ne!(fresh, pid);
}

#[test]
fn a_request_larger_than_the_socket_buffer_is_sent_while_awaited() {
    let runtime = guarded(current_thread, |runtime| {
        runtime.block_on(pooled_sums(vec![1])).unwrap();
    });
    // Far more than a socket takes at once: the rest is sent as the
    // channel becomes writable.
    let bytes: Vec<u8> = (0..24 << 20).map(|i: u32| (i % 251) as u8).collect();
    let expected: u64 = bytes.iter().map(|&b| u64::from(b)).sum();
    // A pool of one: the second call waits for the first's worker.
    let sums = runtime
        .block_on(async { tokio::join!(pooled_sums(bytes.clone()), pooled_sums(bytes.clone())) });
    assert_eq!(sums.0.unwrap(), (expected, 24 << 20));
    assert_eq!(sums.1.unwrap(), (expected, 24 << 20));
}

#[test]
fn progress_messages_of_a_pooled_async_fn_arrive_in_order() {
    let runtime = guarded(multi_thread, |runtime| {
        let progress = bombsquad::Progress::new(|_: u32| {});
        runtime.block_on(pooled_reports(1, progress)).unwrap();
    });
    let seen = Arc::new(Mutex::new(Vec::new()));
    let progress = {
        let seen = seen.clone();
        bombsquad::Progress::new(move |step: u32| seen.lock().unwrap().push(step))
    };
    let call = pooled_reports(5, progress);
    // On another thread's task: the future is Send + 'static.
    let result = runtime.block_on(async { tokio::spawn(call).await.unwrap() });
    assert_eq!(result.unwrap(), 5);
    assert_eq!(*seen.lock().unwrap(), [0, 1, 2, 3, 4]);
}

#[test]
fn a_pooled_call_polled_outside_a_tokio_runtime_is_an_error_and_asks_no_worker() {
    let _turn = guarded(current_thread, |_| ());
    let mut call = std::pin::pin!(pooled_double(1, 0));
    match call.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Err(Error::Spawn { what, .. })) => assert_eq!(
            what,
            "wait for the child process: an async isolated call must be awaited inside a \
             tokio runtime"
        ),
        Poll::Ready(other) => panic!("expected a spawn error, got {other:?}"),
        Poll::Pending => panic!("expected a spawn error, got Pending"),
    }
}

// ---------------------------------------------------------------------------
// Worker::call_async

#[derive(Debug, Serialize, Deserialize)]
enum Step {
    Add(u64),
    Pid,
    Segfault,
    Abort,
    Panic(String),
    /// Writes the pid to the path, then sleeps for an hour.
    Hang(String),
    /// Sleeps that many milliseconds, then answers the count.
    Nap(u64),
}

#[derive(Default)]
struct Counter(u64);

#[bombsquad]
impl Task for Counter {
    type Input = Step;
    type Output = u64;
    type Error = String;

    fn run(&mut self, step: Step) -> Result<u64, String> {
        match step {
            Step::Add(n) => {
                self.0 += n;
                Ok(self.0)
            }
            Step::Pid => Ok(u64::from(std::process::id())),
            Step::Segfault => Ok(null_strlen() as u64),
            Step::Abort => std::process::abort(),
            Step::Panic(message) => panic!("{message}"),
            Step::Hang(path) => {
                std::fs::write(&path, std::process::id().to_string()).unwrap();
                std::thread::sleep(Duration::from_secs(3600));
                Ok(0)
            }
            Step::Nap(millis) => {
                std::thread::sleep(Duration::from_millis(millis));
                Ok(self.0)
            }
        }
    }
}

fn pid_of(worker: &Worker<Counter>, runtime: &tokio::runtime::Runtime) -> u32 {
    let pid = runtime
        .block_on(worker.call_async(Step::Pid))
        .unwrap()
        .unwrap();
    u32::try_from(pid).unwrap()
}

#[test]
fn worker_call_async_keeps_state_and_gives_the_blocking_calls_outcomes() {
    let runtime = guarded(current_thread, |_| ());
    let options =
        WorkerOptions::new().isolate(bombsquad::Isolate::new().panic_mode(PanicMode::Error));
    let worker = Worker::<Counter>::spawn_with(options).unwrap();
    assert_eq!(
        runtime.block_on(worker.call_async(Step::Add(2))).unwrap(),
        Ok(2)
    );
    assert_eq!(
        runtime.block_on(worker.call_async(Step::Add(3))).unwrap(),
        Ok(5)
    );
    let first = pid_of(&worker, &runtime);
    for (step, signal) in [
        (Step::Segfault, libc::SIGSEGV),
        (Step::Abort, libc::SIGABRT),
    ] {
        let crashed = nonzero(runtime.block_on(worker.call_async(step)));
        assert_eq!(crashed.signal(), Some(signal), "{crashed}");
        assert_eq!(crashed.exitcode(), -signal);
        assert!(!common::process_exists(crashed.pid()), "reaped");
    }
    let blocking = nonzero(worker.call(Step::Segfault));
    let awaited = nonzero(runtime.block_on(worker.call_async(Step::Segfault)));
    assert_eq!(
        (awaited.signal(), awaited.code(), awaited.fault_address()),
        (blocking.signal(), blocking.code(), blocking.fault_address())
    );
    match runtime.block_on(worker.call_async(Step::Panic("task boom".to_owned()))) {
        Err(Error::Panicked { message, .. }) => assert_eq!(message, "task boom"),
        other => panic!("expected Panicked, got {other:?}"),
    }
    // A fresh worker starts from the task's default state.
    assert_ne!(pid_of(&worker, &runtime), first);
    assert_eq!(
        runtime.block_on(worker.call_async(Step::Add(1))).unwrap(),
        Ok(1)
    );
    assert_eq!(worker.restarts(), 4);
    drop(worker);
}

#[test]
fn worker_call_async_dropped_mid_call_kills_and_reaps_the_worker_and_the_next_call_gets_its_own_answer()
 {
    let runtime = guarded(current_thread, |_| ());
    let worker = Worker::<Counter>::spawn().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pid");
    let pid = runtime.block_on(async {
        let hang = Step::Hang(path.display().to_string());
        tokio::select! {
            done = worker.call_async(hang) => panic!("the call ended early: {done:?}"),
            pid = pid_in(&path) => pid,
        }
    });
    // The select dropped the call's future.
    assert_gone_soon(pid);
    assert_eq!(
        runtime.block_on(worker.call_async(Step::Add(7))).unwrap(),
        Ok(7)
    );
    assert_ne!(pid_of(&worker, &runtime), pid);
    drop(worker);
}

/// A worker stays registered with the reactor of the runtime that awaited
/// it last; a call from another runtime moves the registration, even while
/// that runtime lives and is not driven (it would never wake the call).
#[test]
fn a_worker_awaited_on_one_runtime_is_served_on_another_while_the_first_lives_idle() {
    let runtime = guarded(current_thread, |_| ());
    let worker = Worker::<Counter>::spawn().unwrap();
    let idle = current_thread();
    assert_eq!(
        idle.block_on(worker.call_async(Step::Add(1))).unwrap(),
        Ok(1)
    );
    let served = runtime.block_on(async {
        // The answer comes late, so only the reactor can wake the call.
        tokio::time::timeout(Duration::from_secs(10), worker.call_async(Step::Nap(300))).await
    });
    assert_eq!(
        served
            .expect("not woken: still registered with the idle runtime")
            .unwrap(),
        Ok(1)
    );
    assert_eq!(
        idle.block_on(worker.call_async(Step::Add(3))).unwrap(),
        Ok(4)
    );
    assert_eq!(worker.restarts(), 0);
    drop(worker);
}

/// A dropped runtime's descriptors stay open only while a worker is still
/// registered with its reactor: the next call, awaited on another runtime
/// or blocking, takes the worker back and they close.
#[test]
fn a_dropped_runtimes_descriptors_close_at_the_workers_next_call_awaited_or_blocking() {
    let runtime = guarded(current_thread, |_| ());
    let worker = Worker::<Counter>::spawn().unwrap();
    assert_eq!(worker.call(Step::Add(1)).unwrap(), Ok(1));
    let before = common::open_fds();
    let first = current_thread();
    assert_eq!(
        first.block_on(worker.call_async(Step::Add(1))).unwrap(),
        Ok(2)
    );
    drop(first);
    assert_eq!(
        runtime.block_on(worker.call_async(Step::Add(1))).unwrap(),
        Ok(3)
    );
    assert_eq!(common::open_fds(), before, "awaited on another runtime");
    let second = current_thread();
    assert_eq!(
        second.block_on(worker.call_async(Step::Add(1))).unwrap(),
        Ok(4)
    );
    drop(second);
    assert_eq!(worker.call(Step::Add(1)).unwrap(), Ok(5));
    assert_eq!(common::open_fds(), before, "called without await");
    assert_eq!(worker.restarts(), 0);
    drop(worker);
}
