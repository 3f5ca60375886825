//! The library's own diagnostics (the re-raise notice, the child's
//! backtrace, the fork-thread warning, a lost worker) go through `tracing`
//! at target `bombsquad`: redirected by a subscriber, silenced by its
//! filter, and on stderr as before when no subscriber is installed. Each
//! case runs as a scenario subprocess whose stderr the driver reads.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::scenario;

use bombsquad::bombsquad;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;

#[bombsquad]
fn panics() {
    panic!("on purpose");
}

#[bombsquad(start_method = "fork")]
fn forks_without_timeout() -> u8 {
    1
}

#[bombsquad(pool = 1)]
fn pooled_crash() {
    std::process::abort();
}

/// Where a subscriber writes: a buffer the scenario reads back.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Makes every kind of diagnostic happen once; the parent's own panic
/// hook is silenced so that only the library's lines remain.
fn provoke_every_diagnostic() {
    std::panic::set_hook(Box::new(|_| {}));
    assert!(std::panic::catch_unwind(panics).is_err());
    let _ = std::panic::take_hook();
    // libtest's main thread and this test's thread: a multi-threaded fork.
    assert_eq!(forks_without_timeout().unwrap(), 1);
    assert!(pooled_crash().is_err());
}

/// The lines the library prints on stderr when nobody subscribes.
const STDERR_LINES: [&str; 3] = [
    "bombsquad: panics (pid ",
    "child backtrace:\n",
    "bombsquad: warning: a fork-mode call without a timeout",
];

#[test]
fn redirected_scenario() {
    if !scenario::is("redirected_scenario") {
        return;
    }
    common::watchdog();
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(LevelFilter::INFO)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, provoke_every_diagnostic);
    let text = buffer.text();
    let lines: Vec<&str> = text.lines().collect();
    let find = |needle: &str| {
        lines
            .iter()
            .find(|line| line.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in {text}"))
    };
    let notice = find("panicked at tests/diagnostics.rs:");
    assert!(notice.contains(" WARN bombsquad: panics (pid "), "{notice}");
    assert!(notice.ends_with("; re-raising in the caller"), "{notice}");
    let backtrace = find("child backtrace (pid ");
    assert!(backtrace.contains(" WARN bombsquad: "), "{backtrace}");
    assert!(
        text.contains("diagnostics::panics"),
        "the frames follow: {text}"
    );
    let warning = find("warning: a fork-mode call without a timeout");
    assert!(warning.contains(" WARN bombsquad: "), "{warning}");
    let lost = find("pool worker (pid ");
    assert!(
        lost.contains(" INFO bombsquad: pool worker (pid "),
        "{lost}"
    );
    assert!(lost.ends_with(") lost"), "{lost}");
    eprintln!("SCENARIO PASSED");
}

#[test]
fn silenced_scenario() {
    if !scenario::is("silenced_scenario") {
        return;
    }
    common::watchdog();
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(LevelFilter::TRACE)
        .with_writer(move || writer.clone())
        .finish()
        .with(
            Targets::new()
                .with_default(LevelFilter::TRACE)
                .with_target("bombsquad", LevelFilter::OFF),
        );
    tracing::subscriber::with_default(subscriber, provoke_every_diagnostic);
    assert_eq!(buffer.text(), "");
    eprintln!("SCENARIO PASSED");
}

#[test]
fn unsubscribed_scenario() {
    if !scenario::is("unsubscribed_scenario") {
        return;
    }
    common::watchdog();
    provoke_every_diagnostic();
    eprintln!("SCENARIO PASSED");
}

/// Runs a scenario with backtraces on; returns its stderr.
fn run(name: &str) -> String {
    let mut command = scenario::command(name);
    command.env("RUST_BACKTRACE", "1");
    let output = scenario::run(command);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(stderr.contains("SCENARIO PASSED"), "{stderr}");
    stderr
}

/// Runs a scenario that installs a subscriber: nothing of the library's
/// may reach stderr.
fn assert_nothing_on_stderr(name: &str) {
    common::watchdog();
    let stderr = run(name);
    for line in STDERR_LINES {
        assert!(!stderr.contains(line), "{line:?} on stderr: {stderr}");
    }
}

#[test]
fn a_subscriber_receives_every_diagnostic_and_stderr_none() {
    assert_nothing_on_stderr("redirected_scenario");
}

#[test]
fn a_subscribers_filter_silences_every_diagnostic() {
    assert_nothing_on_stderr("silenced_scenario");
}

#[test]
fn without_a_subscriber_the_diagnostics_go_to_stderr() {
    common::watchdog();
    let stderr = run("unsubscribed_scenario");
    for line in STDERR_LINES {
        assert!(stderr.contains(line), "no {line:?} on stderr: {stderr}");
    }
    assert!(
        stderr.contains("panicked at tests/diagnostics.rs:"),
        "the child's location: {stderr}"
    );
    assert!(!stderr.contains("pool worker (pid "), "{stderr}");
}
