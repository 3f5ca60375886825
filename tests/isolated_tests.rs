//! `#[bombsquad]` on `#[test]` functions: the test body runs in a child; a
//! crash, an abort or a timeout fails that test with a message naming what
//! happened; a panic fails it as in-process; `Result` tests work; attribute
//! order does not matter.
//!
//! Failing tests cannot be asserted from inside one harness, so the crashes
//! here are `#[should_panic(expected = ..)]`: the test passes only if the
//! crash became a panic with that message. What a real failure looks like in
//! libtest's output (FAILED, the summary, exit code 101, ignored tests,
//! capture) is asserted by running a test binary in `tests/test_harness.rs`.

#![allow(
    clippy::undocumented_unsafe_blocks,
    reason = "crash tests call libc to fault on purpose"
)]

use std::path::PathBuf;

use bombsquad::bombsquad;

/// Whether this process was started by a process running the same
/// executable: true in an isolated child (spawned or forked), false in a
/// test run in-process (its parent is cargo, nextest or a shell).
fn in_child() -> bool {
    let exe = |pid: &str| std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    let parent = std::os::unix::process::parent_id().to_string();
    let mine: Option<PathBuf> = exe("self");
    mine.is_some() && mine == exe(&parent)
}

fn segfault() {
    unsafe {
        libc::strlen(std::ptr::null());
    }
}

// Both orders, forkserver mode (the default).

#[bombsquad]
#[test]
fn bombsquad_above_test() {
    assert!(in_child());
}

#[test]
#[bombsquad]
fn bombsquad_below_test() {
    assert!(in_child());
}

#[bombsquad]
#[test]
#[should_panic(
    expected = "was killed by SIGSEGV: segmentation fault, address 0x0 not mapped, after "
)]
fn crash_above_test() {
    segfault();
}

#[test]
#[bombsquad]
#[should_panic(
    expected = "was killed by SIGSEGV: segmentation fault, address 0x0 not mapped, after "
)]
fn crash_below_test() {
    segfault();
}

#[should_panic(
    expected = "was killed by SIGSEGV: segmentation fault, address 0x0 not mapped, after "
)]
#[test]
#[bombsquad]
fn crash_below_test_should_panic_first() {
    segfault();
}

#[bombsquad]
#[should_panic(expected = "was killed by SIGABRT: aborted, after ")]
#[test]
fn abort_fails_the_test() {
    std::process::abort();
}

#[bombsquad(stderr = "capture")]
#[test]
#[should_panic(expected = "\n--- the end of its stderr ---\nabout to crash")]
fn a_captured_stderr_ends_the_message() {
    eprintln!("about to crash");
    segfault();
}

/// A replayed stderr is shown by libtest with the test's output already:
/// the message points there instead of repeating it.
#[bombsquad]
#[test]
#[should_panic(expected = "after ")]
fn a_replayed_stderr_is_not_repeated_in_the_message() {
    eprintln!("about to crash");
    segfault();
}

#[test]
fn a_replayed_stderr_is_pointed_to() {
    let failure = std::panic::catch_unwind(a_replayed_stderr_is_not_repeated_in_the_message);
    let payload = failure.expect_err("the test fails");
    let message = payload.downcast_ref::<String>().unwrap();
    assert!(
        message.ends_with("\n(its stderr is printed above)"),
        "{message}"
    );
    assert!(!message.contains("about to crash"), "{message}");
}

#[bombsquad]
#[test]
#[should_panic(expected = "test the_message_names_the_test (pid ")]
fn the_message_names_the_test() {
    std::process::exit(3);
}

#[bombsquad]
#[test]
#[should_panic(expected = ") exited with code 3, after ")]
fn an_exit_code_fails_the_test() {
    std::process::exit(3);
}

// A panic in the child fails the test as in-process.

#[bombsquad]
#[test]
#[should_panic]
fn should_panic_without_expected() {
    panic!("anything");
}

#[bombsquad]
#[test]
#[should_panic(expected = "the child's own message")]
fn should_panic_with_expected() {
    assert!(in_child());
    panic!("the child's own message: {}", 42);
}

#[bombsquad(start_method = "fork", timeout = "30s")]
#[test]
#[should_panic(expected = "the forked child's message")]
fn should_panic_in_a_forked_child() {
    assert!(in_child());
    panic!("the forked child's message");
}

// Options, paths, returns.

#[bombsquad(start_method = "fork", backend = "pipe", timeout = "30s")]
#[test]
fn fork_mode_test() {
    assert!(in_child());
}

#[bombsquad(start_method = "fork", timeout = "30s")]
#[test]
#[should_panic(expected = "was killed by SIGSEGV: segmentation fault")]
fn fork_mode_crash() {
    segfault();
}

#[bombsquad(timeout = "300ms")]
#[test]
#[should_panic(expected = ") did not finish within 300ms; its process group was killed (CPU time ")]
fn timeout_fails_a_hanging_test() {
    std::thread::sleep(std::time::Duration::from_secs(60));
}

#[bombsquad(backend = "pipe")]
#[::core::prelude::v1::test]
fn fully_qualified_core_path() {
    assert!(in_child());
}

#[bombsquad]
#[std::prelude::rust_2024::test]
fn std_prelude_path() {
    assert!(in_child());
}

#[bombsquad]
#[test]
fn returns_ok() -> Result<(), std::io::Error> {
    assert!(in_child());
    std::fs::metadata("/proc/self")?;
    Ok(())
}

#[bombsquad]
#[test]
fn returns_ok_with_a_non_serde_error() -> Result<(), Box<dyn std::error::Error>> {
    let number: i32 = "42".parse()?;
    assert_eq!(number, 42);
    Ok(())
}

#[bombsquad]
#[test]
#[ignore = "proves `#[ignore = ..]` stays on the test"]
fn ignored_with_a_reason() {
    // Passes under --include-ignored; test_harness.rs has a crashing one.
    assert!(in_child());
}

/// Doc comments and lint attributes stay.
#[bombsquad]
#[test]
#[allow(clippy::unit_cmp)]
fn attributes_stay() {
    assert_eq!((), ());
}

mod shadowed {
    use bombsquad::bombsquad;

    // A `test` that is not libtest's: the expansion names
    // `::core::prelude::v1::test`, so this cannot capture it.
    #[allow(unused_macros)]
    macro_rules! test {
        () => {};
    }

    #[bombsquad]
    #[test]
    fn test_is_shadowed() {
        assert!(super::in_child());
    }
}

/// The control for `in_child`: false for a test that is not isolated.
#[test]
fn a_plain_test_runs_in_process() {
    assert!(!in_child());
}
