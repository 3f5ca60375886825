//! The child's stdout and stderr: replayed into the caller's streams (so
//! libtest's capture sees them), kept as a bounded stderr tail, and sent
//! where the `stderr` option says (docs/FAULTS.md C9, H1, H6).
//!
//! What reaches the caller's real streams is observed from outside: this
//! binary runs itself again as a subprocess with a scenario selected.

#![allow(
    clippy::undocumented_unsafe_blocks,
    reason = "the children write to their descriptors with libc on purpose"
)]

mod common;

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Output, Stdio};

use bombsquad::{Error, Isolate, NonzeroExitcode, Stderr, bombsquad};

const SCENARIO: &str = "BOMBSQUAD_TEST_OUTPUT_SCENARIO";

#[bombsquad]
fn spawned_prints() -> u8 {
    println!("SPAWN-STDOUT-MARKER");
    eprintln!("SPAWN-STDERR-MARKER");
    1
}

#[bombsquad(start_method = "fork")]
fn forked_prints() -> u8 {
    println!("FORK-STDOUT-MARKER");
    eprintln!("FORK-STDERR-MARKER");
    2
}

/// C's stdio buffers a pipe fully; the child flushes it before `_exit`.
#[bombsquad]
fn c_printf_without_newline() -> u8 {
    unsafe { libc::printf(c"C-PRINTF-MARKER".as_ptr()) };
    3
}

#[bombsquad(start_method = "fork")]
fn forked_c_printf() -> u8 {
    unsafe { libc::printf(c"CHILD-C-MARKER;".as_ptr()) };
    6
}

#[bombsquad(start_method = "fork")]
fn forked_quiet() -> u8 {
    7
}

#[bombsquad]
fn writes_bytes_that_are_not_utf8() -> u8 {
    std::io::stdout()
        .write_all(b"<\xff\xfe\xe2\x82\xac>")
        .unwrap();
    4
}

#[bombsquad(stderr = "capture")]
fn captured_then_exits() -> u8 {
    eprintln!("CAPTURED-STDERR-MARKER");
    std::process::exit(3)
}

#[bombsquad(stderr = "null")]
fn discarded_then_exits() -> u8 {
    eprintln!("DISCARDED-STDERR-MARKER");
    std::process::exit(3)
}

#[bombsquad]
fn inherited_then_exits() -> u8 {
    eprintln!("INHERITED-STDERR-MARKER");
    std::process::exit(3)
}

/// 1 GiB on stdout: the parent drains while the child writes (C9).
#[bombsquad(start_method = "fork", backend = "pipe")]
fn floods_stdout() -> u8 {
    let line = "x".repeat(1023);
    let mut out = std::io::stdout().lock();
    for _ in 0..(1 << 20) {
        writeln!(out, "{line}").unwrap();
    }
    5
}

fn run_scenario(name: &str, stdout: Stdio) -> Output {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "scenario", "--nocapture", "--test-threads=1"])
        .env(SCENARIO, name)
        .stdout(stdout)
        .output()
        .unwrap()
}

fn exit_error<T: std::fmt::Debug>(result: Result<T, Error>) -> NonzeroExitcode {
    match result {
        Err(Error::NonzeroExitcode(e)) => e,
        other => panic!("expected NonzeroExitcode, got {other:?}"),
    }
}

/// Runs only in the subprocesses started below.
#[test]
fn scenario() {
    let Some(name) = std::env::var_os(SCENARIO) else {
        return;
    };
    match name.to_str().unwrap() {
        "replay" => {
            println!("PARENT-BEFORE");
            assert_eq!(spawned_prints().unwrap(), 1);
            assert_eq!(forked_prints().unwrap(), 2);
            assert_eq!(c_printf_without_newline().unwrap(), 3);
            println!("PARENT-AFTER");
            assert_eq!(writes_bytes_that_are_not_utf8().unwrap(), 4);
        }
        "stderr-modes" => {
            assert_eq!(exit_error(captured_then_exits()).code(), Some(3));
            assert_eq!(exit_error(discarded_then_exits()).code(), Some(3));
            assert_eq!(exit_error(inherited_then_exits()).code(), Some(3));
        }
        "flood" => assert_eq!(floods_stdout().unwrap(), 5),
        "pending-c-stdio" => {
            // A pipe makes C buffer stdout fully: this stays in the
            // parent's buffer across both forks.
            unsafe { libc::printf(c"PARENT-PENDING-MARKER;".as_ptr()) };
            assert_eq!(forked_quiet().unwrap(), 7);
            assert_eq!(forked_c_printf().unwrap(), 6);
            unsafe { libc::fflush(std::ptr::null_mut()) };
        }
        other => panic!("unknown scenario {other}"),
    }
}

#[test]
fn child_output_is_replayed_into_the_callers_streams_in_order() {
    common::watchdog();
    let output = run_scenario("replay", Stdio::piped());
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let position = |marker: &str| {
        stdout
            .find(marker)
            .unwrap_or_else(|| panic!("{marker} missing from stdout:\n{stdout}"))
    };
    assert!(position("PARENT-BEFORE") < position("SPAWN-STDOUT-MARKER"));
    assert!(position("SPAWN-STDOUT-MARKER") < position("FORK-STDOUT-MARKER"));
    assert!(position("FORK-STDOUT-MARKER") < position("C-PRINTF-MARKER"));
    assert!(position("C-PRINTF-MARKER") < position("PARENT-AFTER"));
    assert!(stderr.contains("SPAWN-STDERR-MARKER\n"), "{stderr}");
    assert!(stderr.contains("FORK-STDERR-MARKER\n"), "{stderr}");
    assert!(!stdout.contains("STDERR-MARKER"), "stderr stays on stderr");
    // Bytes that are not UTF-8 pass through unchanged around valid text.
    let raw = output
        .stdout
        .windows(7)
        .any(|w| w == b"<\xff\xfe\xe2\x82\xac>");
    assert!(raw, "{stdout}");
}

/// What C's stdout held unwritten at the fork is the parent's: a forked
/// child must not flush it too (it did, printing it once per call).
#[test]
fn a_forked_child_does_not_print_the_parents_pending_c_output() {
    common::watchdog();
    let output = run_scenario("pending-c-stdio", Stdio::piped());
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.matches("PARENT-PENDING-MARKER;").count(),
        1,
        "{stdout}"
    );
    assert_eq!(stdout.matches("CHILD-C-MARKER;").count(), 1, "{stdout}");
}

#[test]
fn only_inherited_stderr_is_printed() {
    common::watchdog();
    let output = run_scenario("stderr-modes", Stdio::piped());
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("INHERITED-STDERR-MARKER"), "{stderr}");
    assert!(!stderr.contains("CAPTURED-STDERR-MARKER"), "{stderr}");
    assert!(!stderr.contains("DISCARDED-STDERR-MARKER"), "{stderr}");
}

#[test]
fn a_gigabyte_of_stdout_never_blocks_the_child() {
    common::watchdog();
    let output = run_scenario("flood", Stdio::null());
    assert!(output.status.success(), "{output:?}");
}

#[test]
fn the_stderr_tail_is_in_the_error_for_every_mode_but_null() {
    common::watchdog();
    let captured = exit_error(captured_then_exits());
    assert_eq!(captured.stderr_tail(), b"CAPTURED-STDERR-MARKER\n");
    assert_eq!(captured.report().stderr_dropped(), 0);
    let inherited = exit_error(inherited_then_exits());
    assert_eq!(inherited.stderr_tail(), b"INHERITED-STDERR-MARKER\n");
    let discarded = exit_error(discarded_then_exits());
    assert_eq!(discarded.stderr_tail(), b"");
}

#[test]
fn a_flooded_stderr_keeps_its_last_64_kib() {
    common::watchdog();
    let lines: u64 = 1 << 18; // 256 MiB of 1 KiB lines
    let err = exit_error(Isolate::new().stderr(Stderr::Capture).fork(|| -> u8 {
        let line = "y".repeat(1023);
        let mut err = std::io::stderr().lock();
        for _ in 0..lines {
            writeln!(err, "{line}").unwrap();
        }
        write!(err, "LAST").unwrap();
        std::process::exit(4)
    }));
    assert_eq!(err.code(), Some(4));
    let tail = err.stderr_tail();
    assert_eq!(tail.len(), 64 * 1024);
    assert!(tail.ends_with(b"y\nLAST"));
    assert_eq!(
        err.report().stderr_dropped(),
        lines * 1024 + 4 - 64 * 1024,
        "every byte is counted"
    );
}

#[test]
fn stderr_to_a_file_is_appended_private_and_kept() {
    common::watchdog();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("child.log");
    let options = Isolate::new().stderr(Stderr::File(path.clone()));
    for round in 0..2 {
        let err = exit_error(options.fork(move || -> u8 {
            // Not `eprintln!`: libtest's capture, copied into a forked child,
            // would swallow it (docs/FAULTS.md H1).
            writeln!(std::io::stderr(), "round {round}").unwrap();
            std::process::exit(6)
        }));
        assert_eq!(err.stderr_tail(), format!("round {round}\n").as_bytes());
    }
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "round 0\nround 1\n"
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn an_unopenable_stderr_file_is_a_spawn_error() {
    common::watchdog();
    let missing = std::path::PathBuf::from("/nonexistent-dir/child.log");
    match Isolate::new().stderr(Stderr::File(missing)).fork(|| 1u8) {
        Err(Error::Spawn { what, source }) => {
            assert_eq!(
                what,
                "open /nonexistent-dir/child.log for the child's stderr"
            );
            assert_eq!(source.raw_os_error(), Some(libc::ENOENT));
        }
        other => panic!("expected Error::Spawn, got {other:?}"),
    }
}

#[test]
fn reports_name_the_function_and_its_costs() {
    common::watchdog();
    let err = exit_error(inherited_then_exits());
    assert_eq!(err.function(), Some("inherited_then_exits"));
    assert!(err.peak_rss().unwrap() > 0);
    assert!(err.wall_time() > std::time::Duration::ZERO);
    let text = err.to_string();
    let expected = format!(
        "inherited_then_exits (pid {}) exited with code 3, after ",
        err.pid()
    );
    assert!(text.starts_with(&expected), "{text}");
    assert!(text.contains(", peak RSS "), "{text}");
    let closure = exit_error(bombsquad::fork(|| -> u8 { std::process::exit(9) }));
    assert_eq!(closure.function(), None);
    assert!(closure.to_string().starts_with("the isolated call (pid "));
}
