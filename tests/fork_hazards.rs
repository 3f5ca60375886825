//! Fork in a threaded parent and stopped children (docs/FAULTS.md D3, D5,
//! B6): a child deadlocked on a lock held by another thread at the fork is
//! rescued by the timeout; a child's panic needs no such lock; fork mode
//! without a timeout in a threaded process warns once; a stopped child
//! under a timeout is killed and reaped.

#![allow(
    clippy::undocumented_unsafe_blocks,
    reason = "tests stop children with libc"
)]

mod common;

use common::scenario;

use std::io::Write as _;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bombsquad::{Backend, Error, Isolate, bombsquad};

#[bombsquad(timeout = "5s")]
fn print_spawned() -> u8 {
    println!("printed by the child");
    3
}

/// Takes `lock` on a new thread and holds it until told to release it
/// (the sender); returns once it is held.
fn hold_on_another_thread<L>(
    lock: impl FnOnce() -> L + Send + 'static,
) -> (mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (locked, wait_locked) = mpsc::channel();
    let (release, wait_release) = mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let held = lock();
        locked.send(()).unwrap();
        wait_release.recv().unwrap();
        drop(held);
    });
    wait_locked.recv().unwrap();
    (release, holder)
}

/// D3: another thread holds std's stdout lock while the call forks.
#[test]
fn stdout_lock_scenario() {
    if !scenario::is("stdout_lock_scenario") {
        return;
    }
    common::watchdog();
    let (release, holder) = hold_on_another_thread(|| std::io::stdout().lock());
    for backend in [Backend::Pipe, Backend::File] {
        let started = Instant::now();
        let result = Isolate::new()
            .backend(backend)
            .timeout(Duration::from_secs(1))
            .fork(|| {
                println!("never printed: the lock belongs to a thread that is not here");
                1u8
            });
        match result {
            Err(Error::Timeout { after, .. }) => assert_eq!(after, Duration::from_secs(1)),
            other => panic!("{backend:?}: expected a timeout, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(3), "{backend:?}");
    }
    // A spawned child has its own stdout: the same call works.
    let spawned = std::thread::spawn(print_spawned);
    std::thread::sleep(Duration::from_millis(200));
    release.send(()).unwrap(); // the relay prints the child's line through our stdout
    holder.join().unwrap();
    assert_eq!(spawned.join().unwrap().unwrap(), 3);
    std::io::stdout().flush().unwrap();
    eprintln!("SCENARIO PASSED");
}

#[test]
fn a_fork_deadlocked_on_the_stdout_lock_is_rescued_by_the_timeout() {
    common::watchdog();
    let output = scenario::run(scenario::command("stdout_lock_scenario"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("SCENARIO PASSED"), "{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("printed by the child"), "{stdout}");
    assert!(!stdout.contains("never printed"), "{stdout}");
}

#[bombsquad(start_method = "fork", panic = "error", timeout = "5s")]
fn panics_forked() -> u8 {
    panic!("reported without stderr")
}

/// B6: another thread holds std's stderr lock while the call forks, and the
/// child panics (with backtraces on): its panic goes to the parent over the
/// reply channel, and its hook never takes stderr.
#[test]
fn stderr_lock_panic_scenario() {
    if !scenario::is("stderr_lock_panic_scenario") {
        return;
    }
    let (release, holder) = hold_on_another_thread(|| std::io::stderr().lock());
    let started = Instant::now();
    let result = panics_forked();
    let elapsed = started.elapsed();
    release.send(()).unwrap(); // before any assertion: a failing one prints
    holder.join().unwrap();
    match result {
        Err(Error::Panicked { message, .. }) => assert_eq!(message, "reported without stderr"),
        other => panic!("expected the child's panic, got {other:?}"),
    }
    assert!(
        elapsed < Duration::from_secs(3),
        "took {elapsed:?}: not the timeout"
    );
    eprintln!("SCENARIO PASSED");
}

#[test]
fn a_forked_childs_panic_is_reported_while_another_thread_holds_stderr() {
    common::watchdog();
    let mut command = scenario::command("stderr_lock_panic_scenario");
    command.env("RUST_BACKTRACE", "1");
    let output = scenario::run(command);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("SCENARIO PASSED"), "{stderr}");
}

const WARNING: &str = "bombsquad: warning: a fork-mode call without a timeout";

/// D3: calls with a timeout never warn; the first without one in a threaded
/// process warns, and only once.
#[test]
fn fork_warning_scenario() {
    if !scenario::is("fork_warning_scenario") {
        return;
    }
    let _other_thread = std::thread::spawn(|| std::thread::sleep(Duration::from_secs(5)));
    let timeout = Isolate::new().timeout(Duration::from_secs(5));
    for _ in 0..3 {
        assert_eq!(timeout.fork(|| 1u8).unwrap(), 1);
    }
    eprintln!("MARK");
    for _ in 0..3 {
        assert_eq!(bombsquad::fork(|| 2u8).unwrap(), 2);
    }
    eprintln!("SCENARIO PASSED");
}

#[test]
fn fork_without_a_timeout_in_a_threaded_process_warns_once() {
    common::watchdog();
    let output = scenario::run(scenario::command("fork_warning_scenario"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let (before, after) = stderr.split_once("MARK").expect("the scenario ran");
    assert!(!before.contains(WARNING), "{stderr}");
    assert_eq!(after.matches(WARNING).count(), 1, "{stderr}");
    assert!(after.contains("SCENARIO PASSED"), "{stderr}");
}

fn stop_myself() -> u8 {
    unsafe { libc::raise(libc::SIGSTOP) };
    0
}

#[bombsquad(timeout = "300ms", backend = "pipe")]
fn stop_myself_spawned() -> u8 {
    stop_myself()
}

/// D5: SIGKILL ends a stopped child (the group also gets SIGCONT, as in
/// nsjail); the call is a `Timeout` and the child is reaped.
#[test]
fn a_stopped_child_under_a_timeout_is_killed_and_reaped() {
    common::watchdog();
    for mode in ["fork", "spawn"] {
        let started = Instant::now();
        let result = if mode == "fork" {
            Isolate::new()
                .timeout(Duration::from_millis(300))
                .fork(stop_myself)
        } else {
            stop_myself_spawned()
        };
        let pid = match result {
            Err(Error::Timeout { after, pid, .. }) => {
                assert_eq!(after, Duration::from_millis(300), "{mode}");
                pid
            }
            other => panic!("{mode}: expected a timeout, got {other:?}"),
        };
        assert!(started.elapsed() < Duration::from_secs(2), "{mode}");
        assert!(!common::process_exists(pid), "{mode}: {pid} not reaped");
    }
}
