//! IsoLatte's outcome callbacks (issue 4, item 5): each fires for exactly
//! the right outcomes, with the right arguments, and `on_finish` last.

#![allow(
    clippy::undocumented_unsafe_blocks,
    reason = "crash tests call libc to fault on purpose"
)]

use crate::common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bombsquad::{Error, Isolate, PanicMode, Stderr};
use serde::{Serialize, de::DeserializeOwned};

/// Serialises this file's tests: a test that panics in the parent (a
/// re-raised child panic, a panicking callback) holds std's backtrace lock
/// while it prints, and a child forked by another test at that moment
/// would wait on that lock forever when it panics or fails an allocation
/// itself (docs/FAULTS.md D3: fork in a multi-threaded parent).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An `Isolate` with every callback set, each appending to the log.
fn logged() -> (Isolate, Arc<Mutex<Vec<String>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let push = |log: &Arc<Mutex<Vec<String>>>| {
        let log = log.clone();
        move |entry: String| log.lock().unwrap().push(entry)
    };
    let (success, fault, kill, exit, finish) =
        (push(&log), push(&log), push(&log), push(&log), push(&log));
    let isolate = Isolate::new()
        .stderr(Stderr::Capture)
        .on_success(move || success("success".to_owned()))
        .on_fault(move |e| fault(format!("fault {}", e.signal_name().unwrap())))
        .on_kill(move |e| kill(format!("kill {}", e.exitcode())))
        .on_exit(move |code| exit(format!("exit {code}")))
        .on_finish(move |ok, code| finish(format!("finish {ok} {code}")));
    (isolate, log)
}

/// The log of one call of `function` with every callback set.
fn log_of<R: Serialize + DeserializeOwned + std::fmt::Debug>(
    configure: impl FnOnce(Isolate) -> Isolate,
    function: impl FnOnce() -> R,
) -> Vec<String> {
    let (isolate, log) = logged();
    let _ = configure(isolate).fork(function);
    log.lock().unwrap().clone()
}

#[test]
fn each_outcome_fires_its_callback_then_finish() {
    common::watchdog();
    let _serial = serial();
    let same = |isolate| isolate;
    assert_eq!(log_of(same, || 1 + 1), ["success", "finish true 0"]);
    assert_eq!(
        log_of(same, || unsafe { libc::strlen(std::ptr::null()) }),
        ["fault SIGSEGV", "finish false -11"]
    );
    assert_eq!(
        log_of(same, || -> u8 { std::process::abort() }),
        ["fault SIGABRT", "finish false -6"]
    );
    assert_eq!(
        log_of(same, || unsafe { libc::raise(libc::SIGFPE) }),
        ["fault SIGFPE", "finish false -8"]
    );
    assert_eq!(
        log_of(same, || unsafe { libc::raise(libc::SIGBUS) }),
        ["fault SIGBUS", "finish false -7"]
    );
    assert_eq!(
        log_of(same, || unsafe { libc::raise(libc::SIGILL) }),
        ["fault SIGILL", "finish false -4"]
    );
    assert_eq!(
        log_of(same, || unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL)
        }),
        ["kill -9", "finish false -9"]
    );
    assert_eq!(
        log_of(same, || -> u8 { unsafe { libc::_exit(3) } }),
        ["exit 3", "finish false 3"]
    );
    // Neither a fault, a kill nor an exit code: only `on_finish`.
    assert_eq!(
        log_of(same, || unsafe { libc::raise(libc::SIGTERM) }),
        ["finish false -15"]
    );
    assert_eq!(
        log_of(same, || -> u8 { unsafe { libc::_exit(0) } }),
        ["finish false 0"]
    );
    assert_eq!(
        log_of(
            |i: Isolate| i.timeout(Duration::from_millis(100)),
            || std::thread::sleep(Duration::from_secs(30))
        ),
        ["finish false -9"]
    );
    assert_eq!(
        log_of(
            |i: Isolate| i.panic_mode(PanicMode::Error),
            || -> u8 { panic!("no") }
        ),
        ["finish false 0"]
    );
}

#[test]
fn callbacks_run_before_a_child_panic_is_re_raised() {
    common::watchdog();
    let _serial = serial();
    let (isolate, log) = logged();
    let caught = catch_unwind(AssertUnwindSafe(|| {
        isolate.fork(|| -> u8 { panic!("child panic") })
    }))
    .unwrap_err();
    assert_eq!(
        caught.downcast_ref::<String>().map(String::as_str),
        Some("child panic")
    );
    assert_eq!(*log.lock().unwrap(), ["finish false 0"]);
}

#[test]
fn a_panicking_callback_lets_the_others_run_then_propagates() {
    common::watchdog();
    let _serial = serial();
    let log = Arc::new(Mutex::new(Vec::new()));
    let finish_log = log.clone();
    let isolate = Isolate::new()
        .on_success(|| panic!("callback boom"))
        .on_finish(move |ok, code| finish_log.lock().unwrap().push((ok, code)));
    let caught = catch_unwind(AssertUnwindSafe(|| isolate.fork(|| 5u8))).unwrap_err();
    assert_eq!(caught.downcast_ref::<&str>(), Some(&"callback boom"));
    assert_eq!(*log.lock().unwrap(), [(true, 0)]);
}

#[test]
fn callbacks_see_the_error_the_call_returns() {
    common::watchdog();
    let _serial = serial();
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    let result = Isolate::new()
        .on_fault(move |e| *s.lock().unwrap() = Some((e.pid(), e.fault_address())))
        .fork(|| unsafe { libc::strlen(std::ptr::null()) });
    let Err(Error::NonzeroExitcode(e)) = result else {
        panic!("{result:?}")
    };
    assert_eq!(*seen.lock().unwrap(), Some((e.pid(), Some(0))));
}

#[test]
fn an_isolate_with_callbacks_is_clone_send_sync_and_debug() {
    fn assert_traits<T: Clone + Send + Sync + std::fmt::Debug + std::panic::RefUnwindSafe>() {}
    assert_traits::<Isolate>();
    let isolate = Isolate::new().on_exit(|_| ()).on_finish(|_, _| ());
    let shown = format!("{:?}", isolate.clone());
    assert!(
        shown.contains(r#"callbacks: {"on_exit", "on_finish"}"#),
        "{shown}"
    );
}
