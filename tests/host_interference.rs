//! A host that interferes with its children or its own threads (docs/FAULTS.md
//! F6, F7, F12): SIGCHLD ignored, another library reaping with
//! `waitpid(-1)`, signal handlers without SA_RESTART firing every
//! millisecond. Every call resolves, never hangs, and a complete result is
//! still `Ok`. Each host runs as a scenario subprocess.

#![allow(
    clippy::undocumented_unsafe_blocks,
    reason = "scenarios change signal dispositions and crash with libc"
)]

mod common;

use common::scenario;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bombsquad::{Backend, Error, Isolate, StartMethod, bombsquad};

fn crash() -> u32 {
    unsafe { libc::strlen(std::ptr::null()) as u32 }
}

#[bombsquad(backend = "pipe")]
fn echo_pipe(token: u32) -> u32 {
    token
}

#[bombsquad(backend = "file")]
fn echo_file(token: u32) -> u32 {
    token
}

#[bombsquad(backend = "pipe")]
fn crash_pipe() -> u32 {
    crash()
}

#[bombsquad(backend = "file")]
fn crash_file() -> u32 {
    crash()
}

const COMBINATIONS: [&str; 6] = [
    "fork/pipe",
    "fork/file",
    "spawn/pipe",
    "spawn/file",
    "forkserver/pipe",
    "forkserver/file",
];

/// Calls `token` (or a crash) in `combination`.
fn call(combination: &str, token: u32, crashes: bool) -> Result<u32, Error> {
    let backend = if combination.ends_with("pipe") {
        Backend::Pipe
    } else {
        Backend::File
    };
    let method = match combination.split('/').next() {
        Some("fork") if crashes => return Isolate::new().backend(backend).fork(crash),
        Some("fork") => return Isolate::new().backend(backend).fork(|| token),
        Some("spawn") => StartMethod::Spawn,
        _ => StartMethod::Forkserver,
    };
    Isolate::new()
        .start_method(method)
        .scope(|| match (backend, crashes) {
            (Backend::Pipe, false) => echo_pipe(token),
            (_, false) => echo_file(token),
            (Backend::Pipe, true) => crash_pipe(),
            (_, true) => crash_file(),
        })
}

fn run_scenario(name: &str) {
    let output = scenario::run(scenario::command(name));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("SCENARIO PASSED"), "{stderr}");
}

/// F6: with SIGCHLD ignored the kernel reaps the caller's children itself:
/// a fork-mode or spawned crash is `StatusUnavailable`; the fork server
/// reaps its own, so its crash is reported in full.
#[test]
fn sigchld_ignored_scenario() {
    if !scenario::is("sigchld_ignored_scenario") {
        return;
    }
    common::watchdog();
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    for combination in COMBINATIONS {
        for token in 0..5 {
            assert_eq!(
                call(combination, token, false).unwrap(),
                token,
                "{combination}"
            );
        }
        match call(combination, 0, true) {
            // The fork server reaps its children itself, SIGCHLD or not.
            Err(Error::NonzeroExitcode(exit)) if combination.starts_with("forkserver") => {
                assert_eq!(exit.signal(), Some(libc::SIGSEGV), "{combination}");
            }
            Err(Error::StatusUnavailable { pid, report }) => {
                assert_eq!(report.pid(), pid, "{combination}");
                assert_eq!(
                    report.peak_rss(),
                    None,
                    "{combination}: no rusage without a status"
                );
            }
            other => panic!("{combination}: expected StatusUnavailable, got {other:?}"),
        }
        let timeout = Isolate::new().timeout(Duration::from_millis(100));
        let slept = timeout.fork(|| std::thread::sleep(Duration::from_secs(10)));
        assert!(
            matches!(slept, Err(Error::Timeout { .. })),
            "{combination}: {slept:?}"
        );
    }
    assert_eq!(common::call_children(std::process::id()), Vec::new());
    eprintln!("SCENARIO PASSED");
}

#[test]
fn with_sigchld_ignored_results_arrive_and_a_crash_is_reported_or_status_unavailable() {
    common::watchdog();
    run_scenario("sigchld_ignored_scenario");
}

/// F7: a thread of the host reaps any child, all the time.
#[test]
fn foreign_reaper_scenario() {
    if !scenario::is("foreign_reaper_scenario") {
        return;
    }
    common::watchdog();
    let stop = Arc::new(AtomicBool::new(false));
    let stolen = Arc::new(AtomicUsize::new(0));
    let reaper = std::thread::spawn({
        let (stop, stolen) = (stop.clone(), stolen.clone());
        move || {
            while !stop.load(Ordering::Relaxed) {
                let mut status = 0;
                if unsafe { libc::waitpid(-1, &raw mut status, libc::WNOHANG) } > 0 {
                    stolen.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    });
    let mut unavailable = 0;
    for i in 0..100u32 {
        let combination = COMBINATIONS[i as usize % COMBINATIONS.len()];
        let crashes = i % 2 == 1;
        match call(combination, i, crashes) {
            Ok(value) => assert!(!crashes && value == i, "{combination} {i}: {value}"),
            Err(Error::StatusUnavailable { .. }) if crashes => unavailable += 1,
            Err(Error::NonzeroExitcode(exit)) if crashes => {
                assert_eq!(exit.signal(), Some(libc::SIGSEGV), "{combination} {i}");
            }
            other => panic!("{combination} {i}: {other:?}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    reaper.join().unwrap();
    let stolen = stolen.load(Ordering::Relaxed);
    eprintln!(
        "the foreign reaper took {stolen} statuses; {unavailable} crashes were unclassifiable"
    );
    assert!(stolen > 0, "the foreign reaper never won a race");
    eprintln!("SCENARIO PASSED");
}

#[test]
fn a_foreign_waitpid_reaper_never_makes_a_call_hang() {
    common::watchdog();
    run_scenario("foreign_reaper_scenario");
}

static HANDLED: AtomicUsize = AtomicUsize::new(0);

extern "C" fn count_signal(_: libc::c_int) {
    HANDLED.fetch_add(1, Ordering::Relaxed);
}

/// F12: SIGUSR1, handled without SA_RESTART, hits the calling thread every
/// millisecond.
#[test]
fn eintr_storm_scenario() {
    if !scenario::is("eintr_storm_scenario") {
        return;
    }
    common::watchdog();
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = count_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    action.sa_flags = 0; // no SA_RESTART: blocking calls fail with EINTR
    assert_eq!(
        unsafe { libc::sigaction(libc::SIGUSR1, &raw const action, std::ptr::null_mut()) },
        0
    );
    let caller = unsafe { libc::pthread_self() };
    let stop = Arc::new(AtomicBool::new(false));
    let storm = std::thread::spawn({
        let stop = stop.clone();
        move || {
            while !stop.load(Ordering::Relaxed) {
                unsafe { libc::pthread_kill(caller, libc::SIGUSR1) };
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    });
    for i in 0..200u32 {
        let combination = COMBINATIONS[i as usize % COMBINATIONS.len()];
        // Slow enough that the supervisor waits, and is interrupted, in poll.
        let result = if combination.starts_with("fork") {
            Isolate::new()
                .backend(Backend::Pipe)
                .timeout(Duration::from_secs(20))
                .fork(|| {
                    std::thread::sleep(Duration::from_millis(2));
                    i
                })
        } else {
            call(combination, i, false)
        };
        assert_eq!(result.unwrap(), i, "{combination}");
    }
    stop.store(true, Ordering::Relaxed);
    storm.join().unwrap();
    let handled = HANDLED.load(Ordering::Relaxed);
    eprintln!("{handled} signals handled during 200 calls");
    assert!(handled > 100, "the storm was too weak: {handled}");
    eprintln!("SCENARIO PASSED");
}

#[test]
fn an_eintr_storm_fails_no_call() {
    common::watchdog();
    run_scenario("eintr_storm_scenario");
}
