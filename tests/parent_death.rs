//! Parent death and signals (docs/FAULTS.md F1, F2, F4, F10, G4): a child never
//! outlives its parent, Ctrl-C at a terminal reaches the parent only, a
//! panicking parent leaves nothing behind, and the child starts with the
//! signal state an exec'd process would have. Every process-global change
//! happens in a scenario subprocess (this binary run again).

#![allow(
    clippy::undocumented_unsafe_blocks,
    reason = "scenarios change signal state and descriptors with libc"
)]

mod common;

use common::scenario;

use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

use bombsquad::{Backend, Error, Isolate, bombsquad};

const MODES: [&str; 2] = ["fork", "spawn"];

/// Writes this process's pid to `pid_file`, then waits (at most 10 s) for
/// `go_file` to appear.
fn announce_and_wait(pid_file: &Path, go_file: &Path) -> u8 {
    let tmp = pid_file.with_extension("tmp");
    std::fs::write(&tmp, std::process::id().to_string()).unwrap();
    std::fs::rename(&tmp, pid_file).unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while !go_file.exists() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    42
}

#[bombsquad(backend = "pipe")]
fn announce_and_wait_spawned(pid_file: PathBuf, go_file: PathBuf) -> u8 {
    announce_and_wait(&pid_file, &go_file)
}

fn call_announce_and_wait(mode: &str, pid_file: &Path, go_file: &Path) -> Result<u8, Error> {
    if mode == "fork" {
        Isolate::new()
            .backend(Backend::Pipe)
            .fork(|| announce_and_wait(pid_file, go_file))
    } else {
        announce_and_wait_spawned(pid_file.to_owned(), go_file.to_owned())
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn record_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Installs `handler` for `signal` without SA_RESTART, or SIG_DFL.
fn set_handler(signal: libc::c_int, handler: Option<extern "C" fn(libc::c_int)>) {
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = handler.map_or(libc::SIG_DFL, |h| h as libc::sighandler_t);
    assert_eq!(
        unsafe { libc::sigaction(signal, &raw const action, std::ptr::null_mut()) },
        0
    );
}

/// The scenario behind F1 and F2: one call that announces its pid and
/// waits; the scenario prints how the call ended.
#[test]
fn waiting_call_scenario() {
    if !scenario::is("waiting_call_scenario") {
        return;
    }
    common::watchdog();
    let var = |name| PathBuf::from(std::env::var_os(name).unwrap());
    let handle_sigint = std::env::var_os("HANDLE_SIGINT").is_some();
    // A terminal's Ctrl-C kills a host with the default disposition (which
    // a background shell may have replaced with SIG_IGN).
    set_handler(
        libc::SIGINT,
        handle_sigint.then_some(record_sigint as extern "C" fn(libc::c_int)),
    );
    let mode = std::env::var("MODE").unwrap();
    let result = call_announce_and_wait(&mode, &var("PID_FILE"), &var("GO_FILE"));
    eprintln!(
        "interrupted={} result={result:?}",
        INTERRUPTED.load(Ordering::SeqCst)
    );
}

/// A scenario waiting in a call, in its own process group, and its child.
struct Waiting {
    scenario: std::process::Child,
    child_pid: u32,
    child_start: String,
    go_file: PathBuf,
    _dir: tempfile::TempDir,
}

fn start_waiting_call(mode: &str, handle_sigint: bool) -> Waiting {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let go_file = dir.path().join("go");
    let mut command = scenario::command("waiting_call_scenario");
    command
        .env("MODE", mode)
        .env("PID_FILE", &pid_file)
        .env("GO_FILE", &go_file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    if handle_sigint {
        command.env("HANDLE_SIGINT", "1");
    }
    let scenario = command.spawn().unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    let child_pid = loop {
        if let Ok(pid) = std::fs::read_to_string(&pid_file) {
            break pid.parse().unwrap();
        }
        assert!(Instant::now() < until, "the child never announced itself");
        std::thread::sleep(Duration::from_millis(5));
    };
    let child_start = stat_field(child_pid, STARTTIME).expect("the child is running");
    Waiting {
        scenario,
        child_pid,
        child_start,
        go_file,
        _dir: dir,
    }
}

/// Fields of `/proc/<pid>/stat`, counted from the state (field 3).
const STATE: usize = 0;
const PGRP: usize = 2;
const STARTTIME: usize = 19;

fn stat_field(pid: u32, index: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(index).map(str::to_owned)
}

/// Whether the process that had `pid` and started at `start` has ended: it
/// is gone, a zombie (its new parent may be slow to reap it), or the pid
/// now belongs to another process.
fn has_ended(pid: u32, start: &str) -> bool {
    match (stat_field(pid, STATE), stat_field(pid, STARTTIME)) {
        (Some(state), Some(started)) => state == "Z" || state == "X" || started != start,
        _ => true,
    }
}

/// Waits at most 2 s for the child to end; returns how long it took.
fn assert_ends_soon(pid: u32, start: &str) -> Duration {
    let since = Instant::now();
    while !has_ended(pid, start) {
        assert!(
            since.elapsed() < Duration::from_secs(2),
            "child {pid} outlived its parent by 2 s"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    since.elapsed()
}

#[test]
fn the_child_dies_with_a_sigkilled_parent() {
    common::watchdog();
    for mode in MODES {
        let mut waiting = start_waiting_call(mode, false);
        waiting.scenario.kill().unwrap(); // SIGKILL: no cleanup runs in the parent
        let status = waiting.scenario.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{mode}");
        let took = assert_ends_soon(waiting.child_pid, &waiting.child_start);
        assert!(took < Duration::from_secs(1), "{mode}: {took:?}");
    }
}

#[test]
fn ctrl_c_at_a_terminal_kills_the_parent_and_the_child_follows() {
    common::watchdog();
    for mode in MODES {
        let mut waiting = start_waiting_call(mode, false);
        let group = waiting.scenario.id().cast_signed();
        // The child leads a process group of its own, so the terminal's
        // SIGINT (sent to the foreground group) does not reach it.
        assert_eq!(
            stat_field(waiting.child_pid, PGRP),
            Some(waiting.child_pid.to_string()),
            "{mode}"
        );
        assert_eq!(unsafe { libc::kill(-group, libc::SIGINT) }, 0);
        let status = waiting.scenario.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGINT), "{mode}");
        assert_ends_soon(waiting.child_pid, &waiting.child_start);
    }
}

#[test]
fn a_host_that_handles_ctrl_c_keeps_its_call() {
    common::watchdog();
    for mode in MODES {
        let waiting = start_waiting_call(mode, true);
        let group = waiting.scenario.id().cast_signed();
        assert_eq!(unsafe { libc::kill(-group, libc::SIGINT) }, 0);
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !has_ended(waiting.child_pid, &waiting.child_start),
            "{mode}: the child got the parent's SIGINT"
        );
        std::fs::write(&waiting.go_file, "").unwrap();
        let output = waiting.scenario.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{mode}: {stderr}");
        assert!(
            stderr.contains("interrupted=true result=Ok(42)"),
            "{mode}: {stderr}"
        );
    }
}

/// Writes its pid to `pid_file` (when given), then a line to stdout, then
/// sleeps: the parent panics relaying that line (its stdout is broken).
fn print_and_wait(pid_file: Option<&Path>) -> u8 {
    if let Some(pid_file) = pid_file {
        std::fs::write(pid_file, std::process::id().to_string()).unwrap();
    }
    // A raw write: the child's own std stdout lock plays no part.
    unsafe { libc::write(1, b"line\n".as_ptr().cast(), 5) };
    std::thread::sleep(Duration::from_secs(30));
    0
}

#[bombsquad(backend = "file")]
fn print_and_wait_spawned(pid_file: Option<PathBuf>) -> u8 {
    print_and_wait(pid_file.as_deref())
}

fn call_print_and_wait(mode: &str, pid_file: Option<&Path>) -> Result<u8, Error> {
    if mode == "fork" {
        Isolate::new().fork(|| print_and_wait(pid_file))
    } else {
        print_and_wait_spawned(pid_file.map(Path::to_owned))
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

/// The scenario behind F4 and G4: stdout is a pipe nobody reads, so the
/// parent panics in `print!` while relaying the child's output: a real
/// panic in the middle of a call.
#[test]
fn parent_panics_scenario() {
    if !scenario::is("parent_panics_scenario") {
        return;
    }
    common::watchdog();
    std::panic::set_hook(Box::new(|_| {})); // 500 panics, quietly
    let saved_stdout = unsafe { libc::dup(1) };
    let mut ends = [0; 2];
    assert_eq!(unsafe { libc::pipe(ends.as_mut_ptr()) }, 0);
    unsafe {
        libc::close(ends[0]);
        libc::dup2(ends[1], 1);
        libc::close(ends[1]);
    }
    let dir = tempfile::tempdir().unwrap();

    // F4: the closure form, in a thread that panics mid-call.
    for mode in MODES {
        let pid_file = dir.path().join(mode);
        let thread = std::thread::spawn({
            let pid_file = pid_file.clone();
            move || call_print_and_wait(mode, Some(&pid_file))
        });
        let payload = thread.join().expect_err("the parent should have panicked");
        assert!(
            panic_message(payload.as_ref()).starts_with("failed printing to stdout"),
            "{mode}: {}",
            panic_message(payload.as_ref())
        );
        let pid: u32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
        assert!(!common::process_exists(pid), "{mode}: child {pid} survived");
    }

    // G4: 500 calls abandoned by a panic; nothing accumulates.
    let fds = common::open_fds();
    for i in 0..550 {
        let mode = if i < 500 { "fork" } else { "spawn" };
        let result = std::panic::catch_unwind(|| call_print_and_wait(mode, None));
        assert!(result.is_err(), "call {i} returned {result:?}");
    }
    assert_eq!(common::open_fds(), fds, "descriptors leaked");
    assert_eq!(common::zombie_children(), Vec::<i32>::new(), "zombies");
    assert_eq!(common::call_children(std::process::id()), Vec::new());

    unsafe { libc::dup2(saved_stdout, 1) };
    unsafe { libc::close(saved_stdout) };
    eprintln!("SCENARIO PASSED");
}

#[test]
fn a_parent_that_panics_mid_call_leaves_no_child_no_zombie_no_fd() {
    common::watchdog();
    let output = scenario::run(scenario::command("parent_panics_scenario"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("SCENARIO PASSED"), "{stderr}");
}

static USR1_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn write_to_pipe(_: libc::c_int) {
    let fd = USR1_PIPE.load(Ordering::SeqCst);
    unsafe { libc::write(fd, b"!".as_ptr().cast(), 1) };
}

/// `SigBlk` (of the calling thread), `SigIgn` and `SigCgt`.
fn signal_masks() -> [u64; 3] {
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    ["SigBlk:", "SigIgn:", "SigCgt:"].map(|key| {
        let line = status.lines().find_map(|l| l.strip_prefix(key)).unwrap();
        u64::from_str_radix(line.trim(), 16).unwrap()
    })
}

#[bombsquad]
fn signal_masks_spawned() -> [u64; 3] {
    signal_masks()
}

fn raise_usr1() -> u8 {
    unsafe { libc::kill(libc::getpid(), libc::SIGUSR1) };
    std::thread::sleep(Duration::from_secs(5));
    0
}

#[bombsquad]
fn raise_usr1_spawned() -> u8 {
    raise_usr1()
}

const fn bit(signal: libc::c_int) -> u64 {
    1 << (signal - 1)
}

/// The scenario behind F10: a host that blocks SIGTERM, ignores it too, and
/// catches SIGUSR1 and SIGINT with a handler writing to a pipe.
#[test]
fn signal_state_scenario() {
    if !scenario::is("signal_state_scenario") {
        return;
    }
    common::watchdog();
    let mut ends = [0; 2];
    assert_eq!(
        unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) },
        0
    );
    USR1_PIPE.store(ends[1], Ordering::SeqCst);
    set_handler(libc::SIGUSR1, Some(write_to_pipe));
    set_handler(libc::SIGINT, Some(write_to_pipe));
    set_handler(libc::SIGRTMIN() + 1, Some(write_to_pipe));
    unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    let mut blocked: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigemptyset(&raw mut blocked);
        libc::sigaddset(&raw mut blocked, libc::SIGTERM);
        libc::sigaddset(&raw mut blocked, libc::SIGUSR2);
        libc::pthread_sigmask(libc::SIG_BLOCK, &raw const blocked, std::ptr::null_mut());
    }
    let [host_blocked, host_ignored, host_caught] = signal_masks();
    assert_eq!(host_blocked, bit(libc::SIGTERM) | bit(libc::SIGUSR2));
    assert_eq!(host_caught & bit(libc::SIGUSR1), bit(libc::SIGUSR1));

    assert_eq!(
        host_caught & bit(libc::SIGRTMIN() + 1),
        bit(libc::SIGRTMIN() + 1)
    );
    // What a child may still catch: std's stack-overflow handler (SIGSEGV,
    // SIGBUS), the library's fault report, and glibc's internal signals 32
    // and 33, which every glibc process has.
    let glibc_internal = bit(32) | bit(33);
    let fault_signals = bit(libc::SIGSEGV)
        | bit(libc::SIGBUS)
        | bit(libc::SIGILL)
        | bit(libc::SIGFPE)
        | glibc_internal;
    for mode in MODES {
        let [blocked, ignored, caught] = if mode == "fork" {
            bombsquad::fork(signal_masks).unwrap()
        } else {
            signal_masks_spawned().unwrap()
        };
        assert_eq!(blocked, 0, "{mode}: the mask is empty");
        assert_eq!(
            caught & !fault_signals,
            0,
            "{mode}: no handler of the host survives: {caught:#x}"
        );
        // As exec does: ignored signals stay ignored (docs/FAULTS.md F10), and
        // SIGPIPE is ignored as in every Rust main.
        assert_eq!(
            ignored & !glibc_internal,
            (host_ignored | bit(libc::SIGPIPE)) & !glibc_internal,
            "{mode}: {ignored:#x}"
        );
        assert_eq!(ignored & bit(libc::SIGTERM), bit(libc::SIGTERM));

        let result = if mode == "fork" {
            bombsquad::fork(raise_usr1)
        } else {
            raise_usr1_spawned()
        };
        match result {
            Err(Error::NonzeroExitcode(exit)) => {
                assert_eq!(exit.signal(), Some(libc::SIGUSR1), "{mode}");
                assert_eq!(exit.exitcode(), -libc::SIGUSR1, "{mode}");
            }
            other => panic!("{mode}: expected death by SIGUSR1, got {other:?}"),
        }
        let mut byte = [0u8; 1];
        let read = unsafe { libc::read(ends[0], byte.as_mut_ptr().cast(), 1) };
        assert_eq!(read, -1, "{mode}: the host's handler ran in the child");
    }
    eprintln!("SCENARIO PASSED");
}

#[test]
fn the_child_starts_with_an_empty_mask_and_no_host_handlers() {
    common::watchdog();
    let output = scenario::run(scenario::command("signal_state_scenario"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("SCENARIO PASSED"), "{stderr}");
}
