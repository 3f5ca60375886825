//! `Sandbox::compute()` (docs/FAULTS.md K1-K6): real attempts from inside
//! sandboxed children, never mocks. Computation works; files, sockets, new
//! processes and dangerous calls do not, and a violation names the call.

#![allow(
    clippy::undocumented_unsafe_blocks,
    reason = "the tests make forbidden system calls on purpose"
)]

use crate::common;

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bombsquad::{Error, Isolate, Sandbox, Task, Worker, WorkerOptions, bombsquad};
use serde::{Deserialize, Serialize};

fn sandboxed() -> Isolate {
    Isolate::new().sandbox(Sandbox::compute())
}

/// The error's kind, in words (`ErrorKind` is not serde).
fn error_kind<T>(result: std::io::Result<T>) -> Result<T, String> {
    result.map_err(|e| format!("{:?}", e.kind()))
}

fn denied<T>() -> Result<T, String> {
    Err(format!("{:?}", ErrorKind::PermissionDenied))
}

fn ptrace_traceme() -> i64 {
    unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) }
}

/// The sandbox's verdict on a call that made a forbidden system call.
fn assert_stopped_for(result: Result<impl std::fmt::Debug, Error>, syscall: &str) {
    let Err(Error::NonzeroExitcode(exit)) = result else {
        panic!("expected a sandbox violation, got {result:?}")
    };
    assert_eq!(exit.signal(), Some(libc::SIGSYS), "{exit}");
    assert!(exit.is_sandbox_violation(), "{exit}");
    assert_eq!(exit.sandbox_violation(), Some(syscall), "{exit}");
    let message = exit.to_string();
    assert!(
        message.contains(&format!(
            "was stopped by the sandbox (SIGSYS): it called {syscall}, which sandbox = \"compute\" forbids"
        )),
        "{message}"
    );
    assert_eq!(exit.fault_address(), None, "{exit}");
    assert_eq!(exit.report().sandbox(), Some(Sandbox::support()));
}

#[test]
fn computation_threads_and_random_hash_maps_work() {
    common::watchdog();
    let sum = sandboxed()
        .fork(|| {
            let threads: Vec<_> = (0..4u64)
                .map(|i| std::thread::spawn(move || (i * 1000..(i + 1) * 1000).sum::<u64>()))
                .collect();
            let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
            let mut map = HashMap::new();
            map.insert("total", total);
            let big = vec![7u8; 64 << 20];
            map["total"] + u64::from(big[big.len() - 1])
        })
        .unwrap();
    assert_eq!(sum, (0..4000u64).sum::<u64>() + 7);
}

#[test]
fn files_cannot_be_opened_but_the_same_function_unsandboxed_reads_them() {
    common::watchdog();
    let read = || error_kind(std::fs::read_to_string("/etc/passwd")).map(|text| text.len());
    assert_eq!(sandboxed().fork(read).unwrap(), denied());
    assert!(Isolate::new().fork(read).unwrap().unwrap() > 0);
    let create = || error_kind(std::fs::write("/tmp/bombsquad-sandbox-escape", b"x"));
    assert_eq!(sandboxed().fork(create).unwrap(), denied());
    assert!(!std::path::Path::new("/tmp/bombsquad-sandbox-escape").exists());
}

#[test]
fn no_socket_reaches_a_listening_port() {
    common::watchdog();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let connect = move || error_kind(TcpStream::connect(address)).map(drop);
    assert_eq!(sandboxed().fork(connect).unwrap(), denied());
    // The same function unsandboxed connects.
    assert_eq!(Isolate::new().fork(connect).unwrap(), Ok(()));
}

#[test]
fn programs_never_run() {
    common::watchdog();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let script = format!("touch {}", marker.display());
    let run = move || {
        error_kind(
            std::process::Command::new("/bin/sh")
                .args(["-c", &script])
                .status(),
        )
        .map(|status| status.code())
    };
    assert_eq!(sandboxed().fork(run.clone()).unwrap(), denied());
    assert!(!marker.exists(), "the program ran");
    // Unsandboxed, the same closure runs it.
    assert_eq!(Isolate::new().fork(run).unwrap(), Ok(Some(0)));
    assert!(marker.exists());
}

#[test]
fn ptrace_kills_the_child_with_sigsys_and_the_error_names_it() {
    common::watchdog();
    let faults = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&faults);
    let result = sandboxed()
        .on_fault(move |_| {
            counted.fetch_add(1, Ordering::Relaxed);
        })
        .fork(ptrace_traceme);
    assert_stopped_for(result, "ptrace");
    assert_eq!(
        faults.load(Ordering::Relaxed),
        0,
        "a violation is not a crash"
    );
    let exec = sandboxed().fork(|| {
        let program = c"/bin/true";
        let argv = [program.as_ptr(), std::ptr::null()];
        unsafe { libc::execv(program.as_ptr(), argv.as_ptr()) }
    });
    assert_stopped_for(exec, "execve");
}

#[test]
fn an_unsandboxed_sigsys_is_not_called_the_sandbox() {
    common::watchdog();
    let err = Isolate::new()
        .fork(|| unsafe { libc::raise(libc::SIGSYS) })
        .unwrap_err();
    let Error::NonzeroExitcode(exit) = err else {
        panic!("{err}")
    };
    assert_eq!(exit.signal(), Some(libc::SIGSYS));
    assert!(!exit.is_sandbox_violation());
    assert_eq!(exit.sandbox_violation(), None);
    assert!(!exit.to_string().contains("sandbox"), "{exit}");
    assert_eq!(exit.report().sandbox(), None);
}

#[test]
fn a_read_only_path_is_readable_not_writable_and_a_read_write_one_is_both() {
    common::watchdog();
    let dir = tempfile::tempdir().unwrap();
    let (readable, writable) = (dir.path().join("ro"), dir.path().join("rw"));
    std::fs::create_dir(&readable).unwrap();
    std::fs::create_dir(&writable).unwrap();
    std::fs::write(readable.join("data"), b"kept").unwrap();
    let policy = Sandbox::compute()
        .read_only(&readable)
        .read_write(&writable);
    let (ro, rw) = (readable.clone(), writable.clone());
    let outcome = Isolate::new()
        .sandbox(policy)
        .fork(move || {
            (
                error_kind(std::fs::read_to_string(ro.join("data"))),
                error_kind(std::fs::write(ro.join("data"), b"changed")),
                error_kind(std::fs::write(rw.join("new"), b"written")),
                error_kind(std::fs::read_to_string("/etc/hostname")).map(drop),
            )
        })
        .unwrap();
    assert_eq!(
        outcome,
        (Ok("kept".to_owned()), denied(), Ok(()), denied(),)
    );
    assert_eq!(std::fs::read(readable.join("data")).unwrap(), b"kept");
    assert_eq!(std::fs::read(writable.join("new")).unwrap(), b"written");
}

#[test]
fn a_missing_path_is_refused_before_any_child_starts() {
    common::watchdog();
    let err = Isolate::new()
        .sandbox(Sandbox::compute().read_only("/no/such/bombsquad/path"))
        .fork(|| 1u8)
        .unwrap_err();
    let Error::Sandbox { reason } = &err else {
        panic!("{err}")
    };
    assert_eq!(
        reason,
        "cannot grant access to /no/such/bombsquad/path: No such file or directory (os error 2)"
    );
    assert!(
        err.to_string().contains("the function did not run"),
        "{err}"
    );
}

#[test]
fn this_kernel_supports_the_whole_policy() {
    // The machines this project runs on have Landlock ABI 7 (DESIGN.md);
    // elsewhere the tests above would get `Error::Sandbox` instead.
    let support = Sandbox::support();
    assert!(support.is_complete(), "{support:?}");
    assert!(support.landlock_abi().unwrap() >= 3);
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Job {
    Square(u64),
    Ptrace,
    ReadPasswd,
}

#[derive(Default)]
struct Jobs;

#[bombsquad]
impl Task for Jobs {
    type Input = Job;
    type Output = u64;
    type Error = String;

    fn run(&mut self, job: Job) -> Result<u64, String> {
        match job {
            Job::Square(n) => Ok(n * n),
            Job::Ptrace => Ok(ptrace_traceme().cast_unsigned()),
            Job::ReadPasswd => std::fs::read("/etc/passwd")
                .map(|bytes| bytes.len() as u64)
                .map_err(|e| format!("{:?}", e.kind())),
        }
    }
}

#[test]
fn a_sandboxed_worker_is_replaced_after_a_violation() {
    common::watchdog();
    let worker = Worker::<Jobs>::spawn_with(WorkerOptions::new().isolate(sandboxed())).unwrap();
    assert_eq!(worker.call(Job::Square(7)).unwrap(), Ok(49));
    assert_eq!(
        worker.call(Job::ReadPasswd).unwrap(),
        Err("PermissionDenied".to_owned())
    );
    let first = worker.pid().unwrap();
    assert_stopped_for(worker.call(Job::Ptrace), "ptrace");
    assert_eq!(worker.call(Job::Square(9)).unwrap(), Ok(81));
    assert_ne!(worker.pid().unwrap(), first, "the worker was replaced");
    assert_eq!(worker.restarts(), 1);
    // Its replacement is sandboxed too.
    assert_eq!(
        worker.call(Job::ReadPasswd).unwrap(),
        Err("PermissionDenied".to_owned())
    );
    worker.shutdown(std::time::Duration::from_secs(1));
}

#[test]
fn no_new_privs_is_set_and_seccomp_filters_are_on() {
    common::watchdog();
    // /proc/self/status cannot be opened inside; prctl answers instead.
    let (no_new_privs, seccomp_mode) = sandboxed()
        .fork(|| unsafe {
            (
                libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0),
                libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0),
            )
        })
        .unwrap();
    assert_eq!((no_new_privs, seccomp_mode), (1, 2));
    let unsandboxed = Isolate::new()
        .fork(|| unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) })
        .unwrap();
    assert_eq!(unsandboxed, 0);
}

#[bombsquad(sandbox = "compute")]
fn spawned_probe() -> (String, String, i64) {
    probe()
}

#[bombsquad(sandbox = "compute", start_method = "forkserver")]
fn forkserved_probe() -> (String, String, i64) {
    probe()
}

/// What a sandboxed child meets: reading a file, connecting, and (last,
/// since it kills) nothing; the ptrace attempt is its own function.
fn probe() -> (String, String, i64) {
    let file = match std::fs::read("/etc/passwd") {
        Ok(_) => "read".to_owned(),
        Err(e) => format!("{:?}", e.kind()),
    };
    let program = match std::process::Command::new("/bin/true").status() {
        Ok(_) => "ran".to_owned(),
        Err(e) => format!("{:?}", e.kind()),
    };
    let threads: i64 = (0..2i64)
        .map(|i| std::thread::spawn(move || i + 20))
        .map(|t| t.join().unwrap())
        .sum();
    (file, program, threads)
}

#[bombsquad(sandbox = "compute")]
fn spawned_ptrace() -> i64 {
    ptrace_traceme()
}

#[bombsquad(sandbox = "compute", start_method = "forkserver")]
fn forkserved_ptrace() -> i64 {
    ptrace_traceme()
}

#[test]
fn every_start_method_is_sandboxed_by_the_attribute() {
    common::watchdog();
    let expected = (
        "PermissionDenied".to_owned(),
        "PermissionDenied".to_owned(),
        41,
    );
    assert_eq!(spawned_probe().unwrap(), expected);
    assert_eq!(forkserved_probe().unwrap(), expected);
    assert_eq!(sandboxed().fork(probe).unwrap(), expected);
    assert_stopped_for(spawned_ptrace(), "ptrace");
    assert_stopped_for(forkserved_ptrace(), "ptrace");
}

#[bombsquad]
fn reads_passwd() -> String {
    match std::fs::read("/etc/passwd") {
        Ok(_) => "read".to_owned(),
        Err(e) => format!("{:?}", e.kind()),
    }
}

#[test]
fn a_scope_sandboxes_the_calls_inside_it_and_best_effort_runs_here_in_full() {
    common::watchdog();
    assert_eq!(reads_passwd().unwrap(), "read");
    let inside = sandboxed().scope(reads_passwd).unwrap();
    assert_eq!(inside, "PermissionDenied");
    // This kernel has the whole policy, so best effort is the full sandbox.
    let best_effort = Isolate::new()
        .sandbox(Sandbox::compute().best_effort())
        .scope(reads_passwd)
        .unwrap();
    assert_eq!(best_effort, "PermissionDenied");
    assert_eq!(reads_passwd().unwrap(), "read");
}
