//! After every kind of call: no descriptor, zombie, child or temp file is
//! left behind. One test in its own binary, so no other test opens
//! descriptors meanwhile.

#![allow(
    clippy::undocumented_unsafe_blocks,
    reason = "crash tests call libc to fault on purpose"
)]

mod common;

use common::RefusesToSerialize;

use std::time::Duration;

use bombsquad::{Backend, Error, Isolate, Progress, StartMethod, bombsquad};

#[bombsquad(backend = "file", timeout = "200ms")]
fn spawned_file(kind: u8) -> u8 {
    act(kind)
}

#[bombsquad(backend = "pipe", timeout = "200ms")]
fn spawned_pipe(kind: u8) -> u8 {
    act(kind)
}

#[bombsquad]
fn never_starts(_value: RefusesToSerialize) {}

#[bombsquad(backend = "pipe", timeout = "200ms")]
fn spawned_progress(kind: u8, progress: Progress<u8>) -> u8 {
    progress.send(kind);
    act(kind)
}

#[bombsquad(start_method = "fork", timeout = "200ms")]
fn forked_progress(kind: u8, progress: Progress<u8>) -> u8 {
    progress.send(kind);
    act(kind)
}

#[bombsquad(backend = "shm", timeout = "200ms")]
fn spawned_shm_progress(kind: u8, progress: Progress<u8>) -> u8 {
    progress.send(kind);
    act(kind)
}

fn act(kind: u8) -> u8 {
    match kind {
        0 => 1,
        1 => panic!("leak check panic"),
        2 => unsafe { libc::strlen(std::ptr::null()) as u8 },
        3 => std::process::abort(),
        4 => unsafe { libc::_exit(3) },
        5 => unsafe { libc::_exit(0) },
        6 => {
            std::thread::sleep(Duration::from_secs(60));
            0
        }
        _ => unsafe {
            // A grandchild that outlives the call.
            if libc::fork() == 0 {
                libc::sleep(60);
            }
            7
        },
    }
}

fn every_kind_of_call() {
    let timeout = Isolate::new().timeout(Duration::from_millis(200));
    for kind in 0..8 {
        for method in [StartMethod::Forkserver, StartMethod::Spawn] {
            let scope = Isolate::new().start_method(method);
            let _ = std::panic::catch_unwind(|| scope.scope(|| spawned_file(kind)));
            let _ = std::panic::catch_unwind(|| scope.scope(|| spawned_pipe(kind)));
        }
        for backend in [Backend::File, Backend::Pipe] {
            let isolate = timeout.clone().backend(backend);
            let _ = std::panic::catch_unwind(|| isolate.fork(|| act(kind)));
        }
        // As pointers, so one type of `Progress`: the boxed default.
        type Call = fn(u8, Progress<'static, u8>) -> Result<u8, Error>;
        let calls = [
            spawned_progress as Call,
            forked_progress as Call,
            spawned_shm_progress as Call,
        ];
        for call in calls {
            let _ = std::panic::catch_unwind(|| call(kind, Progress::new(|_| {}).into()));
            // A callback that panics ends the call.
            let _ = std::panic::catch_unwind(|| call(kind, Progress::new(|_| panic!("no")).into()));
        }
        // Declared without a start method (the fork server): spawned too.
        let spawn = Isolate::new().start_method(StartMethod::Spawn);
        for call in [calls[0], calls[2]] {
            let _ = std::panic::catch_unwind(|| {
                spawn.scope(|| call(kind, Progress::new(|_| {}).into()))
            });
        }
    }
    // Failures before anything starts.
    assert!(matches!(
        never_starts(RefusesToSerialize),
        Err(Error::Codec { .. })
    ));
    assert!(matches!(
        Isolate::new().temp_dir("/proc/version/x").fork(|| 1),
        Err(Error::Spawn { .. })
    ));
}

#[test]
fn nothing_leaks() {
    common::watchdog();
    let tmp = tempfile::tempdir().unwrap();
    // SAFETY: the only test of this binary; no other thread reads the
    // environment while it is changed.
    unsafe { std::env::set_var("TMPDIR", tmp.path()) };
    every_kind_of_call(); // warm-up: lazily opened descriptors of std or libtest
    let fds = common::open_fds();
    every_kind_of_call();
    assert_eq!(common::open_fds(), fds, "descriptors leaked");
    assert_eq!(common::zombie_children(), Vec::<i32>::new(), "zombies left");
    assert_eq!(
        common::call_children(std::process::id()),
        Vec::new(),
        "children left running"
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "temp files left: {left:?}");
}
