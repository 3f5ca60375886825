//! `#[bombsquad(pool = N)]`: a function's own pool of warm workers, made on
//! its first call: crashes replace a worker, the attribute's options apply
//! per call, large results cross the shared arena, progress arrives in
//! order, a forked child makes a pool of its own (docs/FAULTS.md D4), and a
//! worker that closes its pipes or leaves a grandchild holding them ends
//! its call all the same (E5, E6).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use bombsquad::{Error, bombsquad};
use common::pool_guard::guard_after;

fn null_strlen() -> usize {
    // SAFETY: not safe at all: a real segfault in C, which is the point.
    unsafe { libc::strlen(std::ptr::null()) }
}

#[bombsquad(pool = 2)]
fn pooled_double(x: u64) -> u64 {
    x * 2
}

#[bombsquad(pool = 1)]
fn pooled_pid(crash: bool) -> u32 {
    if crash {
        null_strlen();
    }
    std::process::id()
}

#[bombsquad(pool = 1, timeout = "300ms")]
fn pooled_sleep(millis: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(millis));
    millis
}

#[bombsquad(pool = 1, memory = "64MiB", stderr = "capture")]
fn pooled_alloc(mib: usize) -> usize {
    let bytes = vec![1u8; mib << 20];
    bytes.iter().map(|&b| usize::from(b)).sum()
}

#[bombsquad(pool = 1, max_calls = 2)]
fn pooled_recycled() -> u32 {
    std::process::id()
}

#[bombsquad(pool = 1)]
fn pooled_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn an_attribute_pool_serves_calls_and_replaces_a_crashed_worker() {
    let mut first = 0;
    let _guard = guard_after(|| {
        assert_eq!(pooled_double(21).unwrap(), 42);
        first = pooled_pid(false).unwrap();
    });
    assert_eq!(pooled_pid(false).unwrap(), first, "warm: the same worker");
    assert_ne!(first, std::process::id());
    match pooled_pid(true) {
        Err(Error::NonzeroExitcode(exit)) => {
            assert_eq!(exit.signal(), Some(libc::SIGSEGV));
            assert_eq!(exit.function(), Some("pooled_pid"));
            assert_eq!(exit.fault_address(), Some(0));
        }
        other => panic!("expected SIGSEGV, got {other:?}"),
    }
    assert_ne!(pooled_pid(false).unwrap(), first);
}

/// With `close`: closes every descriptor above stdio, as daemonizing C
/// code does, its two pipes to the parent included, then returns. Without:
/// its pid.
#[bombsquad(pool = 1)]
fn pooled_closes_everything(close: bool) -> u32 {
    if close {
        // SAFETY: closes descriptors this process may not use again; the
        // worker's loop finds its request pipe gone and leaves.
        unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    }
    std::process::id()
}

#[test]
fn e5_a_worker_that_closed_its_pipes_ends_its_call_without_payload_and_is_replaced() {
    let mut first = 0;
    let _guard = guard_after(|| first = pooled_closes_everything(false).unwrap());
    match pooled_closes_everything(true) {
        Err(Error::ZeroExitcodeWithoutPayload { pid, .. }) => {
            assert_eq!(pid, first, "the warm worker ran it");
            assert!(!common::process_exists(pid), "the worker was reaped");
        }
        other => panic!("expected ZeroExitcodeWithoutPayload, got {other:?}"),
    }
    let next = pooled_closes_everything(false).unwrap();
    assert_ne!(next, first, "a fresh worker serves the next call");
}

/// Forks a grandchild that holds the worker's pipes open for 30 s, writes
/// its pid to `path`, then crashes.
#[bombsquad(pool = 1)]
fn pooled_leaves_a_grandchild_and_crashes(path: String) -> u32 {
    // SAFETY: the grandchild only sleeps and `_exit`s.
    match unsafe { libc::fork() } {
        0 => {
            // SAFETY: as above.
            unsafe { libc::sleep(30) };
            // SAFETY: as above.
            unsafe { libc::_exit(0) }
        }
        grandchild => std::fs::write(&path, grandchild.to_string()).unwrap(),
    }
    u32::try_from(null_strlen()).unwrap()
}

#[test]
fn e6_a_grandchild_holding_a_crashed_workers_pipes_does_not_delay_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grandchild");
    let _guard = guard_after(|| {});
    let started = std::time::Instant::now();
    match pooled_leaves_a_grandchild_and_crashes(path.display().to_string()) {
        Err(Error::NonzeroExitcode(exit)) => assert_eq!(exit.signal(), Some(libc::SIGSEGV)),
        other => panic!("expected SIGSEGV, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "completion came from the worker's exit, not from the end of its pipes"
    );
    let grandchild: u32 = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    // The group kill got it; init reaps it shortly.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while common::process_exists(grandchild) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let state = std::fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default();
    assert!(
        state.is_empty() || state.contains(") Z "),
        "grandchild still running: {state}"
    );
}

#[test]
fn an_attribute_pool_applies_timeout_memory_and_max_calls_per_call() {
    let _guard = guard_after(|| {
        pooled_sleep(1).unwrap();
        pooled_alloc(1).unwrap();
        pooled_recycled().unwrap();
    });
    match pooled_sleep(5_000) {
        Err(Error::Timeout { after, .. }) => assert_eq!(after, Duration::from_millis(300)),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(pooled_sleep(1).unwrap(), 1);

    assert_eq!(pooled_alloc(8).unwrap(), 8 << 20);
    match pooled_alloc(512) {
        Err(Error::NonzeroExitcode(exit)) => {
            assert!(exit.is_oom(), "{exit}");
            assert_eq!(exit.signal(), Some(libc::SIGABRT));
        }
        other => panic!("expected an allocation failure, got {other:?}"),
    }
    assert_eq!(pooled_alloc(8).unwrap(), 8 << 20);

    // The warm-up made the first call: every second call ends a worker.
    let pids: Vec<u32> = (0..4).map(|_| pooled_recycled().unwrap()).collect();
    assert_ne!(pids[0], pids[1]);
    assert_eq!(pids[1], pids[2]);
    assert_ne!(pids[2], pids[3]);
}

#[test]
fn large_results_cross_through_the_arena_intact_call_after_call() {
    let _guard = guard_after(|| drop(pooled_bytes(1).unwrap()));
    for len in [0, 1, 1 << 20, (1 << 20) - 1, 5 << 20, 3 << 20, 64 << 20] {
        let bytes = pooled_bytes(len).unwrap();
        assert_eq!(bytes.len(), len);
        assert!(bytes.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    }
}

/// A job: a number, and where to send it back plus one.
type Job = (u64, std::sync::mpsc::Sender<u64>);

/// A job queue served by a thread of the process that made it (docs/FAULTS.md D4).
fn job_queue() -> &'static Mutex<std::sync::mpsc::Sender<Job>> {
    static QUEUE: std::sync::OnceLock<Mutex<std::sync::mpsc::Sender<Job>>> =
        std::sync::OnceLock::new();
    QUEUE.get_or_init(|| {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        std::thread::spawn(move || {
            for (n, reply) in queue {
                let _ = reply.send(n + 1);
            }
        });
        Mutex::new(jobs)
    })
}

#[bombsquad(pool = 1, timeout = "5s")]
fn uses_a_thread_pool(n: u64) -> u64 {
    let (reply, answer) = std::sync::mpsc::channel();
    job_queue().lock().unwrap().send((n, reply)).unwrap();
    answer.recv().unwrap()
}

#[test]
fn d4_a_worker_has_thread_pools_of_its_own() {
    let _guard = guard_after(|| {
        let _ = job_queue(); // the parent's queue thread does not exist in a worker
        assert_eq!(uses_a_thread_pool(41).unwrap(), 42);
    });
    assert_eq!(uses_a_thread_pool(1).unwrap(), 2);
}

#[bombsquad(pool = 1)]
fn pooled_steps(steps: u32, crash: bool, progress: bombsquad::Progress<u32>) -> u32 {
    for step in 0..steps {
        progress.send(step);
    }
    if crash {
        null_strlen();
    }
    steps
}

#[test]
fn progress_messages_arrive_in_order_before_a_pooled_result() {
    let _guard = guard_after(|| {
        pooled_steps(0, false, bombsquad::Progress::ignore()).unwrap();
    });
    for steps in [3, 10_000] {
        let (progress, messages) = bombsquad::Progress::channel();
        assert_eq!(pooled_steps(steps, false, progress).unwrap(), steps);
        assert_eq!(
            messages.collect::<Vec<u32>>(),
            (0..steps).collect::<Vec<_>>()
        );
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let progress = bombsquad::Progress::new(move |step| sink.lock().unwrap().push(step));
    match pooled_steps(3, true, progress) {
        Err(Error::NonzeroExitcode(exit)) => assert_eq!(exit.signal(), Some(libc::SIGSEGV)),
        other => panic!("expected SIGSEGV, got {other:?}"),
    }
    assert_eq!(
        *seen.lock().unwrap(),
        vec![0, 1, 2],
        "sent before the crash"
    );
    let (progress, messages) = bombsquad::Progress::channel();
    assert_eq!(
        pooled_steps(2, false, progress).unwrap(),
        2,
        "a fresh worker"
    );
    assert_eq!(messages.collect::<Vec<u32>>(), vec![0, 1]);
}

/// A child-side helper: takes the body's `Progress` by reference.
fn send_three(progress: &bombsquad::Progress<u32>, thread: u32) {
    for i in 0..3 {
        progress.send(thread * 10 + i);
    }
}

/// Shares its `Progress` with threads of its own (it is `Sync`).
#[bombsquad(pool = 1)]
fn pooled_sends_from_threads(threads: u32, progress: bombsquad::Progress<u32>) -> u32 {
    std::thread::scope(|s| {
        for thread in 0..threads {
            let progress = &progress;
            s.spawn(move || send_three(progress, thread));
        }
    });
    threads
}

/// A pooled call's callback runs on the calling thread too, so it need
/// not be `Send` (an `Rc`), while the worker's threads share the body's
/// `Progress`.
#[test]
fn a_pooled_calls_callback_need_not_be_send() {
    let _guard = guard_after(|| {
        pooled_sends_from_threads(0, bombsquad::Progress::ignore()).unwrap();
    });
    let seen = Rc::new(RefCell::new(Vec::new()));
    let sink = Rc::clone(&seen);
    let progress = bombsquad::Progress::new(move |message| sink.borrow_mut().push(message));
    assert_eq!(pooled_sends_from_threads(3, progress).unwrap(), 3);
    let seen = seen.take();
    assert_eq!(seen.len(), 9, "{seen:?}");
    for thread in 0..3 {
        let sent: Vec<u32> = seen.iter().copied().filter(|m| m / 10 == thread).collect();
        assert_eq!(sent, [0, 1, 2].map(|i| thread * 10 + i), "thread {thread}");
    }
}

#[bombsquad(pool = 1)]
fn pooled_in_a_forked_child(x: u64) -> u64 {
    x + 1
}

#[bombsquad(start_method = "fork", timeout = "20s")]
fn calls_a_pool_from_a_forked_child(x: u64) -> u64 {
    pooled_in_a_forked_child(x).unwrap()
}

#[test]
fn a_forked_child_makes_its_own_pool_and_keeper_thread() {
    // The keeper thread exists in this process (a pool started it); the
    // forked child has its queue but not the thread, and must start one of
    // its own.
    let _guard = guard_after(|| assert_eq!(pooled_double(1).unwrap(), 2));
    assert_eq!(calls_a_pool_from_a_forked_child(41).unwrap(), 42);
}
