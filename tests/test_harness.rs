//! libtest's harness around isolated tests, seen from outside: this binary
//! runs itself as a subprocess with libtest's flags and reads the output.
//!
//! The tests in `mod scenario` crash, abort or fail only when
//! `BOMBSQUAD_SCENARIO=crash` is set, so a normal `cargo test` or
//! `cargo nextest run` of this file passes. The drivers below set it, pick
//! the scenario tests with a filter (or not), and assert what libtest
//! printed: each crashing test `FAILED` with the signal named, the others
//! `ok`, the summary, exit code 101 (not a signal), and per-test capture.
//! Nothing in bombsquad reads libtest's arguments, so every flag is just
//! libtest's business; these runs prove it. `.ci/run` also runs the
//! scenario under the real `cargo nextest run`.

#![allow(
    clippy::undocumented_unsafe_blocks,
    reason = "crash tests call libc to fault on purpose"
)]

mod common;

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};

const SCENARIO: &str = "BOMBSQUAD_SCENARIO";

fn crash_wanted() -> bool {
    std::env::var_os(SCENARIO).is_some_and(|v| v == "crash")
}

mod scenario {
    use bombsquad::bombsquad;

    use super::crash_wanted;

    fn segfault() {
        if crash_wanted() {
            unsafe {
                libc::strlen(std::ptr::null());
            }
        }
    }

    #[bombsquad]
    #[test]
    fn segfaults_in_c() {
        println!("SCENARIO-CRASH-STDOUT");
        eprintln!("SCENARIO-CRASH-STDERR");
        segfault();
    }

    #[bombsquad(backend = "pipe")]
    #[test]
    fn aborts() {
        if crash_wanted() {
            std::process::abort();
        }
    }

    #[bombsquad]
    #[test]
    #[ignore = "crashes"]
    fn ignored_segfault() {
        segfault();
    }

    #[bombsquad]
    #[test]
    #[ignore]
    fn ignored_passes() {}

    #[bombsquad]
    #[test]
    fn passes() {
        println!("SCENARIO-PASS-STDOUT");
        eprintln!("SCENARIO-PASS-STDERR");
    }

    #[bombsquad(start_method = "fork", timeout = "30s")]
    #[test]
    fn passes_in_fork() {}

    /// docs/FAULTS.md H1: under capture, a forked child's `println!` is lost and
    /// its raw writes to fd 1 are kept.
    #[bombsquad(start_method = "fork", timeout = "30s")]
    #[test]
    fn fork_segfaults() {
        println!("SCENARIO-FORK-PRINTLN");
        let raw = b"SCENARIO-FORK-RAW\n";
        unsafe { libc::write(1, raw.as_ptr().cast(), raw.len()) };
        segfault();
    }

    #[bombsquad]
    #[test]
    fn returns_err() -> Result<(), String> {
        if crash_wanted() {
            return Err("SCENARIO-ERR".to_owned());
        }
        Ok(())
    }

    /// `#[test]` first: an ordinary isolated function whose
    /// `Result<(), bombsquad::Error>` libtest takes as the test's result.
    #[test]
    #[bombsquad]
    fn test_above_bombsquad_segfaults() {
        segfault();
    }
}

/// The scenario's tests, as libtest names them.
const FAILING: [&str; 5] = [
    "scenario::aborts",
    "scenario::fork_segfaults",
    "scenario::returns_err",
    "scenario::segfaults_in_c",
    "scenario::test_above_bombsquad_segfaults",
];
const PASSING: [&str; 2] = ["scenario::passes", "scenario::passes_in_fork"];

/// What one run of this binary printed.
struct Run {
    output: Output,
    stdout: String,
    stderr: String,
}

impl Run {
    fn new(args: &[&str]) -> Self {
        common::watchdog();
        let output = Command::new(std::env::current_exe().unwrap())
            .args(args)
            .env(SCENARIO, "crash")
            .output()
            .unwrap();
        let run = Self {
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            output,
        };
        eprintln!(
            "=== {args:?}\n--- stdout\n{}\n--- stderr\n{}",
            run.stdout, run.stderr
        );
        run
    }

    /// libtest ran to its summary and failed: exit code 101, no signal.
    fn assert_failed_with_summary(&self) {
        assert_eq!(self.output.status.signal(), None);
        assert_eq!(self.output.status.code(), Some(101));
        assert!(self.stdout.contains("\ntest result: FAILED. "));
    }

    /// The names under the summary's `failures:` heading.
    fn failures(&self) -> BTreeSet<&str> {
        let list = self
            .stdout
            .rsplit_once("\nfailures:\n")
            .expect("a failures list")
            .1;
        list.lines()
            .take_while(|line| !line.is_empty())
            .map(str::trim)
            .collect()
    }

    /// `(passed, failed, ignored)` from `test result: FAILED. 2 passed; ...`.
    fn counts(&self) -> (u32, u32, u32) {
        let line = self
            .stdout
            .lines()
            .find(|line| line.starts_with("test result: "))
            .expect("a summary line");
        let count = |what: &str| -> u32 {
            let before = line.split_once(&format!(" {what}")).unwrap().0;
            before.rsplit([' ', '.']).next().unwrap().parse().unwrap()
        };
        (count("passed"), count("failed"), count("ignored"))
    }

    /// The `---- name stdout ----` section libtest prints for a test.
    fn section(&self, name: &str) -> &str {
        let heading = format!("---- {name} stdout ----\n");
        let start = self
            .stdout
            .find(&heading)
            .unwrap_or_else(|| panic!("no section for {name}"))
            + heading.len();
        let rest = &self.stdout[start..];
        let end = rest.find("\n---- ").unwrap_or(rest.len());
        let end = rest[..end].find("\n\nfailures:\n").unwrap_or(end);
        &rest[..end]
    }

    /// Whether libtest printed `test name ... <status>` on one line.
    fn status_line(&self, name: &str, status: &str) -> bool {
        self.stdout
            .lines()
            .any(|line| line == format!("test {name} ... {status}"))
    }

    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

fn set<'a>(names: impl IntoIterator<Item = &'a str>) -> BTreeSet<&'a str> {
    names.into_iter().collect()
}

/// The panic message of each crashed test, as libtest prints it under
/// `thread '<name>' (<tid>) panicked at <file:line:col>:`: exactly
/// `test <name> (pid <n>) was killed by <SIGNAL>: <meaning>, after ...`.
fn assert_crash_messages(text: &str) {
    for (name, what) in [
        (
            "scenario::segfaults_in_c",
            "SIGSEGV: segmentation fault, address 0x0 not mapped",
        ),
        ("scenario::aborts", "SIGABRT: aborted"),
        (
            "scenario::fork_segfaults",
            "SIGSEGV: segmentation fault, address 0x0 not mapped",
        ),
    ] {
        let heading = format!("thread '{name}' (");
        let start = text
            .find(&heading)
            .unwrap_or_else(|| panic!("{name} did not panic"));
        let message = text[start..].lines().nth(1).unwrap();
        let short_name = name.strip_prefix("scenario::").unwrap();
        let pid = message
            .strip_prefix(&format!("test {short_name} (pid "))
            .and_then(|rest| rest.split_once(')'))
            .and_then(|(pid, rest)| Some((pid.parse::<u32>().ok()?, rest)));
        let Some((_, rest)) = pid else {
            panic!("{name}: {message:?}")
        };
        let expected = format!(" was killed by {what}, after ");
        assert!(rest.starts_with(&expected), "{name}: {message:?}");
    }
}

fn skip_when_nested() -> bool {
    // In the subprocess, the drivers have nothing to do.
    crash_wanted()
}

#[test]
fn filter_and_default_threads() {
    if skip_when_nested() {
        return;
    }
    let run = Run::new(&["scenario::"]);
    run.assert_failed_with_summary();
    assert_eq!(run.failures(), set(FAILING));
    assert_eq!(run.counts(), (2, 5, 2));
    for name in PASSING {
        assert!(run.status_line(name, "ok"), "{name}");
    }
    for name in FAILING {
        assert!(run.status_line(name, "FAILED"), "{name}");
    }
    assert!(run.status_line("scenario::ignored_segfault", "ignored, crashes"));
    assert!(run.status_line("scenario::ignored_passes", "ignored"));
    assert_crash_messages(&run.stdout);

    // Capture: a failing test's child output is in its section, a passing
    // test's is nowhere.
    let crash = run.section("scenario::segfaults_in_c");
    assert!(crash.contains("SCENARIO-CRASH-STDOUT\n"), "{crash}");
    assert_eq!(
        crash.matches("SCENARIO-CRASH-STDERR").count(),
        1,
        "the child's stderr once, not again in the message: {crash}"
    );
    assert!(crash.contains("\n(its stderr is printed above)"), "{crash}");
    assert!(!run.all().contains("SCENARIO-PASS-STD"));

    // Fork mode (docs/FAULTS.md H1): raw writes are kept, `println!` is lost.
    let fork = run.section("scenario::fork_segfaults");
    assert!(fork.contains("SCENARIO-FORK-RAW\n"), "{fork}");
    assert!(!run.all().contains("SCENARIO-FORK-PRINTLN"));

    // A `Result` test fails as libtest fails it in-process.
    let err = run.section("scenario::returns_err");
    assert_eq!(err, "Error: \"SCENARIO-ERR\"\n");

    // `#[test]` above `#[bombsquad]`: the wrapper's `Err` is the result.
    let plain = run.section("scenario::test_above_bombsquad_segfaults");
    assert!(plain.starts_with("Error: NonzeroExitcode("), "{plain}");
    assert!(plain.contains("signal: 11"), "{plain}");
}

#[test]
fn one_test_thread() {
    if skip_when_nested() {
        return;
    }
    let run = Run::new(&["scenario::", "--test-threads=1"]);
    run.assert_failed_with_summary();
    assert_eq!(run.failures(), set(FAILING));
    assert_eq!(run.counts(), (2, 5, 2));
    for name in PASSING {
        assert!(run.status_line(name, "ok"), "{name}");
    }
    assert_crash_messages(&run.stdout);
}

#[test]
fn exact() {
    if skip_when_nested() {
        return;
    }
    let run = Run::new(&["scenario::segfaults_in_c", "--exact"]);
    run.assert_failed_with_summary();
    assert_eq!(run.failures(), set(["scenario::segfaults_in_c"]));
    assert_eq!(run.counts(), (0, 1, 0));
    assert!(run.stdout.contains("filtered out"));
    assert!(run.status_line("scenario::segfaults_in_c", "FAILED"));
}

#[test]
fn ignored_only() {
    if skip_when_nested() {
        return;
    }
    let run = Run::new(&["scenario::", "--ignored"]);
    run.assert_failed_with_summary();
    assert_eq!(run.failures(), set(["scenario::ignored_segfault"]));
    assert_eq!(run.counts(), (1, 1, 0));
    assert!(run.status_line("scenario::ignored_passes", "ok"));
    assert!(run.status_line("scenario::ignored_segfault", "FAILED"));
}

#[test]
fn include_ignored() {
    if skip_when_nested() {
        return;
    }
    let run = Run::new(&["scenario::", "--include-ignored"]);
    run.assert_failed_with_summary();
    let mut failing = set(FAILING);
    failing.insert("scenario::ignored_segfault");
    assert_eq!(run.failures(), failing);
    assert_eq!(run.counts(), (3, 6, 0));
    // The crashing ignored test is never reported ok.
    assert!(!run.status_line("scenario::ignored_segfault", "ok"));
    assert!(run.status_line("scenario::ignored_segfault", "FAILED"));
    let section = run.section("scenario::ignored_segfault");
    assert!(section.contains(") was killed by SIGSEGV: segmentation fault"));
}

fn no_capture(flag: &str) {
    let run = Run::new(&["scenario::", flag]);
    run.assert_failed_with_summary();
    assert_eq!(run.failures(), set(FAILING));
    assert_eq!(run.counts(), (2, 5, 2));
    // Output is not captured: the panic messages and the children's
    // output go straight to the streams, passing tests' too.
    assert_crash_messages(&run.stderr);
    let all = run.all();
    for marker in [
        "SCENARIO-CRASH-STDOUT\n",
        "SCENARIO-CRASH-STDERR\n",
        "SCENARIO-PASS-STDOUT\n",
        "SCENARIO-PASS-STDERR\n",
        "SCENARIO-FORK-RAW\n",
    ] {
        assert!(all.contains(marker), "{marker}");
    }
}

#[test]
fn nocapture() {
    if skip_when_nested() {
        return;
    }
    no_capture("--nocapture");
}

#[test]
fn no_capture_with_a_dash() {
    if skip_when_nested() {
        return;
    }
    no_capture("--no-capture");
}

#[test]
fn show_output() {
    if skip_when_nested() {
        return;
    }
    let run = Run::new(&["scenario::", "--show-output"]);
    run.assert_failed_with_summary();
    assert_eq!(run.failures(), set(FAILING));
    assert_eq!(run.counts(), (2, 5, 2));
    let passed = run.section("scenario::passes");
    assert!(passed.contains("SCENARIO-PASS-STDOUT\n"), "{passed}");
    assert!(passed.contains("SCENARIO-PASS-STDERR\n"), "{passed}");
}

#[test]
fn no_filter() {
    if skip_when_nested() {
        return;
    }
    // The drivers run too, and do nothing in the subprocess.
    let run = Run::new(&[]);
    run.assert_failed_with_summary();
    assert_eq!(run.failures(), set(FAILING));
    assert!(run.status_line("no_filter", "ok"));
    assert_crash_messages(&run.stdout);
}

/// What `cargo nextest run` does with a libtest binary: list the tests,
/// then run each in its own process with `--exact <name> --nocapture`
/// (`--ignored` for ignored ones). `.ci/run` runs the real nextest too.
#[test]
fn nextest_protocol() {
    if skip_when_nested() {
        return;
    }
    let list = Run::new(&["--list", "--format", "terse"]);
    assert_eq!(list.output.status.code(), Some(0));
    let ignored = Run::new(&["--list", "--format", "terse", "--ignored"]);
    let names = |run: &Run| -> BTreeSet<String> {
        run.stdout
            .lines()
            .filter_map(|line| line.strip_suffix(": test"))
            .filter(|name| name.starts_with("scenario::"))
            .map(str::to_owned)
            .collect()
    };
    let ignored = names(&ignored);
    assert_eq!(
        ignored,
        ["scenario::ignored_passes", "scenario::ignored_segfault"]
            .map(str::to_owned)
            .into()
    );
    for name in names(&list) {
        let mut args = vec![name.as_str(), "--exact", "--nocapture"];
        if ignored.contains(&name) {
            args.push("--ignored");
        }
        let run = Run::new(&args);
        assert_eq!(run.output.status.signal(), None, "{name}");
        let crashes = FAILING.contains(&name.as_str()) || name == "scenario::ignored_segfault";
        assert_eq!(
            run.output.status.code(),
            Some(if crashes { 101 } else { 0 }),
            "{name}"
        );
        assert!(run.stdout.contains("\nrunning 1 test\n"), "{name}");
    }
}
