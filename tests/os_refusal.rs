//! The OS refusing a descriptor or a process gives `Error::Spawn` with the
//! OS error, nothing is left behind, and the next call works once the
//! resource is free again (docs/FAULTS.md C5, C6, C11). Lowering a limit or
//! installing a seccomp filter is process-global, so it happens in a
//! scenario: this binary run again as a subprocess, never in the libtest
//! process itself.

#![allow(
    clippy::undocumented_unsafe_blocks,
    reason = "the scenario sets an rlimit with libc"
)]

mod common;

use std::fs::File;
use std::process::Command;

use bombsquad::{Backend, Error, Isolate, bombsquad};

const SCENARIO: &str = "BOMBSQUAD_TEST_FD_EXHAUSTION";

#[bombsquad(start_method = "spawn", backend = "pipe")]
fn spawned() -> u8 {
    7
}

#[bombsquad(start_method = "spawn", backend = "file")]
fn spawned_file() -> u8 {
    8
}

#[bombsquad(start_method = "forkserver", backend = "pipe")]
fn forkserved() -> u8 {
    6
}

type Call = Box<dyn Fn() -> Result<u8, Error>>;

/// One call in each start method x backend combination, named.
fn every_combination() -> [(&'static str, Call); 5] {
    [
        (
            "fork/pipe",
            Box::new(|| Isolate::new().backend(Backend::Pipe).fork(|| 1u8)),
        ),
        (
            "fork/file",
            Box::new(|| Isolate::new().backend(Backend::File).fork(|| 2u8)),
        ),
        ("spawn/pipe", Box::new(spawned)),
        ("spawn/file", Box::new(spawned_file)),
        ("forkserver/pipe", Box::new(forkserved)),
    ]
}

/// Opens `/dev/null` until the descriptor table is full.
fn exhaust_descriptors() -> Vec<File> {
    let limit = libc::rlimit {
        rlim_cur: 64,
        rlim_max: 64,
    };
    assert_eq!(
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit) },
        0
    );
    std::iter::from_fn(|| File::open("/dev/null").ok()).collect()
}

fn spawn_error<T: std::fmt::Debug>(result: Result<T, Error>) -> (String, Option<i32>) {
    match result {
        Err(Error::Spawn { what, source }) => (what, source.raw_os_error()),
        other => panic!("expected Error::Spawn, got {other:?}"),
    }
}

/// The scenario: runs only in the subprocess started below.
#[test]
fn fd_exhaustion_scenario() {
    if std::env::var_os(SCENARIO).is_none() {
        return;
    }
    let held = exhaust_descriptors();
    let pipe = Isolate::new().backend(Backend::Pipe);
    assert_eq!(
        spawn_error(pipe.fork(|| 1u8)),
        ("create the reply pipe".to_owned(), Some(libc::EMFILE))
    );
    assert_eq!(spawn_error(spawned()).1, Some(libc::EMFILE));
    drop(held);
    assert_eq!(pipe.fork(|| 1u8).unwrap(), 1);
    assert_eq!(spawned().unwrap(), 7);
    println!("SCENARIO PASSED");
}

#[test]
fn descriptor_exhaustion_is_a_spawn_error() {
    common::watchdog();
    let mut scenario = Command::new(std::env::current_exe().unwrap());
    scenario
        .args(["--exact", "fd_exhaustion_scenario", "--nocapture"])
        .env(SCENARIO, "1");
    let output = common::scenario::run(scenario);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("SCENARIO PASSED"), "{stdout}");
}

/// Opens `/dev/null` until EMFILE; returns how many it opened.
fn fill_table(held: &mut Vec<File>) -> usize {
    let before = held.len();
    held.extend(std::iter::from_fn(|| File::open("/dev/null").ok()));
    held.len() - before
}

/// C5 at every point of a call: with 0, 1, 2, ... descriptors free, each
/// combination either works or fails with `Spawn(EMFILE)`, and afterwards
/// exactly as many descriptors are free as before (whatever was half
/// created was closed).
#[test]
fn fd_exhaustion_at_every_step_scenario() {
    if !common::scenario::is("fd_exhaustion_at_every_step_scenario") {
        return;
    }
    common::watchdog();
    // Started while descriptors are free: its two stay open for good.
    bombsquad::start_forkserver().unwrap();
    let mut held = exhaust_descriptors();
    for (name, call) in every_combination() {
        let mut worked = false;
        for free in 0..20 {
            held.truncate(held.len() - free);
            let result = call();
            assert_eq!(
                fill_table(&mut held),
                free,
                "{name} with {free} free: leaked"
            );
            match result {
                Ok(value) => {
                    assert!((1..=8).contains(&value), "{name}: {value}");
                    println!("{name}: works with {free} descriptors free");
                    worked = true;
                    break;
                }
                Err(Error::Spawn { source, what }) => {
                    assert_eq!(source.raw_os_error(), Some(libc::EMFILE), "{name}: {what}");
                }
                Err(other) => panic!("{name} with {free} free: {other:?}"),
            }
            assert!(free > 0 || !worked, "{name} worked with no descriptor free");
        }
        assert!(worked, "{name} never worked");
    }
    drop(held);
    assert_eq!(common::zombie_children(), Vec::<i32>::new());
    assert_eq!(common::call_children(std::process::id()), Vec::new());
    println!("SCENARIO PASSED");
}

#[test]
fn descriptor_exhaustion_at_every_step_leaks_nothing() {
    common::watchdog();
    let output = common::scenario::run(common::scenario::command(
        "fd_exhaustion_at_every_step_scenario",
    ));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("SCENARIO PASSED"), "{stdout}");
}

/// The user RLIMIT_NPROC counts. Root is exempt from it (getrlimit(2)), so
/// a root scenario first becomes `nobody` (65534): the subprocess alone.
fn become_unprivileged() {
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    unsafe {
        assert_eq!(libc::setgroups(0, std::ptr::null()), 0);
        assert_eq!(libc::setgid(65534), 0);
        assert_eq!(libc::setuid(65534), 0);
    }
}

fn set_nproc(soft: libc::rlim_t) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NPROC, &raw mut limit) },
        0
    );
    limit.rlim_cur = soft.min(limit.rlim_max);
    assert_eq!(
        unsafe { libc::setrlimit(libc::RLIMIT_NPROC, &raw const limit) },
        0
    );
}

/// C6: no process may be created (RLIMIT_NPROC 0): `Spawn(EAGAIN)` in
/// every combination, no retry, nothing left behind; then calls work again.
#[test]
fn pid_exhaustion_scenario() {
    if !common::scenario::is("pid_exhaustion_scenario") {
        return;
    }
    common::watchdog();
    become_unprivileged();
    let fds = common::open_fds();
    set_nproc(0);
    // Not the fork server's calls: the server keeps the limits it started
    // with (here none), as the README says.
    for (name, call) in every_combination()
        .into_iter()
        .filter(|(name, _)| !name.starts_with("forkserver"))
    {
        let (what, errno) = spawn_error(call());
        assert_eq!(errno, Some(libc::EAGAIN), "{name}: {what}");
        let expected = if name.starts_with("fork") {
            "fork the child process"
        } else {
            "re-execute /proc/self/exe"
        };
        assert!(what.starts_with(expected), "{name}: {what}");
    }
    assert_eq!(common::open_fds(), fds, "descriptors leaked");
    assert_eq!(common::call_children(std::process::id()), Vec::new());
    set_nproc(libc::RLIM_INFINITY);
    for (name, call) in every_combination() {
        assert!(call().is_ok_and(|v| (1..=8).contains(&v)), "{name}");
    }
    println!("SCENARIO PASSED");
}

#[test]
fn pid_exhaustion_is_a_spawn_error() {
    common::watchdog();
    let mut command = common::scenario::command("pid_exhaustion_scenario");
    // Writable by `nobody`, for the file backend.
    command.env("TMPDIR", "/tmp");
    let output = common::scenario::run(command);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("SCENARIO PASSED"), "{stdout}");
}

/// Makes every `fork` of this thread, and of the processes it starts, fail
/// with ENOMEM, as the kernel fails it when the copy of the address space
/// cannot be committed (`vm.overcommit_memory=2` and a large parent): a
/// seccomp filter answers each `clone` without `CLONE_VM` with ENOMEM. A
/// new thread (`clone3`, `CLONE_VM`) and `posix_spawn` (`CLONE_VM |
/// CLONE_VFORK`), which spawned calls use, still work.
fn refuse_forks_with_enomem() {
    use seccompiler::{
        BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule, TargetArch,
    };
    let a_fork = SeccompRule::new(vec![
        SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(libc::CLONE_VM as u64),
            0,
        )
        .unwrap(),
    ])
    .unwrap();
    let arch = TargetArch::try_from(std::env::consts::ARCH).unwrap();
    let filter = SeccompFilter::new(
        [(libc::SYS_clone, vec![a_fork])].into(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOMEM.cast_unsigned()),
        arch,
    )
    .unwrap();
    seccompiler::apply_filter(&BpfProgram::try_from(filter).unwrap()).unwrap();
}

/// C11: `fork` fails with ENOMEM. A forked call and a fork-server call
/// (the server inherits the filter: it starts after it) are each
/// `Spawn(ENOMEM)` naming the fork, with no retry and nothing left behind;
/// spawned calls, which need no fork, still work: what the README advises
/// for a parent too large to fork.
#[test]
fn fork_enomem_scenario() {
    if !common::scenario::is("fork_enomem_scenario") {
        return;
    }
    common::watchdog();
    refuse_forks_with_enomem();
    // The first fork-server call starts the server, which holds two
    // descriptors from then on.
    let (what, errno) = spawn_error(forkserved());
    assert_eq!(errno, Some(libc::ENOMEM), "{what}");
    let fds = common::open_fds();
    for (name, call) in every_combination() {
        if name.starts_with("spawn") {
            let expected = if name.ends_with("pipe") { 7 } else { 8 };
            assert_eq!(call().unwrap(), expected, "{name}");
            continue;
        }
        let (what, errno) = spawn_error(call());
        assert_eq!(errno, Some(libc::ENOMEM), "{name}: {what}");
        let expected = if name.starts_with("forkserver") {
            "fork the child in the fork server"
        } else {
            "fork the child process"
        };
        assert!(what.starts_with(expected), "{name}: {what}");
    }
    assert_eq!(common::open_fds(), fds, "descriptors leaked");
    assert_eq!(common::call_children(std::process::id()), Vec::new());
    println!("SCENARIO PASSED");
}

#[test]
fn a_fork_that_fails_with_enomem_is_a_spawn_error() {
    common::watchdog();
    let output = common::scenario::run(common::scenario::command("fork_enomem_scenario"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("SCENARIO PASSED"), "{stdout}");
}
