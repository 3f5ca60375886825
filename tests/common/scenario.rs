//! Scenarios: this test binary run again as a subprocess, with an
//! environment variable naming the one test to run, so that process-global
//! changes (signal dispositions, rlimits, threads holding locks) never touch
//! the libtest process itself.

use std::process::{Command, Output};

/// Names the scenario a subprocess runs.
pub const VAR: &str = "BOMBSQUAD_TEST_SCENARIO";

/// Whether this process was started to run the scenario test `name`; the
/// scenario's body runs only then (a normal test run skips it).
pub fn is(name: &str) -> bool {
    std::env::var(VAR).is_ok_and(|value| value == name)
}

/// A command that runs the test `name` (at the root of this test binary)
/// as a scenario, with libtest's capture off.
pub fn command(name: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(VAR, name);
    command
}

/// Runs `command` to the end and asserts the scenario passed; returns its
/// output.
pub fn run(mut command: Command) -> Output {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "scenario failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}
