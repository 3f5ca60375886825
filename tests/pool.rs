//! Warm workers holding a `Task`: real crashes of real workers (docs/FAULTS.md
//! J1-J6, F3, F9, F11), concurrent callers, recycling, retries, shutdown,
//! and no leaked descriptor or zombie after any of it. The attribute's
//! pools are in `pool_attribute.rs`.
//!
//! Every test takes the pool guard (`common::pool_guard`): its leak checks
//! count this process's descriptors and children, which a test running
//! beside them would change.

mod common;

use common::pool_guard::guard;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bombsquad::{Error, Isolate, PanicMode, Stderr, Task, Worker, WorkerOptions, bombsquad};
use serde::{Deserialize, Serialize};

/// What a test asks a worker to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Op {
    Echo(u64),
    Pid,
    /// A null `strlen` from C.
    Segfault,
    Abort,
    Panic(String),
    Fail(String),
    Sleep(u64),
    /// Writes a file named after the worker's pid in the directory, then sleeps.
    SleepAfterMarking(PathBuf, u64),
    /// Leaks this many MiB, touched.
    Leak(u64),
    /// Aborts unless the file exists, which it creates first.
    AbortOnce(PathBuf),
    /// Panics unless the file exists, which it creates first.
    PanicOnce(PathBuf),
    /// Writes to stderr, then aborts.
    ShoutAndAbort(String),
}

#[derive(Default)]
struct Ops;

#[bombsquad]
impl Task for Ops {
    type Input = Op;
    type Output = u64;
    type Error = String;

    fn run(&mut self, op: Op) -> Result<u64, String> {
        match op {
            Op::Echo(n) => Ok(n),
            Op::Pid => Ok(u64::from(std::process::id())),
            Op::Segfault => Ok(null_strlen() as u64),
            Op::Abort | Op::ShoutAndAbort(_) => {
                if let Op::ShoutAndAbort(text) = op {
                    eprint!("{text}");
                }
                std::process::abort()
            }
            Op::Panic(message) => panic!("{message}"),
            Op::Fail(message) => Err(message),
            Op::Sleep(millis) => {
                std::thread::sleep(Duration::from_millis(millis));
                Ok(millis)
            }
            Op::SleepAfterMarking(dir, millis) => {
                std::fs::write(dir.join(std::process::id().to_string()), b"").unwrap();
                std::thread::sleep(Duration::from_millis(millis));
                Ok(millis)
            }
            Op::Leak(mib) => {
                let leaked = Box::leak(vec![1u8; (mib as usize) << 20].into_boxed_slice());
                Ok(u64::from(leaked[leaked.len() - 1]))
            }
            Op::AbortOnce(path) => {
                if std::fs::exists(&path).unwrap() {
                    return Ok(u64::from(std::process::id()));
                }
                std::fs::write(&path, b"").unwrap();
                std::process::abort()
            }
            Op::PanicOnce(path) => {
                if std::fs::exists(&path).unwrap() {
                    return Ok(1);
                }
                std::fs::write(&path, b"").unwrap();
                panic!("panicked once")
            }
        }
    }
}

fn null_strlen() -> usize {
    // SAFETY: not safe at all: a real segfault in C, which is the point.
    unsafe { libc::strlen(std::ptr::null()) }
}

fn options() -> WorkerOptions {
    WorkerOptions::new().isolate(Isolate::new().panic_mode(PanicMode::Error))
}

fn pid_of(worker: &Worker<Ops>) -> u32 {
    u32::try_from(worker.call(Op::Pid).unwrap().unwrap()).unwrap()
}

/// What a call of `Ops` returns.
type Outcome = Result<Result<u64, String>, Error>;

fn signal_of(result: Outcome) -> i32 {
    match result {
        Err(Error::NonzeroExitcode(exit)) => exit.signal().expect("killed by a signal"),
        other => panic!("expected a crash, got {other:?}"),
    }
}

fn kill(pid: u32) {
    // SAFETY: plain syscall on a worker this test owns and has not reaped.
    assert_eq!(unsafe { libc::kill(pid.cast_signed(), libc::SIGKILL) }, 0);
}

#[test]
fn a_task_keeps_its_state_until_its_worker_crashes() {
    let _guard = guard();
    let worker = Worker::<Counter>::spawn().unwrap();
    assert_eq!(worker.call(Step::Add(2)).unwrap(), Ok(2));
    assert_eq!(worker.call(Step::Add(3)).unwrap(), Ok(5));
    assert_eq!(signal_of(worker.call(Step::Crash)), libc::SIGSEGV);
    assert_eq!(
        worker.call(Step::Add(1)).unwrap(),
        Ok(1),
        "a fresh T::default()"
    );
    assert_eq!(worker.restarts(), 1);
}

#[derive(Debug, Serialize, Deserialize)]
enum Step {
    Add(u64),
    Crash,
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
            Step::Crash => Ok(null_strlen() as u64),
        }
    }
}

#[test]
fn j1_a_crash_fails_only_its_own_call_and_queued_calls_go_to_a_fresh_worker() {
    let _guard = guard();
    let worker = Worker::<Ops>::spawn_with(options().workers(2)).unwrap();
    let results: Vec<_> = std::thread::scope(|scope| {
        let crash = scope.spawn(|| worker.call(Op::Segfault));
        let oks: Vec<_> = (0..10)
            .map(|n| {
                let worker = &worker;
                scope.spawn(move || worker.call(Op::Echo(n)))
            })
            .collect();
        let mut results = vec![crash.join().unwrap()];
        results.extend(oks.into_iter().map(|ok| ok.join().unwrap()));
        results
    });
    let mut results = results.into_iter();
    assert_eq!(signal_of(results.next().unwrap()), libc::SIGSEGV);
    for (n, result) in (0..10).zip(results) {
        assert_eq!(result.unwrap(), Ok(n));
    }
    assert_eq!(worker.restarts(), 1);
    assert_eq!(
        worker.call(Op::Echo(7)).unwrap(),
        Ok(7),
        "the pool is not broken"
    );
}

#[test]
fn mixed_outcomes_from_sixteen_threads() {
    let _guard = guard();
    let worker = Worker::<Ops>::spawn_with(options().workers(3)).unwrap();
    let ops = |n: u64| match n % 8 {
        3 => Op::Segfault,
        5 => Op::Panic(format!("panic {n}")),
        6 => Op::Fail(format!("fail {n}")),
        7 => Op::Abort,
        _ => Op::Echo(n),
    };
    let results: Vec<(u64, Outcome)> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let worker = &worker;
                scope.spawn(move || {
                    (0..4)
                        .map(|i| {
                            let n = t * 4 + i;
                            (n, worker.call(ops(n)))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    });
    assert_eq!(results.len(), 64);
    let mut crashes = 0;
    for (n, result) in results {
        match n % 8 {
            3 => {
                assert_eq!(signal_of(result), libc::SIGSEGV);
                crashes += 1;
            }
            7 => {
                assert_eq!(signal_of(result), libc::SIGABRT);
                crashes += 1;
            }
            5 => match result {
                Err(Error::Panicked { message, .. }) => assert_eq!(message, format!("panic {n}")),
                other => panic!("expected a panic, got {other:?}"),
            },
            6 => assert_eq!(result.unwrap(), Err(format!("fail {n}"))),
            _ => assert_eq!(result.unwrap(), Ok(n)),
        }
    }
    assert_eq!(crashes, 16);
    assert_eq!(
        worker.restarts(),
        16,
        "one replacement per crash, none per panic"
    );
}

#[test]
fn j3_a_worker_killed_while_idle_is_replaced_before_the_next_call() {
    let _guard = guard();
    let worker = Worker::<Ops>::spawn_with(options()).unwrap();
    let first = pid_of(&worker);
    kill(first);
    common::wait_until_dead(first);
    assert_eq!(
        worker.call(Op::Echo(5)).unwrap(),
        Ok(5),
        "no error for the next call"
    );
    assert_eq!(worker.restarts(), 1);
    assert_ne!(pid_of(&worker), first);
}

#[test]
fn a_worker_killed_from_outside_while_busy_fails_that_call_with_sigkill() {
    let _guard = guard();
    let dir = tempfile::tempdir().unwrap();
    let worker = Worker::<Ops>::spawn_with(options()).unwrap();
    let busy = worker.pid().unwrap();
    let result = std::thread::scope(|scope| {
        let call = scope.spawn(|| worker.call(Op::SleepAfterMarking(dir.path().into(), 30_000)));
        wait_for_file(&dir.path().join(busy.to_string()));
        kill(busy);
        call.join().unwrap()
    });
    match result {
        Err(Error::NonzeroExitcode(exit)) => {
            assert_eq!(exit.signal(), Some(libc::SIGKILL));
            assert_eq!(exit.pid(), busy);
        }
        other => panic!("expected SIGKILL, got {other:?}"),
    }
    assert_eq!(worker.call(Op::Echo(1)).unwrap(), Ok(1));
    assert_eq!(worker.restarts(), 1);
}

fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn j4_a_timeout_kills_only_its_worker() {
    let _guard = guard();
    let options = WorkerOptions::new().workers(2).isolate(
        Isolate::new()
            .timeout(Duration::from_millis(300))
            .name("sleepy"),
    );
    let worker = Worker::<Ops>::spawn_with(options).unwrap();
    let (slow, quick) = std::thread::scope(|scope| {
        let slow = scope.spawn(|| worker.call(Op::Sleep(10_000)));
        let quick: Vec<_> = (0..20).map(|n| worker.call(Op::Echo(n))).collect();
        (slow.join().unwrap(), quick)
    });
    match slow {
        Err(Error::Timeout { after, report, .. }) => {
            assert_eq!(after, Duration::from_millis(300));
            assert_eq!(report.function(), Some("sleepy"));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    for (n, result) in (0..20).zip(quick) {
        assert_eq!(result.unwrap(), Ok(n));
    }
    assert_eq!(worker.restarts(), 1);
    assert_eq!(worker.call(Op::Echo(3)).unwrap(), Ok(3));
}

#[test]
fn j5_a_worker_is_recycled_after_max_calls_without_an_error() {
    let _guard = guard();
    let worker = Worker::<Ops>::spawn_with(options().max_calls(3)).unwrap();
    let pids: Vec<u32> = (0..7).map(|_| pid_of(&worker)).collect();
    assert_eq!(pids[0], pids[1]);
    assert_eq!(pids[1], pids[2]);
    assert_ne!(pids[2], pids[3]);
    assert_eq!(pids[3], pids[5]);
    assert_ne!(pids[5], pids[6]);
    assert_eq!(worker.restarts(), 0, "recycling is not a restart");
}

#[test]
fn j5_a_worker_whose_memory_creeps_is_recycled_between_calls() {
    let _guard = guard();
    let worker = Worker::<Ops>::spawn_with(options().max_rss_growth(50 << 20)).unwrap();
    let mut pids = Vec::new();
    for _ in 0..12 {
        pids.push(pid_of(&worker));
        assert_eq!(worker.call(Op::Leak(10)).unwrap(), Ok(1));
    }
    let first_change = pids.iter().position(|pid| *pid != pids[0]);
    // 10 MiB per call: past 50 MiB over the baseline (taken after the first
    // call) on the 6th leak.
    assert!(
        matches!(first_change, Some(5..=7)),
        "recycled at call {first_change:?}: {pids:?}"
    );
    assert_eq!(worker.restarts(), 0);
}

#[derive(Default)]
struct AbortsInInit;

#[bombsquad]
impl Task for AbortsInInit {
    type Input = ();
    type Output = ();
    type Error = ();

    fn init(&mut self) {
        if let Some(dir) = std::env::var_os("BOMBSQUAD_TEST_INIT_LOG") {
            let log = Path::new(&dir).join(std::process::id().to_string());
            std::fs::write(log, b"").unwrap();
        }
        eprintln!("init: cannot load the model");
        std::process::abort();
    }

    fn run(&mut self, (): ()) -> Result<(), ()> {
        Ok(())
    }
}

#[test]
fn j2_a_worker_that_dies_at_start_up_breaks_the_pool_after_five_tries() {
    let _guard = guard();
    let dir = tempfile::tempdir().unwrap();
    // SAFETY: tests run one at a time (SERIAL), and no other thread reads the environment now.
    unsafe { std::env::set_var("BOMBSQUAD_TEST_INIT_LOG", dir.path()) };
    let result = Worker::<AbortsInInit>::spawn_with(
        WorkerOptions::new().isolate(Isolate::new().stderr(Stderr::Capture)),
    );
    // SAFETY: as above.
    unsafe { std::env::remove_var("BOMBSQUAD_TEST_INIT_LOG") };
    match result {
        Err(Error::WorkerStartup {
            attempts,
            exitcode,
            reason,
            stderr_tail,
        }) => {
            assert_eq!(attempts, 5);
            assert_eq!(exitcode, Some(-libc::SIGABRT));
            assert!(reason.contains("was killed by SIGABRT"), "{reason}");
            assert_eq!(stderr_tail, b"init: cannot load the model\n");
        }
        other => panic!("expected WorkerStartup, got {other:?}"),
    }
    let starts = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(starts, 5, "five starts, no storm");
}

#[test]
fn j6_shutdown_with_busy_workers_kills_them_after_the_grace_period() {
    let _guard = guard();
    let dir = tempfile::tempdir().unwrap();
    let worker = Arc::new(Worker::<Ops>::spawn_with(options().workers(2)).unwrap());
    let calls: Vec<_> = (0..2)
        .map(|_| {
            let worker = Arc::clone(&worker);
            let dir = dir.path().to_owned();
            std::thread::spawn(move || worker.call(Op::SleepAfterMarking(dir, 30_000)))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_dir(dir.path()).unwrap().count() < 2 {
        assert!(Instant::now() < deadline, "the workers never got busy");
        std::thread::sleep(Duration::from_millis(5));
    }
    let pids = worker.pids();
    assert_eq!(pids.len(), 2);
    let started = Instant::now();
    worker.shutdown(Duration::from_secs(1));
    let took = started.elapsed();
    assert!(took < Duration::from_millis(2500), "shutdown took {took:?}");
    for call in calls {
        assert!(matches!(call.join().unwrap(), Err(Error::PoolClosed)));
    }
    for pid in pids {
        common::wait_until_dead(pid);
    }
    assert!(matches!(worker.call(Op::Echo(1)), Err(Error::PoolClosed)));
}

#[test]
fn dropping_a_worker_ends_its_processes() {
    let _guard = guard();
    let worker = Worker::<Ops>::spawn_with(options().workers(3)).unwrap();
    let pids = worker.pids();
    assert_eq!(pids.len(), 3);
    drop(worker);
    for pid in pids {
        common::wait_until_dead(pid);
    }
}

#[test]
fn retries_rerun_a_crashed_call_but_never_a_panicked_one() {
    let _guard = guard();
    let dir = tempfile::tempdir().unwrap();
    let worker = Worker::<Ops>::spawn_with(options().retries(2)).unwrap();
    let first = pid_of(&worker);
    let retried = worker.call(Op::AbortOnce(dir.path().join("crashed")));
    assert_ne!(
        retried.unwrap().unwrap(),
        u64::from(first),
        "ran again on a fresh worker"
    );
    assert_eq!(worker.restarts(), 1);

    let panicked = worker.call(Op::PanicOnce(dir.path().join("panicked")));
    assert!(
        matches!(panicked, Err(Error::Panicked { .. })),
        "{panicked:?}"
    );
    assert_eq!(
        worker.call(Op::Fail("no".into())).unwrap(),
        Err("no".into())
    );
    assert_eq!(worker.restarts(), 1);
}

#[test]
fn retries_give_up_after_their_count() {
    let _guard = guard();
    let worker = Worker::<Ops>::spawn_with(options().retries(2)).unwrap();
    assert_eq!(signal_of(worker.call(Op::Abort)), libc::SIGABRT);
    assert_eq!(worker.restarts(), 3, "the call and two retries");
}

#[test]
fn the_crash_report_quotes_only_the_crashing_calls_stderr() {
    let _guard = guard();
    let options =
        WorkerOptions::new().isolate(Isolate::new().stderr(Stderr::Capture).name("shouty"));
    let worker = Worker::<Ops>::spawn_with(options).unwrap();
    worker.call(Op::Echo(1)).unwrap().unwrap();
    match worker.call(Op::ShoutAndAbort("last words\n".into())) {
        Err(Error::NonzeroExitcode(exit)) => {
            assert_eq!(exit.stderr_tail(), b"last words\n");
            assert_eq!(exit.function(), Some("shouty"));
            assert_eq!(exit.signal_name(), Some("SIGABRT"));
        }
        other => panic!("expected SIGABRT, got {other:?}"),
    }
}

#[test]
fn f3_workers_outlive_the_thread_that_started_them() {
    let _guard = guard();
    let worker = std::thread::spawn(|| Worker::<Ops>::spawn_with(options()).unwrap())
        .join()
        .unwrap();
    let pid = worker.pid().unwrap();
    // PR_SET_PDEATHSIG would fire within milliseconds of that thread's exit.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(pid_of(&worker), pid);
    assert_eq!(worker.restarts(), 0);
}

#[test]
fn f9_a_pool_used_in_a_forked_copy_of_its_process_refuses() {
    let _guard = guard();
    let worker = Worker::<Ops>::spawn_with(options()).unwrap();
    let owner = std::process::id();
    // SAFETY: the child only calls the pool, whose first act is the owner
    // check (no lock, no I/O), and leaves with `_exit`.
    let child = unsafe { libc::fork() };
    if child == 0 {
        let code = match worker.call(Op::Echo(1)) {
            Err(Error::PoolInForkedChild { owner: o }) if o == owner => 0,
            _ => 1,
        };
        // SAFETY: leaves the forked copy without running anything of the parent's.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: reaps the child forked above.
    assert_eq!(unsafe { libc::waitpid(child, &raw mut status, 0) }, child);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "status {status:#x}"
    );
    assert_eq!(
        worker.call(Op::Echo(2)).unwrap(),
        Ok(2),
        "the parent's pool still works"
    );
}

#[test]
fn f11_a_host_that_dies_of_sigpipe_survives_a_dead_idle_worker() {
    if common::scenario::is("f11_a_host_that_dies_of_sigpipe_survives_a_dead_idle_worker") {
        // SAFETY: a scenario process of its own; restores the default action.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        let worker = Worker::<Ops>::spawn_with(options()).unwrap();
        let pid = pid_of(&worker);
        kill(pid);
        common::wait_until_dead(pid);
        assert_eq!(worker.call(Op::Echo(9)).unwrap(), Ok(9));
        assert_eq!(worker.restarts(), 1);
        return;
    }
    let _guard = guard();
    common::scenario::run(common::scenario::command(
        "f11_a_host_that_dies_of_sigpipe_survives_a_dead_idle_worker",
    ));
}

/// Starts fine until the file named by `BOMBSQUAD_TEST_POISON` exists; then
/// its init aborts, after logging its pid next to that file.
#[derive(Default)]
struct PoisonedInit;

#[bombsquad]
impl Task for PoisonedInit {
    type Input = bool;
    type Output = u32;
    type Error = ();

    fn init(&mut self) {
        let Some(poison) = std::env::var_os("BOMBSQUAD_TEST_POISON") else {
            return;
        };
        let poison = PathBuf::from(poison);
        if poison.exists() {
            let log = poison.with_extension(std::process::id().to_string());
            std::fs::write(log, b"").unwrap();
            std::process::abort();
        }
    }

    fn run(&mut self, crash: bool) -> Result<u32, ()> {
        if crash {
            null_strlen();
        }
        Ok(std::process::id())
    }
}

#[test]
fn j2_a_broken_pool_answers_at_once_without_starting_workers() {
    let _guard = guard();
    let dir = tempfile::tempdir().unwrap();
    let poison = dir.path().join("poison");
    // SAFETY: tests run one at a time (SERIAL), and no other thread reads the environment now.
    unsafe { std::env::set_var("BOMBSQUAD_TEST_POISON", &poison) };
    let worker = Worker::<PoisonedInit>::spawn_with(options()).unwrap();
    // SAFETY: as above; the worker already has its environment.
    unsafe { std::env::remove_var("BOMBSQUAD_TEST_POISON") };
    assert!(worker.call(false).unwrap().is_ok());
    std::fs::write(&poison, b"").unwrap();
    // SAFETY: as above.
    unsafe { std::env::set_var("BOMBSQUAD_TEST_POISON", &poison) };
    assert_eq!(signal_of_u32(worker.call(true)), libc::SIGSEGV);
    let first = worker.call(false);
    let second = worker.call(false);
    // SAFETY: as above.
    unsafe { std::env::remove_var("BOMBSQUAD_TEST_POISON") };
    for result in [first, second] {
        match result {
            Err(Error::WorkerStartup {
                attempts, exitcode, ..
            }) => {
                assert_eq!(attempts, 5);
                assert_eq!(exitcode, Some(-libc::SIGABRT));
            }
            other => panic!("expected WorkerStartup, got {other:?}"),
        }
    }
    let starts = std::fs::read_dir(dir.path()).unwrap().count() - 1;
    assert_eq!(starts, 5, "the second call started no worker");
}

fn signal_of_u32(result: Result<Result<u32, ()>, Error>) -> i32 {
    match result {
        Err(Error::NonzeroExitcode(exit)) => exit.signal().expect("killed by a signal"),
        other => panic!("expected a crash, got {other:?}"),
    }
}
