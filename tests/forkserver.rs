//! `start_method = "forkserver"`: one long-lived server per process forks
//! each call's child. The outcome matrix (tests/behaviour/outcomes.rs) covers what a
//! call returns; this file covers the server's own life: reuse, replacement
//! after it dies, death with its caller, a forked caller, and no leftovers.

#![allow(
    clippy::undocumented_unsafe_blocks,
    reason = "the scenarios fork and kill with libc on purpose"
)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bombsquad::{Error, bombsquad};
use common::scenario;

/// The child's parent: the fork server.
#[bombsquad(start_method = "forkserver")]
fn server_pid() -> i32 {
    unsafe { libc::getppid() }
}

#[bombsquad(start_method = "forkserver")]
fn own_pid() -> u32 {
    std::process::id()
}

#[bombsquad(start_method = "forkserver")]
fn sleeps(seconds: u64) -> u8 {
    std::thread::sleep(Duration::from_secs(seconds));
    0
}

fn wait_until_gone(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if !common::process_exists(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn one_server_forks_every_call_and_is_this_process_child() {
    common::watchdog();
    bombsquad::start_forkserver().unwrap();
    let server = server_pid().unwrap();
    assert_eq!(server_pid().unwrap(), server, "the server is reused");
    let children = common::children_of(std::process::id());
    assert!(
        children.iter().any(|&(pid, _)| pid == server),
        "the server {server} is our child: {children:?}"
    );
    let first = own_pid().unwrap();
    let second = own_pid().unwrap();
    assert_ne!(first, second, "each call gets a fresh child");
    assert!(!common::process_exists(first), "and it is reaped");
}

/// Runs alone: it kills the server that other tests of this binary share.
#[test]
fn a_killed_server_is_replaced_on_the_next_call() {
    common::watchdog();
    if !scenario::is("a_killed_server_is_replaced_on_the_next_call") {
        scenario::run(scenario::command(
            "a_killed_server_is_replaced_on_the_next_call",
        ));
        return;
    }
    let server = server_pid().unwrap();
    assert_eq!(unsafe { libc::kill(server, libc::SIGKILL) }, 0);
    let replacement = server_pid().unwrap();
    assert_ne!(replacement, server);
    assert_eq!(common::zombie_children(), Vec::<i32>::new());
}

/// docs/FAULTS.md F1: the caller is SIGKILLed mid-call; the server and the
/// call's child die with it.
#[test]
fn the_server_and_its_children_die_with_their_caller() {
    common::watchdog();
    if scenario::is("the_server_and_its_children_die_with_their_caller") {
        println!("SERVER {}", server_pid().unwrap());
        let _ = sleeps(60);
        return;
    }
    let mut caller = scenario::command("the_server_and_its_children_die_with_their_caller")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(caller.stdout.take().unwrap()).lines();
    let server: u32 = loop {
        let line = lines.next().unwrap().unwrap();
        // libtest may print "test <name> ... " on the same line first.
        if let Some((_, pid)) = line.split_once("SERVER ") {
            break pid.parse().unwrap();
        }
    };
    // The sleeping call's child is the server's child.
    let deadline = Instant::now() + Duration::from_secs(5);
    let child = loop {
        if let Some(&(pid, _)) = common::children_of(server).first() {
            break pid.cast_unsigned();
        }
        assert!(Instant::now() < deadline, "the call never started");
        std::thread::sleep(Duration::from_millis(10));
    };
    caller.kill().unwrap();
    caller.wait().unwrap();
    assert!(wait_until_gone(server), "the server outlived its caller");
    assert!(
        wait_until_gone(child),
        "the call's child outlived its caller"
    );
}

/// docs/FAULTS.md F9: a process forked from a caller that has a server starts its
/// own instead of sharing the parent's control socket.
#[test]
fn a_forked_caller_gets_its_own_server() {
    common::watchdog();
    if !scenario::is("a_forked_caller_gets_its_own_server") {
        scenario::run(scenario::command("a_forked_caller_gets_its_own_server"));
        return;
    }
    let parents_server = server_pid().unwrap();
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let verdict: u8 = match server_pid() {
            Ok(server) if server != parents_server => 1,
            _ => 0,
        };
        unsafe {
            libc::write(fds[1], (&raw const verdict).cast(), 1);
            libc::_exit(0);
        }
    }
    let mut verdict = 0u8;
    assert_eq!(
        unsafe { libc::read(fds[0], (&raw mut verdict).cast(), 1) },
        1
    );
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    assert_eq!(verdict, 1, "the forked caller used a server of its own");
    assert_eq!(server_pid().unwrap(), parents_server, "ours still works");
}

#[test]
fn a_timed_out_call_is_killed_and_reaped_by_the_server() {
    common::watchdog();
    #[bombsquad(start_method = "forkserver", timeout = "200ms")]
    fn hangs() -> u8 {
        std::thread::sleep(Duration::from_secs(60));
        0
    }
    match hangs() {
        // Gone from /proc: killed and reaped by the server, not its zombie.
        Err(Error::Timeout { pid, .. }) => assert!(wait_until_gone(pid)),
        other => panic!("expected Timeout, got {other:?}"),
    }
}

#[bombsquad(start_method = "forkserver", backend = "pipe")]
fn aborts() -> u8 {
    std::process::abort()
}

#[bombsquad(start_method = "forkserver", panic = "error")]
fn panics() -> u8 {
    panic!("on purpose")
}

#[bombsquad(start_method = "forkserver", backend = "shm", timeout = "100ms")]
fn outlives_its_timeout() -> u8 {
    std::thread::sleep(Duration::from_secs(60));
    0
}

/// Mixed outcomes leave no descriptor, no zombie of ours and none of the
/// server's. Alone in a subprocess, so the counts are exact.
#[test]
fn calls_leave_no_descriptor_and_no_zombie() {
    common::watchdog();
    if !scenario::is("calls_leave_no_descriptor_and_no_zombie") {
        scenario::run(scenario::command("calls_leave_no_descriptor_and_no_zombie"));
        return;
    }
    let server = server_pid().unwrap(); // the server's own descriptors exist from here
    let before = common::open_fds();
    for _ in 0..10 {
        own_pid().unwrap();
        match aborts() {
            Err(Error::NonzeroExitcode(e)) => assert_eq!(e.signal(), Some(libc::SIGABRT)),
            other => panic!("expected SIGABRT, got {other:?}"),
        }
        match panics() {
            Err(Error::Panicked { message, .. }) => assert_eq!(message, "on purpose"),
            other => panic!("expected a panic, got {other:?}"),
        }
        assert!(matches!(outlives_its_timeout(), Err(Error::Timeout { .. })));
    }
    assert_eq!(common::open_fds(), before);
    assert_eq!(common::zombie_children(), Vec::<i32>::new());
    assert_eq!(server_pid().unwrap(), server, "the same server throughout");
    assert_eq!(common::children_of(server.cast_unsigned()), vec![]);
}

/// What a call's child sees of its caller's state.
#[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Seen {
    var: Option<String>,
    cwd: std::path::PathBuf,
    umask: String,
}

fn seen_here() -> Seen {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let umask = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .unwrap();
    Seen {
        var: std::env::var("BOMBSQUAD_TEST_CONTEXT").ok(),
        cwd: std::env::current_dir().unwrap(),
        umask: umask.trim().to_owned(),
    }
}

#[bombsquad(start_method = "forkserver")]
fn seen_by_forkserver_child() -> Seen {
    seen_here()
}

#[bombsquad(start_method = "spawn")]
fn seen_by_spawned_child() -> Seen {
    seen_here()
}

/// H9: each fork-server call sees the caller's environment, working
/// directory and umask at the call, as a spawned call does; changes made
/// after the server started reach it, and so do changes undone.
#[test]
fn context_scenario() {
    if !scenario::is("context_scenario") {
        return;
    }
    common::watchdog();
    let set = |value: Option<&str>| match value {
        // SAFETY (test): the scenario's process runs this one test on one thread.
        Some(value) => unsafe { std::env::set_var("BOMBSQUAD_TEST_CONTEXT", value) },
        None => unsafe { std::env::remove_var("BOMBSQUAD_TEST_CONTEXT") },
    };
    set(Some("first"));
    bombsquad::start_forkserver().unwrap();
    let first = seen_by_forkserver_child().unwrap();
    assert_eq!(first, seen_here());
    assert_eq!(first.var.as_deref(), Some("first"));

    let fds_before = common::open_fds();
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().canonicalize().unwrap();
    set(Some("second"));
    std::env::set_current_dir(&dir_path).unwrap();
    let old_umask = unsafe { libc::umask(0o077) };
    let second = seen_by_forkserver_child().unwrap();
    assert_eq!(
        second,
        Seen {
            var: Some("second".into()),
            cwd: dir_path.clone(),
            umask: "0077".into(),
        }
    );
    assert_eq!(second, seen_by_spawned_child().unwrap());
    // Nothing changed: the same again.
    assert_eq!(seen_by_forkserver_child().unwrap(), second);

    set(None);
    std::env::set_current_dir("/").unwrap();
    unsafe { libc::umask(old_umask) };
    let third = seen_by_forkserver_child().unwrap();
    assert_eq!(third, seen_here());
    assert_eq!(third.var, None);
    assert_eq!(third.cwd, std::path::Path::new("/"));
    assert_eq!(third, seen_by_spawned_child().unwrap());
    assert_eq!(
        common::open_fds(),
        fds_before,
        "a context descriptor leaked"
    );
    eprintln!("SCENARIO PASSED");
}

#[test]
fn a_forkserver_call_sees_the_callers_env_cwd_and_umask_at_the_call() {
    common::watchdog();
    let output = scenario::run(scenario::command("context_scenario"));
    assert!(String::from_utf8_lossy(&output.stderr).contains("SCENARIO PASSED"));
}

/// What a call's child has of its caller's standing: its parent, its
/// `NoNewPrivs` and its `Cpus_allowed_list` (from `/proc/self/status`).
#[bombsquad(start_method = "forkserver")]
fn standing_in_child() -> (i32, String, String) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .unwrap()
            .trim()
            .to_owned()
    };
    (
        unsafe { libc::getppid() },
        field("NoNewPrivs:"),
        field("Cpus_allowed_list:"),
    )
}

/// A caller that gives up something after its server started (here
/// `no_new_privs`, then all CPUs but one) never gets a child that still
/// has it: the call is spawned instead (its parent is the caller), and the
/// server stays for callers it matches.
#[test]
fn standing_scenario() {
    if !scenario::is("standing_scenario") {
        return;
    }
    common::watchdog();
    let me = std::process::id().cast_signed();
    let (server, privs, cpus) = standing_in_child().unwrap();
    assert_ne!(server, me, "served by the fork server");
    assert_eq!(privs, "0");
    let fds = common::open_fds();

    assert_eq!(
        unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) },
        0
    );
    let (parent, privs, _) = standing_in_child().unwrap();
    assert_eq!(
        (parent, privs.as_str()),
        (me, "1"),
        "spawned, with no_new_privs"
    );

    if std::thread::available_parallelism().unwrap().get() > 1 {
        let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        unsafe { libc::CPU_SET(0, &mut one) };
        let size = std::mem::size_of::<libc::cpu_set_t>();
        assert_eq!(
            unsafe { libc::sched_setaffinity(0, size, &raw const one) },
            0
        );
        let (parent, _, pinned) = standing_in_child().unwrap();
        assert_eq!(
            (parent, pinned.as_str()),
            (me, "0"),
            "spawned, on CPU 0 (was {cpus})"
        );
    }
    assert_eq!(common::open_fds(), fds, "descriptors leaked");
    assert_eq!(
        common::fork_server_of(me.cast_unsigned()),
        Some(server),
        "the server stays"
    );
    eprintln!("SCENARIO PASSED");
}

#[test]
fn a_caller_that_gave_up_privileges_or_cpus_never_gets_a_child_that_has_them() {
    common::watchdog();
    let output = scenario::run(scenario::command("standing_scenario"));
    assert!(String::from_utf8_lossy(&output.stderr).contains("SCENARIO PASSED"));
}
