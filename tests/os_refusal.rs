//! The OS refusing a descriptor gives `Error::Spawn` with the OS error, and
//! the next call works once descriptors are free again. Lowering the fd
//! limit is process-global, so it happens in a scenario: this binary run
//! again as a subprocess, never in the libtest process itself.

#![allow(
    clippy::undocumented_unsafe_blocks,
    reason = "the scenario sets an rlimit with libc"
)]

mod common;

use std::fs::File;
use std::process::Command;

use bombsquad::{Backend, Error, Isolate, bombsquad};

const SCENARIO: &str = "BOMBSQUAD_TEST_FD_EXHAUSTION";

#[bombsquad(backend = "pipe")]
fn spawned() -> u8 {
    7
}

/// Opens `/dev/null` until the descriptor table is full.
fn exhaust_descriptors() -> Vec<File> {
    let limit = libc::rlimit {
        rlim_cur: 64,
        rlim_max: 64,
    };
    assert_eq!(
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit) },
        0
    );
    std::iter::from_fn(|| File::open("/dev/null").ok()).collect()
}

fn spawn_error<T: std::fmt::Debug>(result: Result<T, Error>) -> (String, Option<i32>) {
    match result {
        Err(Error::Spawn { what, source }) => (what, source.raw_os_error()),
        other => panic!("expected Error::Spawn, got {other:?}"),
    }
}

/// The scenario: runs only in the subprocess started below.
#[test]
fn fd_exhaustion_scenario() {
    if std::env::var_os(SCENARIO).is_none() {
        return;
    }
    let held = exhaust_descriptors();
    let pipe = Isolate::new().backend(Backend::Pipe);
    assert_eq!(
        spawn_error(pipe.fork(|| 1u8)),
        ("create the reply pipe".to_owned(), Some(libc::EMFILE))
    );
    assert_eq!(spawn_error(spawned()).1, Some(libc::EMFILE));
    drop(held);
    assert_eq!(pipe.fork(|| 1u8).unwrap(), 1);
    assert_eq!(spawned().unwrap(), 7);
    println!("SCENARIO PASSED");
}

#[test]
fn descriptor_exhaustion_is_a_spawn_error() {
    common::watchdog();
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "fd_exhaustion_scenario", "--nocapture"])
        .env(SCENARIO, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("SCENARIO PASSED"), "{stdout}");
}
