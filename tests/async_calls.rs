//! `#[bombsquad] async fn` (feature `tokio`): every outcome in async form,
//! an executor that keeps running while calls are awaited, and futures
//! dropped before the end, which kill and reap their child.

#![allow(
    clippy::undocumented_unsafe_blocks,
    reason = "crash tests call libc to fault on purpose"
)]

mod common;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bombsquad::{Error, bombsquad};
use common::awaiting::{assert_gone_soon, current_thread, multi_thread, nonzero, pid_in};

/// Leak checks look at the whole process: they run alone (write), the
/// other tests together (read).
static LEAK_CHECK: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    common::watchdog();
    LEAK_CHECK.read().unwrap_or_else(|e| e.into_inner())
}

fn alone() -> RwLockWriteGuard<'static, ()> {
    common::watchdog();
    LEAK_CHECK.write().unwrap_or_else(|e| e.into_inner())
}

/// Whether the child's body runs in a tokio runtime: a function of its
/// own, so that the bodies calling it do not name tokio.
fn in_a_runtime() -> bool {
    tokio::runtime::Handle::try_current().is_ok()
}

macro_rules! outcome_matrix {
    ($module:ident, $start_method:literal, $backend:literal) => {
        mod $module {
            use super::*;

            #[bombsquad(start_method = $start_method, backend = $backend)]
            async fn greets(name: &str, times: usize) -> String {
                // The body awaits: the child runs it on a runtime of its own.
                tokio::time::sleep(Duration::from_millis(1)).await;
                format!("hello {name}").repeat(times)
            }

            #[bombsquad(start_method = $start_method, backend = $backend)]
            async fn panics(n: i32) -> i32 {
                panic!("boom {n}")
            }

            #[bombsquad(start_method = $start_method, backend = $backend, panic = "error")]
            async fn panics_as_error() {
                panic!("boom as error")
            }

            #[bombsquad(start_method = $start_method, backend = $backend)]
            async fn segfaults_in_c() -> usize {
                unsafe { libc::strlen(std::ptr::null()) }
            }

            #[bombsquad(start_method = $start_method, backend = $backend)]
            async fn aborts() {
                std::process::abort()
            }

            #[bombsquad(start_method = $start_method, backend = $backend)]
            async fn exits(code: i32) -> u32 {
                std::process::exit(code)
            }

            #[bombsquad(start_method = $start_method, backend = $backend, timeout = "300ms")]
            async fn sleeps_forever() {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }

            #[bombsquad(start_method = $start_method, backend = $backend)]
            async fn writes_pid_then_sleeps(path: String) {
                std::fs::write(&path, std::process::id().to_string()).unwrap();
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }

            #[bombsquad(start_method = $start_method, backend = $backend)]
            async fn has_a_runtime_without_waiting() -> bool {
                in_a_runtime()
            }

            #[bombsquad(start_method = $start_method, backend = $backend)]
            async fn has_a_runtime_after_waiting() -> bool {
                std::future::ready(()).await;
                in_a_runtime()
            }

            #[bombsquad(start_method = $start_method, backend = $backend)]
            async fn has_a_runtime_naming_tokio() -> bool {
                let _ = tokio::task::yield_now;
                in_a_runtime()
            }

            #[test]
            fn a_body_gets_a_runtime_when_it_may_wait_or_names_tokio() {
                let _guard = shared();
                let runtime = current_thread();
                assert!(!runtime.block_on(has_a_runtime_without_waiting()).unwrap());
                assert!(runtime.block_on(has_a_runtime_after_waiting()).unwrap());
                assert!(runtime.block_on(has_a_runtime_naming_tokio()).unwrap());
            }

            #[test]
            fn a_value_comes_back_with_borrowed_arguments() {
                let _guard = shared();
                let name = String::from("async");
                // The future is 'static: it owns the encoded arguments.
                let future = greets(&name, 2);
                drop(name);
                let value = current_thread().block_on(future).unwrap();
                assert_eq!(value, "hello asynchello async");
            }

            #[test]
            #[should_panic(expected = "boom 7")]
            fn a_child_panic_is_re_raised_when_polled_to_completion() {
                let _guard = shared();
                let _ = current_thread().block_on(panics(7));
            }

            #[test]
            fn panic_error_mode_returns_the_message() {
                let _guard = shared();
                match current_thread().block_on(panics_as_error()) {
                    Err(Error::Panicked {
                        message, function, ..
                    }) => {
                        assert_eq!(message, "boom as error");
                        assert_eq!(function.as_deref(), Some("panics_as_error"));
                    }
                    other => panic!("expected Panicked, got {other:?}"),
                }
            }

            #[test]
            fn a_segfault_in_c_is_an_error_naming_sigsegv() {
                let _guard = shared();
                let e = nonzero(current_thread().block_on(segfaults_in_c()));
                assert_eq!(e.signal(), Some(libc::SIGSEGV), "{e}");
                assert_eq!(e.signal_name(), Some("SIGSEGV"));
                assert!(!common::process_exists(e.pid()), "the child was reaped");
            }

            #[test]
            fn an_abort_is_an_error_naming_sigabrt() {
                let _guard = shared();
                let e = nonzero(current_thread().block_on(aborts()));
                assert_eq!(e.signal(), Some(libc::SIGABRT), "{e}");
                assert_eq!(e.signal_name(), Some("SIGABRT"));
            }

            #[test]
            fn an_exit_code_is_an_error_carrying_it() {
                let _guard = shared();
                let e = nonzero(current_thread().block_on(exits(3)));
                assert_eq!(e.code(), Some(3), "{e}");
                assert_eq!(e.signal(), None);
            }

            #[test]
            fn a_timeout_kills_and_reaps_the_child() {
                let _guard = shared();
                match current_thread().block_on(sleeps_forever()) {
                    Err(Error::Timeout { after, pid, .. }) => {
                        assert_eq!(after, Duration::from_millis(300));
                        assert!(
                            !common::process_exists(pid),
                            "the child was killed and reaped"
                        );
                    }
                    other => panic!("expected Timeout, got {other:?}"),
                }
            }

            #[test]
            fn a_dropped_future_kills_and_reaps_its_child() {
                let _guard = shared();
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("pid");
                let pid = current_thread().block_on(async {
                    let call = tokio::spawn(writes_pid_then_sleeps(path.display().to_string()));
                    let pid = pid_in(&path).await;
                    call.abort();
                    assert!(call.await.unwrap_err().is_cancelled());
                    pid
                });
                assert_gone_soon(pid);
            }

            #[test]
            fn a_future_timed_out_by_tokio_kills_and_reaps_its_child() {
                let _guard = shared();
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("pid");
                let runtime = current_thread();
                let call = writes_pid_then_sleeps(path.display().to_string());
                let outcome = runtime.block_on(async {
                    tokio::time::timeout(Duration::from_millis(300), call).await
                });
                assert!(outcome.is_err(), "tokio's timeout elapsed");
                let pid = runtime.block_on(pid_in(&path));
                assert_gone_soon(pid);
            }

            #[test]
            fn a_runtime_shut_down_under_a_call_kills_and_reaps_its_child() {
                let _guard = shared();
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("pid");
                let runtime = multi_thread();
                runtime.spawn(writes_pid_then_sleeps(path.display().to_string()));
                let pid = runtime.block_on(pid_in(&path));
                runtime.shutdown_timeout(Duration::from_secs(5));
                assert_gone_soon(pid);
            }
        }
    };
}

outcome_matrix!(spawn_pipe, "spawn", "pipe");
outcome_matrix!(spawn_file, "spawn", "file");
outcome_matrix!(forkserver_shm, "forkserver", "shm");
outcome_matrix!(forkserver_pipe, "forkserver", "pipe");

#[bombsquad]
async fn naps(millis: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(millis)).await;
    millis
}

#[bombsquad]
async fn doubles(x: u64) -> u64 {
    2 * x
}

#[bombsquad]
async fn sleeps_untimed() {
    tokio::time::sleep(Duration::from_secs(3600)).await;
}

#[test]
fn awaiting_calls_never_blocks_a_current_thread_executor() {
    let _guard = shared();
    bombsquad::set_max_children(8);
    let ticks = Arc::new(AtomicUsize::new(0));
    let (results, ticks_during_calls) = current_thread().block_on(async {
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
        let before = ticks.load(Ordering::SeqCst);
        let results = tokio::join!(naps(600), naps(600), naps(600), naps(600));
        let during = ticks.load(Ordering::SeqCst) - before;
        ticker.abort();
        (results, during)
    });
    assert_eq!(
        [
            results.0.unwrap(),
            results.1.unwrap(),
            results.2.unwrap(),
            results.3.unwrap()
        ],
        [600; 4]
    );
    // The calls take at least 600 ms, so an executor left free ticks about
    // 6 times; a blocked one would tick at most once, when the calls end.
    assert!(
        ticks_during_calls >= 4,
        "the ticker ticked {ticks_during_calls} times while four 600 ms calls ran"
    );
}

#[test]
fn a_call_waiting_for_a_permit_does_not_block_the_executor() {
    let _guard = alone();
    bombsquad::set_max_children(1);
    let ticks = Arc::new(AtomicUsize::new(0));
    let (results, ticks_during_calls) = current_thread().block_on(async {
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
        let before = ticks.load(Ordering::SeqCst);
        let started = Instant::now();
        // One child at a time: the second call waits about 400 ms for its permit.
        let results = tokio::join!(naps(400), naps(400));
        let took = started.elapsed();
        let during = ticks.load(Ordering::SeqCst) - before;
        ticker.abort();
        (results, (during, took))
    });
    let (ticks_during_calls, took) = ticks_during_calls;
    bombsquad::set_max_children(8);
    assert_eq!([results.0.unwrap(), results.1.unwrap()], [400; 2]);
    // A lower bound, not a speed: two 400 ms children that ran at once
    // would be done in about 400 ms.
    assert!(
        took >= Duration::from_millis(800),
        "two 400 ms calls under a cap of 1 took {took:?}: they ran at once"
    );
    assert!(
        ticks_during_calls >= 5,
        "the ticker ticked {ticks_during_calls} times while two 400 ms calls ran one after the other"
    );
}

#[bombsquad(timeout = "10s")]
async fn reports_then_waits_for(path: String, progress: bombsquad::Progress<u32>) -> u32 {
    progress.send(1);
    progress.send(2);
    // The caller creates the file on the second message: only if messages
    // are delivered while the call is awaited.
    while !std::path::Path::new(&path).exists() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    progress.send(3);
    3
}

#[test]
fn progress_messages_are_delivered_while_the_call_is_awaited() {
    let _guard = shared();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("go");
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let progress = {
        let (seen, path) = (seen.clone(), path.clone());
        bombsquad::Progress::new(move |message: u32| {
            seen.lock().unwrap().push(message);
            if message == 2 {
                std::fs::write(&path, b"").unwrap();
            }
        })
    };
    let call = reports_then_waits_for(path.display().to_string(), progress);
    // On another thread's runtime: the future is Send + 'static.
    let result = multi_thread().block_on(async { tokio::spawn(call).await.unwrap() });
    assert_eq!(result.unwrap(), 3);
    assert_eq!(*seen.lock().unwrap(), [1, 2, 3]);
}

#[test]
fn a_scope_applies_when_the_function_is_called_and_cannot_ask_for_fork() {
    let _guard = shared();
    let runtime = current_thread();
    // The scope is read when the wrapper is called, not when it is polled.
    let call = bombsquad::Isolate::new()
        .timeout(Duration::from_millis(200))
        .scope(|| naps(5_000));
    match runtime.block_on(call) {
        Err(Error::Timeout { after, .. }) => assert_eq!(after, Duration::from_millis(200)),
        other => panic!("expected Timeout, got {other:?}"),
    }
    let call = bombsquad::Isolate::new()
        .start_method(bombsquad::StartMethod::Fork)
        .scope(|| naps(1));
    match runtime.block_on(call) {
        Err(Error::InvalidOptions { message }) => assert_eq!(
            message,
            "Isolate::scope asks for start_method fork but naps is an async function: forking \
             from an async runtime's threads is unsafe; use spawn or forkserver"
        ),
        other => panic!("expected InvalidOptions, got {other:?}"),
    }
}

#[bombsquad(stderr = "capture", timeout = "20s")]
async fn floods_stderr(path: String, bytes: usize) -> usize {
    use std::io::Write as _;
    std::fs::write(&path, std::process::id().to_string()).unwrap();
    // Time for the caller to stop polling.
    std::thread::sleep(Duration::from_millis(200));
    let chunk = vec![b'x'; 64 << 10];
    let mut stderr = std::io::stderr().lock();
    for _ in 0..bytes / chunk.len() {
        stderr.write_all(&chunk).unwrap();
    }
    bytes
}

/// Polls `call` on `runtime` until its child has written its pid to
/// `path`, leaving it pending.
fn poll_until_started<F: Future + Unpin>(
    runtime: &tokio::runtime::Runtime,
    call: &mut F,
    path: &std::path::Path,
) -> u32
where
    F::Output: std::fmt::Debug,
{
    runtime.block_on(async {
        tokio::select! {
            done = call => panic!("the call ended early: {done:?}"),
            pid = pid_in(path) => pid,
        }
    })
}

#[test]
fn a_child_flooding_its_output_while_its_future_is_not_polled_finishes_once_polled_again() {
    let _guard = shared();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pid");
    let runtime = current_thread();
    let mut call = Box::pin(floods_stderr(path.display().to_string(), 4 << 20));
    // Polled until the child runs, then left alone: the child fills the
    // pipe and blocks.
    let pid = poll_until_started(&runtime, &mut call, &path);
    std::thread::sleep(Duration::from_millis(300));
    assert!(common::process_exists(pid), "blocked on its full pipe");
    assert_eq!(runtime.block_on(call).unwrap(), 4 << 20);
}

#[test]
fn a_call_polled_after_its_runtime_is_gone_fails_and_its_child_is_reaped() {
    let _guard = shared();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pid");
    let first = current_thread();
    let mut call = Box::pin(spawn_pipe_sleeper(path.display().to_string()));
    let pid = poll_until_started(&first, &mut call, &path);
    drop(first);
    match current_thread().block_on(call) {
        Err(Error::Spawn { what, .. }) => assert_eq!(
            what,
            "wait for the child process (tokio's runtime is shutting down)"
        ),
        other => panic!("expected a spawn error, got {other:?}"),
    }
    assert_gone_soon(pid);
}

#[bombsquad]
async fn spawn_pipe_sleeper(path: String) {
    std::fs::write(&path, std::process::id().to_string()).unwrap();
    tokio::time::sleep(Duration::from_secs(3600)).await;
}

#[test]
fn a_hundred_concurrent_calls_on_a_multi_thread_runtime_each_get_their_result() {
    let _guard = shared();
    let results = multi_thread().block_on(async {
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..100u64 {
            calls.spawn(async move { (i, doubles(i).await) });
        }
        calls.join_all().await
    });
    assert_eq!(results.len(), 100);
    for (i, result) in results {
        assert_eq!(result.unwrap(), 2 * i);
    }
}

#[test]
fn a_call_polled_outside_a_tokio_runtime_is_an_error_and_starts_nothing() {
    let _guard = alone();
    let children = common::call_children(std::process::id()).len();
    let mut call = std::pin::pin!(doubles(1));
    match call.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Err(Error::Spawn { what, .. })) => assert_eq!(
            what,
            "wait for the child process: an async isolated call must be awaited inside a \
             tokio runtime"
        ),
        Poll::Ready(other) => panic!("expected a spawn error, got {other:?}"),
        Poll::Pending => panic!("expected a spawn error, got Pending"),
    }
    assert_eq!(common::call_children(std::process::id()).len(), children);
}

#[test]
fn awaited_calls_leave_no_descriptor_and_no_zombie() {
    let _guard = alone();
    let runtime = multi_thread();
    // Warm up: the runtime's own descriptors, the fork server.
    runtime.block_on(doubles(0)).unwrap();
    let fds = common::open_fds();
    runtime.block_on(async {
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..20 {
            calls.spawn(doubles(i));
        }
        for result in calls.join_all().await {
            result.unwrap();
        }
    });
    assert_eq!(common::open_fds(), fds);
    assert_eq!(common::zombie_children(), Vec::<i32>::new());
}

#[test]
fn a_hundred_futures_dropped_at_once_leave_no_child_no_zombie_and_no_descriptor() {
    let _guard = alone();
    bombsquad::set_max_children(100);
    let runtime = multi_thread();
    runtime.block_on(doubles(0)).unwrap();
    let fds = common::open_fds();
    let children = common::call_children(std::process::id()).len();
    runtime.block_on(async {
        let calls: Vec<_> = (0..100).map(|_| tokio::spawn(sleeps_untimed())).collect();
        // Let most of them start their child.
        tokio::time::sleep(Duration::from_millis(500)).await;
        for call in &calls {
            call.abort();
        }
        for call in calls {
            assert!(call.await.unwrap_err().is_cancelled());
        }
    });
    bombsquad::set_max_children(8);
    assert_eq!(common::call_children(std::process::id()).len(), children);
    assert_eq!(common::zombie_children(), Vec::<i32>::new());
    assert_eq!(common::open_fds(), fds);
}

#[bombsquad]
async fn counts_to(n: u32, progress: bombsquad::Progress<u32>) -> u32 {
    for i in 1..=n {
        progress.send(i);
    }
    n
}

/// `Progress::channel()` and `Progress::ignore()` meet an async function's
/// bound (`Send + 'static`): their futures run on another thread.
#[test]
fn an_async_call_takes_a_channel_or_ignore() {
    let _guard = shared();
    let runtime = multi_thread();
    let (progress, messages) = bombsquad::Progress::channel();
    let call = counts_to(3, progress);
    let result = runtime.block_on(async { tokio::spawn(call).await.unwrap() });
    assert_eq!(result.unwrap(), 3);
    assert_eq!(messages.collect::<Vec<_>>(), [1, 2, 3]);
    let call = counts_to(2, bombsquad::Progress::ignore());
    let result = runtime.block_on(async { tokio::spawn(call).await.unwrap() });
    assert_eq!(result.unwrap(), 2);
}
