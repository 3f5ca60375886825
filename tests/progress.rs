//! `Progress<M>`: messages from a running call reach the caller in order,
//! all of them before the result, under every start_method x backend, with
//! a callback on the calling thread or an iterator on another thread; a
//! crash keeps what was sent before it; a panicking callback ends the call.

#![allow(
    clippy::undocumented_unsafe_blocks,
    reason = "crash tests call libc to fault on purpose"
)]

mod common;

use std::cell::{Cell, RefCell};
use std::fmt::Debug;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::ThreadId;

use bombsquad::{CodecStage, Error, NonzeroExitcode, Progress, bombsquad};
use serde::{Deserialize, Serialize};

/// A test whose callback panics in the parent holds std's backtrace lock
/// while the panic prints, and a child forked by another test meanwhile
/// would wait on that lock forever if it panicked itself (docs/FAULTS.md D3):
/// such a test runs alone, the others share.
static CALLS: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    common::watchdog();
    CALLS.read().unwrap_or_else(PoisonError::into_inner)
}

fn alone() -> RwLockWriteGuard<'static, ()> {
    common::watchdog();
    CALLS.write().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    index: u32,
    label: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    done: Option<f64>,
}

/// Decodes only even numbers: a message that fails to decode in the caller.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Even(u32);
impl<'de> Deserialize<'de> for Even {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match u32::deserialize(deserializer)? {
            n if n % 2 == 0 => Ok(Self(n)),
            n => Err(serde::de::Error::custom(format!("{n} is odd"))),
        }
    }
}

/// Each message a callback received, with the thread it ran on.
type Record<M> = Arc<Mutex<Vec<(M, ThreadId)>>>;

/// A callback that records each message and the thread it ran on.
fn recorder<M: Send + 'static>() -> (Progress<'static, M, impl FnMut(M) + Send>, Record<M>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let progress = Progress::new({
        let seen = Arc::clone(&seen);
        move |message| {
            let thread = std::thread::current().id();
            seen.lock().unwrap().push((message, thread));
        }
    });
    (progress, seen)
}

/// The messages recorded, checking each callback ran on this thread.
fn recorded<M: Clone>(seen: &Mutex<Vec<(M, ThreadId)>>) -> Vec<M> {
    let seen = seen.lock().unwrap();
    let here = std::thread::current().id();
    assert!(
        seen.iter().all(|(_, thread)| *thread == here),
        "every callback runs on the calling thread"
    );
    seen.iter().map(|(message, _)| message.clone()).collect()
}

fn nonzero<T: Debug>(result: Result<T, Error>) -> NonzeroExitcode {
    match result {
        Err(Error::NonzeroExitcode(e)) => e,
        other => panic!("expected NonzeroExitcode, got {other:?}"),
    }
}

fn assert_signal(e: &NonzeroExitcode, signal: i32, name: &str) {
    assert_eq!(e.signal(), Some(signal), "{e}");
    assert_eq!(e.signal_name(), Some(name));
    assert_eq!(e.exitcode(), -signal);
    assert_eq!(e.code(), None);
    assert!(!common::process_exists(e.pid()), "the child was reaped");
}

macro_rules! progress_tests {
    ($module:ident, $start_method:literal, $backend:literal) => {
        mod $module {
            use super::*;

            #[bombsquad(start_method = $start_method, backend = $backend)]
            fn counts(n: u32, progress: Progress<u32>) -> u64 {
                for i in 0..n {
                    progress.send(i);
                }
                u64::from(n) * 10
            }

            /// The progress parameter anywhere, next to borrowed arguments.
            #[bombsquad(start_method = $start_method, backend = $backend)]
            fn labels(prefix: &str, progress: Progress<String>, steps: &[u32]) -> usize {
                for step in steps {
                    progress.send(format!("{prefix} {step}"));
                }
                steps.len()
            }

            #[bombsquad(start_method = $start_method, backend = $backend)]
            fn steps(progress: Progress<Step>) -> String {
                progress.send(Step {
                    index: 1,
                    label: "load".into(),
                    done: None,
                });
                progress.send(Step {
                    index: 2,
                    label: "crunch".into(),
                    done: Some(0.5),
                });
                "done".to_owned()
            }

            #[bombsquad(start_method = $start_method, backend = $backend)]
            fn then_segfaults(n: u32, progress: Progress<u32>) -> usize {
                for i in 0..n {
                    progress.send(i);
                }
                unsafe { libc::strlen(std::ptr::null()) }
            }

            #[bombsquad(start_method = $start_method, backend = $backend)]
            fn then_aborts(progress: Progress<String>) {
                progress.send("about to abort".to_owned());
                std::process::abort()
            }

            #[bombsquad(start_method = $start_method, backend = $backend, panic = "error")]
            fn then_panics(progress: Progress<u32>) {
                progress.send(1);
                panic!("after one message")
            }

            /// Sends its pid, then waits to be killed.
            #[bombsquad(start_method = $start_method, backend = $backend)]
            fn sends_its_pid_then_waits(progress: Progress<u32>) {
                progress.send(std::process::id());
                loop {
                    std::thread::park();
                }
            }

            #[bombsquad(start_method = $start_method, backend = $backend)]
            fn sends_odd(progress: Progress<Even>) -> u8 {
                progress.send(Even(2));
                progress.send(Even(3));
                loop {
                    std::thread::park();
                }
            }

            /// Shares its `Progress` with threads through a helper that
            /// takes `&Progress<M>`: the body's `Progress` is `Sync`.
            #[bombsquad(start_method = $start_method, backend = $backend)]
            fn sends_from_helper_threads(threads: u32, progress: Progress<u32>) -> u32 {
                std::thread::scope(|s| {
                    for thread in 0..threads {
                        let progress = &progress;
                        s.spawn(move || send_three(progress, thread));
                    }
                });
                threads
            }

            #[bombsquad(start_method = $start_method, backend = $backend)]
            fn ignored(progress: Progress<Vec<u8>>) -> u8 {
                progress.send(vec![1; 1 << 20]);
                7
            }

            #[test]
            fn messages_arrive_in_order_on_the_calling_thread_before_the_result() {
                let _calls = shared();
                let (progress, seen) = recorder();
                assert_eq!(counts(5, progress).unwrap(), 50);
                assert_eq!(recorded(&seen), [0, 1, 2, 3, 4]);
                let (progress, seen) = recorder();
                assert_eq!(counts(0, progress).unwrap(), 0);
                assert_eq!(recorded(&seen), Vec::<u32>::new());
            }

            /// The callback runs on the calling thread, so a blocking
            /// call takes one that is not `Send`: it holds an `Rc`, or
            /// borrows a `Cell`.
            #[test]
            fn a_callback_need_not_be_send() {
                let _calls = shared();
                let count = Rc::new(Cell::new(0));
                let counter = Rc::clone(&count);
                let progress = Progress::new(move |_step| counter.set(counter.get() + 1));
                assert_eq!(counts(3, progress).unwrap(), 30);
                assert_eq!(count.get(), 3);
                let sum = Cell::new(0);
                let progress = Progress::new(|step| sum.set(sum.get() + step));
                assert_eq!(counts(5, progress).unwrap(), 50);
                assert_eq!(sum.get(), 1 + 2 + 3 + 4);
            }

            /// Threads of the body share its `Progress`; every message
            /// arrives, each thread's in order, at a callback that is
            /// not `Send` either.
            #[test]
            fn threads_of_the_body_share_its_progress() {
                let _calls = shared();
                let seen = RefCell::new(Vec::new());
                let progress = Progress::new(|message| seen.borrow_mut().push(message));
                assert_eq!(sends_from_helper_threads(4, progress).unwrap(), 4);
                let seen = seen.into_inner();
                assert_eq!(seen.len(), 12, "{seen:?}");
                for thread in 0..4 {
                    let sent: Vec<u32> =
                        seen.iter().copied().filter(|m| m / 10 == thread).collect();
                    assert_eq!(sent, [0, 1, 2].map(|i| thread * 10 + i), "thread {thread}");
                }
            }

            #[test]
            fn strings_and_structs_cross() {
                let _calls = shared();
                let (progress, seen) = recorder();
                assert_eq!(labels("step", progress, &[3, 1, 2]).unwrap(), 3);
                assert_eq!(recorded(&seen), ["step 3", "step 1", "step 2"]);
                let (progress, seen) = recorder();
                assert_eq!(steps(progress).unwrap(), "done");
                assert_eq!(
                    recorded(&seen),
                    [
                        Step {
                            index: 1,
                            label: "load".into(),
                            done: None
                        },
                        Step {
                            index: 2,
                            label: "crunch".into(),
                            done: Some(0.5)
                        },
                    ]
                );
            }

            #[test]
            fn the_iterator_form_is_read_by_another_thread() {
                let _calls = shared();
                let (progress, messages) = Progress::channel();
                let (total, received) = std::thread::scope(|s| {
                    let reader = s.spawn(|| messages.collect::<Vec<u32>>());
                    (counts(4, progress), reader.join().unwrap())
                });
                assert_eq!(total.unwrap(), 40);
                assert_eq!(received, [0, 1, 2, 3]);
            }

            #[test]
            fn a_hundred_thousand_messages_all_arrive_in_order() {
                let _calls = shared();
                let (progress, messages) = Progress::channel();
                let (total, received) = std::thread::scope(|s| {
                    let reader = s.spawn(|| messages.collect::<Vec<u32>>());
                    (counts(100_000, progress), reader.join().unwrap())
                });
                assert_eq!(total.unwrap(), 1_000_000);
                assert!(
                    received.iter().copied().eq(0..100_000),
                    "{} messages",
                    received.len()
                );
                // And through a callback, which the child waits for.
                let mut next = 0;
                let (progress, seen) = recorder();
                assert_eq!(counts(100_000, progress).unwrap(), 1_000_000);
                for message in recorded(&seen) {
                    assert_eq!(message, next);
                    next += 1;
                }
                assert_eq!(next, 100_000);
            }

            #[test]
            fn a_crash_keeps_the_messages_sent_before_it() {
                let _calls = shared();
                let (progress, seen) = recorder();
                assert_signal(
                    &nonzero(then_segfaults(3, progress)),
                    libc::SIGSEGV,
                    "SIGSEGV",
                );
                assert_eq!(recorded(&seen), [0, 1, 2]);
                let (progress, seen) = recorder();
                assert_signal(&nonzero(then_aborts(progress)), libc::SIGABRT, "SIGABRT");
                assert_eq!(recorded(&seen), ["about to abort"]);
            }

            #[test]
            fn a_panic_keeps_the_messages_sent_before_it() {
                let _calls = shared();
                let (progress, seen) = recorder();
                match then_panics(progress) {
                    Err(Error::Panicked { message, .. }) => {
                        assert_eq!(message, "after one message")
                    }
                    other => panic!("expected Panicked, got {other:?}"),
                }
                assert_eq!(recorded(&seen), [1]);
            }

            #[test]
            fn a_message_that_does_not_decode_fails_the_call() {
                let _calls = shared();
                let (progress, seen) = recorder();
                match sends_odd(progress) {
                    Err(Error::Codec { stage, message }) => {
                        assert_eq!(stage, CodecStage::DecodeProgress);
                        assert_eq!(message, "3 is odd");
                    }
                    other => panic!("expected a codec error, got {other:?}"),
                }
                assert_eq!(recorded(&seen), [Even(2)]);
            }

            #[test]
            fn ignored_messages_are_discarded() {
                let _calls = shared();
                assert_eq!(ignored(Progress::ignore()).unwrap(), 7);
            }

            #[test]
            fn a_panicking_callback_ends_the_call_and_the_panic_continues() {
                let _calls = alone();
                let pid = Arc::new(Mutex::new(None));
                let progress = Progress::new({
                    let pid = Arc::clone(&pid);
                    move |child: u32| {
                        *pid.lock().unwrap() = Some(child);
                        panic!("callback refuses the message of {child}")
                    }
                });
                let payload = catch_unwind(AssertUnwindSafe(|| sends_its_pid_then_waits(progress)))
                    .expect_err("the callback's panic continues in the caller");
                let pid = pid.lock().unwrap().expect("the callback ran");
                assert_eq!(
                    payload.downcast_ref::<String>(),
                    Some(&format!("callback refuses the message of {pid}"))
                );
                assert!(
                    !common::process_exists(pid),
                    "the child was killed and reaped"
                );
                assert_eq!(common::zombie_children(), Vec::<i32>::new(), "no zombie");
            }
        }
    };
}

progress_tests!(spawn_file, "spawn", "file");
progress_tests!(spawn_pipe, "spawn", "pipe");
progress_tests!(spawn_shm, "spawn", "shm");
progress_tests!(fork_file, "fork", "file");
progress_tests!(fork_pipe, "fork", "pipe");
progress_tests!(fork_shm, "fork", "shm");
progress_tests!(forkserver_file, "forkserver", "file");
progress_tests!(forkserver_pipe, "forkserver", "pipe");
progress_tests!(forkserver_shm, "forkserver", "shm");

/// A child-side helper: takes the body's `Progress` by reference.
fn send_three(progress: &Progress<u32>, thread: u32) {
    for i in 0..3 {
        progress.send(thread * 10 + i);
    }
}

/// Passes its `Progress` on to a nested call of another start method.
#[bombsquad(backend = "pipe")]
fn outer(progress: Progress<String>) -> u32 {
    progress.send("outer starts".to_owned());
    let inner = inner(progress).unwrap();
    inner + 1
}

#[bombsquad(start_method = "fork")]
fn inner(progress: Progress<String>) -> u32 {
    progress.send("inner runs".to_owned());
    41
}

#[test]
fn a_nested_call_passes_its_messages_on() {
    let _calls = shared();
    let (progress, seen) = recorder();
    assert_eq!(outer(progress).unwrap(), 42);
    assert_eq!(recorded(&seen), ["outer starts", "inner runs"]);
}

/// Messages sent from threads the function starts arrive whole.
#[bombsquad(start_method = "fork", backend = "pipe")]
fn sends_from_threads(progress: Progress<Vec<u32>>) -> u32 {
    std::thread::scope(|s| {
        for thread in 0..4 {
            let progress = &progress;
            s.spawn(move || {
                for i in 0..200 {
                    // Longer than a pipe's atomic write.
                    progress.send(vec![thread * 1000 + i; 2000]);
                }
            });
        }
    });
    800
}

#[test]
fn messages_from_several_threads_arrive_whole() {
    let _calls = shared();
    let (progress, seen) = recorder();
    assert_eq!(sends_from_threads(progress).unwrap(), 800);
    let received = recorded(&seen);
    assert_eq!(received.len(), 800);
    for thread in 0..4 {
        let sent: Vec<u32> = received
            .iter()
            .filter(|m| m[0] / 1000 == thread)
            .map(|m| {
                assert!(m.iter().all(|x| *x == m[0]), "a message arrived whole");
                m[0] % 1000
            })
            .collect();
        assert!(sent.iter().copied().eq(0..200), "thread {thread}: in order");
    }
}

/// A caller-side `Progress` delivers locally: the logic runs in-process too.
#[test]
fn a_callers_progress_delivers_in_process() {
    let (progress, seen) = recorder();
    progress.send(Step {
        index: 0,
        label: "local".into(),
        done: None,
    });
    assert_eq!(recorded(&seen)[0].label, "local");
}

#[bombsquad(start_method = "forkserver")]
fn counts_down(from: u32, progress: Progress<u32>) -> u32 {
    for n in (1..=from).rev() {
        progress.send(n);
    }
    0
}

/// The callback runs on the calling thread during the call, so it may
/// borrow the caller's locals: no `'static`, no `Arc<Mutex<..>>`.
#[test]
fn a_callback_may_borrow_the_callers_locals() {
    let _shared = shared();
    let mut seen = Vec::new();
    let mut total = 0;
    let result = counts_down(
        3,
        Progress::new(|n| {
            seen.push(n);
            total += n;
        }),
    );
    assert_eq!(result.unwrap(), 0);
    assert_eq!((seen, total), (vec![3, 2, 1], 6));
}
