//! What `#[bombsquad]` on a `#[test]` expands to, on the parent's side: the
//! test body's outcome comes back from the child, and a child that crashed
//! or timed out fails the test with a panic that explains itself.
//!
//! Not public API: used by code that `#[bombsquad]` generates.

use std::fmt;

use isolate_runtime::Error;

/// How much of the child's stderr a failing test's panic message repeats.
const TAIL_IN_MESSAGE: usize = 4 << 10;

/// What a test body's result becomes in the child: `Ok`, or the `Debug` of
/// the error (computed in the child, so the error type needs no serde).
pub type TestOutcome = Result<(), String>;

/// The return types a test may have, as libtest accepts them: `()` and
/// `Result<(), E>` with `E: Debug`.
pub trait TestReturn {
    /// What the test function returns to libtest: `()`, or a `Result`
    /// whose error prints the child's `Debug` text verbatim.
    type Report;

    /// In the child: the body's result as it can cross the boundary.
    fn into_outcome(self) -> TestOutcome;

    /// In the parent: the child's outcome as the test's return value.
    fn report(outcome: TestOutcome) -> Self::Report;
}

impl TestReturn for () {
    type Report = ();

    fn into_outcome(self) -> TestOutcome {
        Ok(())
    }

    fn report(outcome: TestOutcome) {
        if let Err(message) = outcome {
            panic!("{message}");
        }
    }
}

impl<E: fmt::Debug> TestReturn for Result<(), E> {
    type Report = Result<(), TestFailure>;

    fn into_outcome(self) -> TestOutcome {
        self.map_err(|error| format!("{error:?}"))
    }

    fn report(outcome: TestOutcome) -> Self::Report {
        outcome.map_err(TestFailure)
    }
}

/// The `Err` a `Result`-returning isolated test gives back to libtest: its
/// `Debug` is the child's `Debug` of the original error, so libtest prints
/// `Error: ...` exactly as for an in-process test.
pub struct TestFailure(String);

impl fmt::Debug for TestFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The test's return value, or a panic naming what happened to the child:
/// "test parses_input (pid 42) was killed by SIGSEGV: segmentation fault,
/// ..." followed by the end of its stderr, unless that was replayed above
/// it already (`stderr = "inherit"`, the default). A panic in the child has
/// already been re-raised by the call (unless `panic = "error"`).
#[track_caller]
pub fn finish_test<R: TestReturn>(result: Result<TestOutcome, Error>) -> R::Report {
    match result {
        Ok(outcome) => R::report(outcome),
        Err(error) => panic!("{}", failure_message(&error)),
    }
}

fn failure_message(error: &Error) -> String {
    let report = match error {
        Error::NonzeroExitcode(e) => Some(e.report()),
        Error::Timeout { report, .. } | Error::StatusUnavailable { report, .. } => Some(&**report),
        _ => None,
    };
    let mut message = error.to_string();
    let Some(report) = report else {
        return message;
    };
    let tail = last_lines(report.stderr_tail(), TAIL_IN_MESSAGE);
    if tail.trim().is_empty() {
        return message;
    }
    if report.stderr_replayed() {
        // libtest shows what was replayed with the test's own output.
        message.push_str("\n(its stderr is printed above)");
    } else {
        message.push_str("\n--- the end of its stderr ---\n");
        message.push_str(tail.trim_end());
    }
    message
}

/// The last `limit` bytes of `bytes` or fewer, starting at a line when one
/// starts in them, as text.
fn last_lines(bytes: &[u8], limit: usize) -> std::borrow::Cow<'_, str> {
    let mut start = bytes.len().saturating_sub(limit);
    if start > 0
        && let Some(newline) = bytes[start..].iter().position(|&b| b == b'\n')
    {
        start += newline + 1;
    }
    String::from_utf8_lossy(&bytes[start..])
}

#[cfg(test)]
mod tests {
    use super::last_lines;

    #[test]
    fn tails_start_at_a_line() {
        assert_eq!(last_lines(b"one\ntwo\nthree\n", 9), "three\n");
        assert_eq!(last_lines(b"one\ntwo\n", 100), "one\ntwo\n");
        assert_eq!(last_lines(b"abcdef", 3), "def");
    }
}
