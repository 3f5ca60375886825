//! Pid reuse (docs/FAULTS.md F5): a kill after the child was reaped, by us or by
//! someone else, must never reach the process that took over its pid.
//!
//! The scenario makes it happen for real: the parent's supervisor is held
//! (its output relay waits for the stdout lock) while the child exits, a
//! foreign `waitpid` reaps it, and a sentinel that leads its own session is
//! forked onto the very same pid through `/proc/sys/kernel/ns_last_pid`.
//! When the supervisor resumes, it must leave the sentinel alone. Writing
//! `ns_last_pid` needs CAP_SYS_ADMIN; without it the scenario says so and
//! passes.

#![allow(
    clippy::undocumented_unsafe_blocks,
    reason = "the scenario forks a sentinel and reaps with libc"
)]

mod common;

use common::scenario;

use std::path::Path;
use std::time::{Duration, Instant};

use bombsquad::{Backend, Isolate};

const NS_LAST_PID: &str = "/proc/sys/kernel/ns_last_pid";

fn state_of(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

/// Forks a process that leads a new session (and group) and waits; tries to
/// give it `pid`. Returns its pid.
fn fork_sentinel_at(pid: i32) -> i32 {
    std::fs::write(NS_LAST_PID, (pid - 1).to_string()).unwrap();
    // SAFETY: the child calls only async-signal-safe functions.
    match unsafe { libc::fork() } {
        0 => unsafe {
            // Hold no pipe of the test open, and never outlive it.
            libc::close(0);
            libc::close(1);
            libc::close(2);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            libc::setsid();
            loop {
                libc::pause();
            }
        },
        sentinel => sentinel,
    }
}

/// One attempt; `None` if another process took the pid first.
fn attempt(pid_file: &Path) -> Option<bool> {
    let _ = std::fs::remove_file(pid_file);
    let stdout = std::io::stdout().lock();
    let call = std::thread::spawn({
        let pid_file = pid_file.to_owned();
        move || {
            Isolate::new()
                .backend(Backend::Pipe)
                .timeout(Duration::from_secs(30))
                .fork(move || {
                    std::fs::write(&pid_file, std::process::id().to_string()).unwrap();
                    // The parent's relay will wait for the stdout lock.
                    unsafe { libc::write(1, b"x\n".as_ptr().cast(), 2) };
                    5u8
                })
        }
    });
    let until = Instant::now() + Duration::from_secs(10);
    let child: i32 = loop {
        if let Ok(pid) = std::fs::read_to_string(pid_file)
            && let Ok(pid) = pid.parse()
        {
            break pid;
        }
        assert!(Instant::now() < until, "the child never started");
        std::thread::sleep(Duration::from_millis(1));
    };
    while state_of(child) != Some('Z') {
        assert!(Instant::now() < until, "the child never exited");
        std::thread::sleep(Duration::from_millis(1));
    }
    // The foreign reaper: the pid is free from here on.
    let mut status = 0;
    assert_eq!(unsafe { libc::waitpid(child, &raw mut status, 0) }, child);
    let sentinel = fork_sentinel_at(child);
    while unsafe { libc::getpgid(sentinel) } != sentinel {
        assert!(Instant::now() < until, "the sentinel never led its group");
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(stdout); // the supervisor resumes: reap, kill what is left of the group
    let until = Instant::now() + Duration::from_secs(10);
    while !call.is_finished() {
        // wait4(pid) by number would wait for the sentinel instead.
        assert!(
            Instant::now() < until,
            "the supervisor waits for another process"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let result = call.join().unwrap();
    assert_eq!(
        result.unwrap(),
        5,
        "a complete result survives a lost status"
    );
    let alive = unsafe { libc::waitpid(sentinel, &raw mut status, libc::WNOHANG) } == 0;
    unsafe { libc::kill(sentinel, libc::SIGKILL) };
    unsafe { libc::waitpid(sentinel, &raw mut status, 0) };
    (sentinel == child).then_some(alive)
}

#[test]
fn pid_reuse_scenario() {
    if !scenario::is("pid_reuse_scenario") {
        return;
    }
    common::watchdog();
    if std::fs::write(NS_LAST_PID, std::fs::read(NS_LAST_PID).unwrap_or_default()).is_err() {
        eprintln!("SCENARIO SKIPPED: {NS_LAST_PID} is not writable (needs CAP_SYS_ADMIN)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..10 {
        match attempt(&dir.path().join("pid")) {
            Some(alive) => {
                assert!(
                    alive,
                    "the library killed the process that reused its child's pid"
                );
                eprintln!("SCENARIO PASSED");
                return;
            }
            None => eprintln!("another process took the pid first; again"),
        }
    }
    panic!("the sentinel never got the child's pid in 10 attempts");
}

#[test]
fn a_kill_after_reaping_never_reaches_a_process_that_reused_the_pid() {
    common::watchdog();
    let output = scenario::run(scenario::command("pid_reuse_scenario"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("SCENARIO PASSED") || stderr.contains("SCENARIO SKIPPED"),
        "{stderr}"
    );
}
