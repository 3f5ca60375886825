//! The closure form `bombsquad::fork(|| ...)` and the `Isolate` builder.

#![allow(
    clippy::undocumented_unsafe_blocks,
    reason = "crash tests call libc to fault on purpose"
)]

use crate::common;

use std::cell::RefCell;
use std::os::unix::fs::PermissionsExt;
use std::rc::Rc;
use std::time::Duration;

use bombsquad::{Backend, Error, Isolate, PanicMode};

/// Errors cross threads and box into `dyn Error + Send + Sync`.
const _: () = {
    const fn send_sync_static<T: Send + Sync + 'static>() {}
    send_sync_static::<Error>();
    send_sync_static::<bombsquad::NonzeroExitcode>();
    send_sync_static::<Isolate>();
};

#[test]
fn captures_need_no_serde() {
    common::watchdog();
    // Neither Rc nor RefCell is Send or Serialize: fork copies memory.
    let state = Rc::new(RefCell::new(vec![1, 2, 3]));
    let sum = bombsquad::fork(|| {
        state.borrow_mut().push(4);
        state.borrow().iter().sum::<i32>()
    })
    .unwrap();
    assert_eq!(sum, 10);
    assert_eq!(
        *state.borrow(),
        vec![1, 2, 3],
        "the child's changes stay in the child"
    );
}

/// A `Vec<u8>` from a closure takes the `bin` path as from a
/// `#[bombsquad]` function (the codec's unit tests check the wire format):
/// every byte value arrives, on every backend.
#[test]
fn byte_results_of_closures_arrive_byte_exact() {
    common::watchdog();
    let expected: Vec<u8> = (0..(8 << 20) + 3).map(|i: u32| (i % 256) as u8).collect();
    for backend in [Backend::File, Backend::Pipe, Backend::Shm] {
        let bytes = Isolate::new()
            .backend(backend)
            .fork(|| expected.clone())
            .unwrap();
        assert_eq!(bytes.len(), expected.len(), "{backend:?}");
        assert!(bytes == expected, "{backend:?}: the bytes differ");
    }
    let empty: Vec<u8> = bombsquad::fork(Vec::new).unwrap();
    assert!(empty.is_empty());
}

#[test]
fn the_builder_applies_backend_timeout_and_panic_mode() {
    common::watchdog();
    let pipe = Isolate::new().backend(Backend::Pipe);
    assert_eq!(pipe.fork(|| "via pipe".to_owned()).unwrap(), "via pipe");

    let bounded = Isolate::new().timeout(Duration::from_millis(200));
    match bounded.fork(|| std::thread::sleep(Duration::from_secs(60))) {
        Err(Error::Timeout { after, .. }) => assert_eq!(after, Duration::from_millis(200)),
        other => panic!("expected Timeout, got {other:?}"),
    }

    let as_error = Isolate::new().panic_mode(PanicMode::Error);
    match as_error.fork(|| -> u8 { panic!("closure panic") }) {
        Err(Error::Panicked {
            message, location, ..
        }) => {
            assert_eq!(message, "closure panic");
            assert_eq!(location.unwrap().file, file!());
        }
        other => panic!("expected Panicked, got {other:?}"),
    }
}

/// A closure that never returns has the result type `!` under edition
/// 2024 (this crate's): it compiles, its call can only fail (`let Err(..)`
/// is irrefutable), and how it ended is reported exactly.
#[test]
fn closures_that_never_return_report_how_they_ended() {
    common::watchdog();
    let Err(aborted) = bombsquad::fork(|| std::process::abort());
    match aborted {
        Error::NonzeroExitcode(report) => {
            assert_eq!(report.signal(), Some(libc::SIGABRT), "{report}");
            assert_eq!(report.exitcode(), -libc::SIGABRT);
        }
        other => panic!("expected NonzeroExitcode, got {other:?}"),
    }

    let Err(exited) = Isolate::new()
        .backend(Backend::Pipe)
        .fork(|| unsafe { libc::_exit(3) });
    match exited {
        Error::NonzeroExitcode(report) => {
            assert_eq!((report.signal(), report.exitcode()), (None, 3), "{report}");
        }
        other => panic!("expected NonzeroExitcode, got {other:?}"),
    }

    let as_error = Isolate::new().panic_mode(PanicMode::Error);
    match as_error.fork(|| panic!("never returns")) {
        Err(Error::Panicked { message, .. }) => assert_eq!(message, "never returns"),
        other => panic!("expected Panicked, got {other:?}"),
    }
}

#[test]
fn an_unusable_temp_dir_is_a_spawn_error_naming_it() {
    common::watchdog();
    let isolate = Isolate::new().temp_dir("/proc/version/x");
    match isolate.fork(|| 1) {
        Err(Error::Spawn { what, source }) => {
            assert_eq!(what, "create the reply file in /proc/version/x");
            assert_eq!(source.raw_os_error(), Some(libc::ENOTDIR));
        }
        other => panic!("expected Spawn, got {other:?}"),
    }
    // The pipe backend needs no temp dir at all.
    let pipe = Isolate::new()
        .temp_dir("/proc/version/x")
        .backend(Backend::Pipe);
    assert_eq!(pipe.fork(|| 1).unwrap(), 1);
}

#[test]
fn the_reply_file_has_no_name_and_mode_0600() {
    common::watchdog();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let (names, mode) = Isolate::new()
        .temp_dir(&path)
        .fork(move || {
            let names: Vec<String> = std::fs::read_dir(&path)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            let fd = common::reply_fd_in_child();
            let mode = std::fs::metadata(format!("/proc/self/fd/{fd}"))
                .unwrap()
                .permissions()
                .mode();
            (names, mode & 0o777)
        })
        .unwrap();
    assert_eq!(
        names,
        Vec::<String>::new(),
        "nothing is ever visible in the temp dir"
    );
    assert_eq!(mode, 0o600);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing left behind"
    );
}

#[test]
fn the_child_has_only_stdio_and_its_reply_channel() {
    common::watchdog();
    let _kept_open = std::fs::File::open("/dev/null").unwrap();
    let fds = bombsquad::fork(|| common::open_fds().into_keys().collect::<Vec<_>>()).unwrap();
    // 0-2, the reply channel, and the directory read_dir had open.
    assert_eq!(fds.len(), 5, "{fds:?}");
    assert_eq!(&fds[..3], &[0, 1, 2]);
}
