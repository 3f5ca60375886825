//! A forked child leaves only through `_exit` (docs/FAULTS.md A7, A8): it never
//! returns past the fork point, and the parent's `atexit` handlers run in it
//! only when the function itself calls `std::process::exit`.

#![allow(
    clippy::undocumented_unsafe_blocks,
    reason = "crash tests call libc to fault on purpose"
)]

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

use bombsquad::Error;

static ATEXIT_LOG: OnceLock<PathBuf> = OnceLock::new();
static PARENT: OnceLock<u32> = OnceLock::new();

extern "C" fn log_exit_in_child() {
    if Some(&std::process::id()) != PARENT.get()
        && let Some(path) = ATEXIT_LOG.get()
    {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        file.write_all(b"atexit ran in a child\n").unwrap();
    }
}

fn append(path: &std::path::Path, text: &str) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

#[test]
fn the_child_never_continues_past_the_call() {
    common::watchdog();
    let dir = tempfile::tempdir().unwrap();
    let marks = dir.path().join("marks");
    let _ = std::panic::catch_unwind(|| bombsquad::fork(|| -> u8 { panic!("in the child") }));
    append(&marks, "P");
    let _ = bombsquad::fork(|| 1u8);
    append(&marks, "R");
    let _ = bombsquad::fork(|| unsafe { libc::strlen(std::ptr::null()) });
    append(&marks, "S");
    assert_eq!(
        std::fs::read_to_string(&marks).unwrap(),
        "PRS",
        "exactly one process continued"
    );
}

#[test]
fn atexit_handlers_run_only_when_the_function_calls_exit() {
    common::watchdog();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("atexit.log");
    ATEXIT_LOG.set(log.clone()).unwrap();
    PARENT.set(std::process::id()).unwrap();
    // SAFETY: registers a plain extern "C" function.
    assert_eq!(unsafe { libc::atexit(log_exit_in_child) }, 0);

    assert_eq!(bombsquad::fork(|| 5u8).unwrap(), 5);
    assert!(!log.exists(), "the library leaves with _exit");

    match bombsquad::fork(|| -> u8 { std::process::exit(0) }) {
        Err(Error::ZeroExitcodeWithoutPayload { .. }) => {}
        other => panic!("expected ZeroExitcodeWithoutPayload, got {other:?}"),
    }
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "atexit ran in a child\n",
        "std::process::exit in the function runs the parent's handlers (documented)"
    );
}
