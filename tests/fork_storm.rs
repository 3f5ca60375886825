//! Storms of fork-mode calls from many threads (docs/FAULTS.md D3): the
//! library never forks while it holds a lock a child could need. Its replay
//! of other calls' output (std's stdout/stderr and libtest's capture), its
//! re-raise of other calls' panics (std's backtrace lock, taken by the
//! default hook) and its own panic hook all run outside any fork.
//!
//! Each storm runs in a subprocess with its output piped or sent to a file,
//! as a user's program would; every call has a timeout, so a child stuck on
//! an inherited lock shows up as a `Timeout` instead of hanging the run.

mod common;

use std::fs::File;
use std::io::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::{Command, Stdio};
use std::time::Duration;

use bombsquad::{Error, Isolate};
use common::scenario;

const THREADS: usize = 8;
const CALLS: usize = 50;

/// Runs `call` `CALLS` times on each of `THREADS` threads and returns how
/// many calls timed out (a child that hung), failing on any other error.
fn storm(call: fn(usize) -> Result<usize, Error>) -> usize {
    let threads: Vec<_> = (0..THREADS)
        .map(|thread| {
            std::thread::spawn(move || {
                let mut hung = 0;
                for n in 0..CALLS {
                    match call(thread * CALLS + n) {
                        Ok(value) => assert_eq!(value, thread * CALLS + n),
                        Err(Error::Timeout { .. }) => hung += 1,
                        Err(other) => panic!("call {n} of thread {thread}: {other}"),
                    }
                }
                hung
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).sum()
}

fn with_timeout() -> Isolate {
    Isolate::new().timeout(Duration::from_secs(5))
}

/// A body that prints as the reported programs did: `println!`,
/// `eprintln!` and a locked `stderr` write.
fn printing_call(n: usize) -> Result<usize, Error> {
    with_timeout().fork(move || {
        println!("call {n} on stdout");
        eprintln!("call {n} on stderr");
        let mut stderr = std::io::stderr().lock();
        let _ = writeln!(stderr, "call {n} on a locked stderr");
        n
    })
}

/// A body that panics; the caller catches the re-raised panic, whose
/// printing (the default hook, with `RUST_BACKTRACE=1`) takes std's
/// backtrace lock while other threads fork.
fn panicking_call(n: usize) -> Result<usize, Error> {
    let raised = catch_unwind(AssertUnwindSafe(|| {
        with_timeout().fork(move || -> usize { panic!("storm panic {n}") })
    }));
    match raised {
        Ok(Err(error)) => Err(error),
        Ok(Ok(value)) => panic!("call {n} returned {value} instead of panicking"),
        Err(payload) => {
            let message = payload.downcast_ref::<String>().expect("a String payload");
            assert_eq!(message, &format!("storm panic {n}"));
            Ok(n)
        }
    }
}

#[test]
fn print_storm_scenario() {
    if !scenario::is("print_storm_scenario") {
        return;
    }
    common::watchdog();
    let hung = storm(printing_call);
    eprintln!("STORM DONE: {hung} hung");
}

#[test]
fn panic_storm_scenario() {
    if !scenario::is("panic_storm_scenario") {
        return;
    }
    common::watchdog();
    let hung = storm(panicking_call);
    eprintln!("STORM DONE: {hung} hung");
}

/// Where a storm's subprocess sends its output.
#[derive(Debug, Clone, Copy)]
enum Output {
    Piped,
    ToFile,
}

/// Runs the scenario `name` with `output`, and returns its stderr.
fn run_storm(name: &str, output: Output) -> String {
    let mut command: Command = scenario::command(name);
    command.env("RUST_BACKTRACE", "1");
    match output {
        Output::Piped => {
            let out = scenario::run(command);
            String::from_utf8_lossy(&out.stderr).into_owned()
        }
        Output::ToFile => {
            let dir = tempfile::tempdir().unwrap();
            let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
            let status = command
                .stdout(Stdio::from(File::create(&out_path).unwrap()))
                .stderr(Stdio::from(File::create(&err_path).unwrap()))
                .status()
                .unwrap();
            let stderr = std::fs::read_to_string(&err_path).unwrap();
            assert!(status.success(), "{name} {output:?}: {status}\n{stderr}");
            stderr
        }
    }
}

fn assert_no_call_hung(name: &str) {
    for round in 0..3 {
        for output in [Output::Piped, Output::ToFile] {
            let stderr = run_storm(name, output);
            assert!(
                stderr.contains("STORM DONE: 0 hung"),
                "{name}, round {round}, {output:?}: {}",
                stderr
                    .lines()
                    .filter(|l| l.contains("STORM"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
}

#[test]
fn threads_that_print_from_fork_mode_calls_never_hang() {
    common::watchdog();
    assert_no_call_hung("print_storm_scenario");
}

#[test]
fn threads_whose_fork_mode_calls_panic_never_hang() {
    common::watchdog();
    assert_no_call_hung("panic_storm_scenario");
}
