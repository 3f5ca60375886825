//! The marker is not a door (docs/FAULTS.md I1, I2): a forged marker runs
//! nothing, and a marker inherited by a grandchild is ignored.

#![allow(
    clippy::undocumented_unsafe_blocks,
    reason = "crash tests call libc to fault on purpose"
)]

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::process::{Command, Output, Stdio};

use bombsquad::bombsquad;

const MARKER_VAR: &str = "BOMBSQUAD_CHILD";
const PROBE_LINE: &str = "PROBE: the normal main ran";

/// Runs this test binary with `marker` and `stdin`, selecting no test, so a
/// marker that was wrongly honoured cannot run the suite recursively.
fn run_self(marker: &str, stdin: Stdio) -> Output {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "no_such_test"])
        .env(MARKER_VAR, marker)
        .stdin(stdin)
        .output()
        .unwrap()
}

fn token_hex() -> &'static str {
    "00112233445566778899aabbccddeeff"
}

fn assert_refused(output: &Output, why: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("bombsquad: refusing to run an isolated call"),
        "{stderr}"
    );
    assert!(stderr.contains(why), "expected {why:?} in {stderr}");
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("running 0 tests"),
        "libtest must not start"
    );
}

#[test]
fn a_garbage_marker_is_refused() {
    common::watchdog();
    assert_refused(
        &run_self("garbage", Stdio::null()),
        "malformed marker: expected 5 fields, found 1",
    );
}

#[test]
fn a_marker_pointing_at_a_regular_file_is_refused() {
    common::watchdog();
    let me = std::process::id();
    let file = std::fs::File::open("/proc/self/exe").unwrap();
    let output = run_self(&format!("v1:{me}:0:1:{}", token_hex()), Stdio::from(file));
    assert_refused(&output, "channel descriptor 0 is not a socket");
}

#[test]
fn a_pipe_with_a_matching_token_is_refused() {
    common::watchdog();
    let me = std::process::id();
    let (reader, mut writer) = std::io::pipe().unwrap();
    // A well-formed token followed by junk, as an attacker with the env would send.
    writer
        .write_all(&[
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ])
        .unwrap();
    drop(writer);
    let output = run_self(&format!("v1:{me}:0:1:{}", token_hex()), Stdio::from(reader));
    assert_refused(&output, "channel descriptor 0 is not a socket");
}

#[test]
fn a_socket_with_the_wrong_token_is_refused() {
    common::watchdog();
    let me = std::process::id();
    let (ours, theirs) = UnixStream::pair().unwrap();
    (&ours).write_all(&[0xee; 16]).unwrap();
    let output = run_self(
        &format!("v1:{me}:0:1:{}", token_hex()),
        Stdio::from(std::os::fd::OwnedFd::from(theirs)),
    );
    assert_refused(&output, "the channel token does not match the marker");
}

#[test]
fn a_marker_naming_another_parent_is_ignored() {
    common::watchdog();
    let output = run_self(&format!("v1:1:0:1:{}", token_hex()), Stdio::null());
    assert_eq!(output.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("running 0 tests"),
        "the normal main ran"
    );
}

/// Prints a line only the normal (libtest) main of this binary can print.
#[test]
fn probe() {
    println!("{PROBE_LINE}");
}

/// Starts this binary again from inside an isolated call: the grandchild
/// inherits the marker, whose parent pid is not its parent's.
#[bombsquad]
fn start_myself_again() -> (Option<i32>, String) {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "probe", "--nocapture"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn a_marker_inherited_by_a_grandchild_is_ignored() {
    common::watchdog();
    let (code, stdout) = start_myself_again().unwrap();
    assert_eq!(code, Some(0));
    assert!(stdout.contains(PROBE_LINE), "{stdout}");
}
