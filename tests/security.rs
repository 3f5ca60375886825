//! The marker is not a door (docs/FAULTS.md I1, I2, I3): a forged marker
//! runs nothing, a marker inherited by a grandchild is ignored, and a
//! set-user-ID copy of the binary honours none. Nor is
//! there a socket to knock on (I6): nothing of a call listens.

#![allow(
    clippy::undocumented_unsafe_blocks,
    reason = "crash tests call libc to fault on purpose"
)]

mod common;

use std::fs::Permissions;
use std::io::Write;
use std::os::unix::fs::PermissionsExt as _;
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

/// I3: a set-user-ID copy of this binary that another user runs is a
/// secure exec, and refuses its marker before anything else. Skipped, with
/// the reason printed, without root and `setpriv` (util-linux).
#[test]
fn a_setuid_copy_refuses_to_run_an_isolated_call() {
    common::watchdog();
    if !common::can_run_as_another_uid() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), Permissions::from_mode(0o755)).unwrap();
    let copy = dir.path().join("setuid-copy");
    std::fs::copy(std::env::current_exe().unwrap(), &copy).unwrap();
    std::fs::set_permissions(&copy, Permissions::from_mode(0o4755)).unwrap();
    let output = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(&copy)
        .args(["--exact", "no_such_test"])
        .env(MARKER_VAR, format!("v1:1:0:1:{}", token_hex()))
        .stdin(Stdio::null())
        .current_dir("/")
        .output()
        .unwrap();
    assert_refused(&output, "the binary runs as a secure exec (setuid, setcap)");
}

/// The inodes of the Unix sockets that listen (`__SO_ACCEPTCON` in
/// `/proc/net/unix`'s flags) and are held by one of `pids`.
fn listening_sockets_of(pids: &[u32]) -> Vec<String> {
    const ACCEPTING: u32 = 1 << 16;
    let table = std::fs::read_to_string("/proc/net/unix").unwrap();
    let listening: Vec<&str> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = u32::from_str_radix(fields.get(3)?, 16).ok()?;
            let inode = *fields.get(6)?;
            (flags & ACCEPTING != 0).then_some(inode)
        })
        .collect();
    let mut held = Vec::new();
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let target = std::fs::read_link(fd.path()).unwrap_or_default();
            let target = target.to_string_lossy();
            if let Some(inode) = target
                .strip_prefix("socket:[")
                .and_then(|rest| rest.strip_suffix(']'))
                && listening.contains(&inode)
            {
                held.push(format!("pid {pid}: {target}"));
            }
        }
    }
    held
}

/// The listening sockets of this child and of its parent: the caller, or
/// the fork server that forked it.
fn listening_here_and_above() -> Vec<String> {
    listening_sockets_of(&[std::process::id(), std::os::unix::process::parent_id()])
}

#[bombsquad(start_method = "spawn")]
fn listening_from_a_spawned_child() -> Vec<String> {
    listening_here_and_above()
}

#[bombsquad(start_method = "forkserver")]
fn listening_from_a_fork_server_child() -> Vec<String> {
    listening_here_and_above()
}

#[bombsquad(start_method = "fork")]
fn listening_from_a_forked_child() -> Vec<String> {
    listening_here_and_above()
}

#[bombsquad(pool = 1)]
fn listening_from_a_warm_worker() -> Vec<String> {
    listening_here_and_above()
}

#[test]
fn no_process_of_a_call_listens_on_a_socket() {
    common::watchdog();
    let none: Vec<String> = Vec::new();
    assert_eq!(listening_from_a_spawned_child().unwrap(), none);
    assert_eq!(listening_from_a_fork_server_child().unwrap(), none);
    assert_eq!(listening_from_a_forked_child().unwrap(), none);
    assert_eq!(listening_from_a_warm_worker().unwrap(), none);
    assert_eq!(listening_sockets_of(&[std::process::id()]), none);
    // The check sees a listener when there is one.
    let dir = tempfile::tempdir().unwrap();
    let listener = std::os::unix::net::UnixListener::bind(dir.path().join("door")).unwrap();
    assert_eq!(listening_sockets_of(&[std::process::id()]).len(), 1);
    drop(listener);
}
