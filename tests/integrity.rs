//! A reply is this call's, whole and unchanged, and no larger than the
//! caller accepts, or the call is an error: never another call's value,
//! never flipped bytes decoded as a value, and never an allocation the
//! child dictates. Children here write frames by hand, as a buggy worker,
//! a crashing C library scribbling on a reused descriptor, or a lying child
//! would. The same through `RemoteWorker` is in `remote_worker.rs`.

#![allow(
    clippy::undocumented_unsafe_blocks,
    reason = "misbehaving children call libc on purpose"
)]

mod common;

use std::os::fd::RawFd;
use std::time::Duration;

use bombsquad::{Backend, Error, Isolate, PanicMode, Task, Worker, WorkerOptions, bombsquad};

/// Inside a worker: where it answers the parent (the only pipe above stdio
/// that it writes; the other one brings its requests).
fn worker_channel() -> RawFd {
    common::open_fds()
        .into_iter()
        .find(|(fd, target)| *fd > 2 && target.starts_with("pipe:") && write_only(*fd))
        .map(|(fd, _)| fd)
        .expect("no answer pipe in this worker")
}

/// Whether this process opened `fd` write-only (`O_WRONLY` in its flags).
fn write_only(fd: RawFd) -> bool {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap_or_default();
    info.lines()
        .find_map(|line| line.strip_prefix("flags:"))
        .and_then(|flags| u32::from_str_radix(flags.trim(), 8).ok())
        .is_some_and(|flags| flags & 0o3 == 0o1)
}

/// Options for a fork-mode call on `backend`, with a timeout: a forked
/// child of this multi-threaded test process could block on a lock
/// another test thread held at the fork.
fn forking(backend: Backend) -> Isolate {
    Isolate::new()
        .backend(backend)
        .timeout(Duration::from_secs(30))
}

/// `x` as MessagePack (a positive fixint).
fn fixint(x: u8) -> Vec<u8> {
    assert!(x < 0x80);
    vec![x]
}

/// A valid `Return` frame for the call in flight with one payload bit
/// flipped at `at`, as a scribbling library might leave it.
fn flipped_return(payload: &[u8], at: usize) -> Vec<u8> {
    let mut frame = common::frame(common::RETURN_FRAME, payload);
    frame[common::HEADER_LEN + at] ^= 0x08;
    frame
}

/// The message of an `Error::Protocol` that names a checksum mismatch.
fn checksum_mismatch<T: std::fmt::Debug>(result: Result<T, Error>) -> String {
    let message = common::protocol_error(result);
    assert!(
        message.starts_with("checksum mismatch in a Return frame"),
        "{message}"
    );
    message
}

// ---------------------------------------------------------------------------
// A worker out of step

/// Writes a valid answer for its own call to its channel, then (a moment
/// later, so the parent has taken the first) returns: two answers.
#[bombsquad(pool = 1)]
fn answers_twice(x: u8) -> u8 {
    common::write_raw(
        worker_channel(),
        &common::frame(common::RETURN_FRAME, &fixint(x)),
    );
    std::thread::sleep(Duration::from_millis(500));
    x
}

#[test]
fn a_pooled_function_that_answers_twice_never_answers_the_next_caller() {
    common::watchdog();
    // The parent takes the first answer at once, the second comes 500 ms
    // later (on a machine too loaded to wake the parent within 500 ms,
    // both arrive together: an error for this call instead).
    match answers_twice(1) {
        Ok(value) => assert_eq!(value, 1),
        Err(Error::Protocol { message, .. }) => {
            assert_eq!(message, "25 bytes after the Return frame");
            return;
        }
        Err(other) => panic!("expected its own value or Protocol, got {other:?}"),
    }
    std::thread::sleep(Duration::from_millis(1000));
    // The second answer waits in the channel: the next caller's request
    // finds it there. Before call ids, this call returned `Ok(1)`.
    let err = answers_twice(2).unwrap_err();
    let Error::Protocol {
        message, function, ..
    } = &err
    else {
        panic!("expected a protocol error, got {err:?}")
    };
    assert_eq!(
        message,
        "25 bytes were waiting in the worker's channel before the request: \
         a reply that belongs to no call"
    );
    // The error names the function, not "the isolated call".
    assert_eq!(function.as_deref(), Some("answers_twice"));
    assert!(err.to_string().starts_with("answers_twice (pid "), "{err}");
    // A fresh worker took over.
    assert!(matches!(
        answers_twice(3),
        Ok(3) | Err(Error::Protocol { .. })
    ));
    std::thread::sleep(Duration::from_millis(1000));
    for x in 4..7 {
        match answers_twice(x) {
            Ok(value) => assert_eq!(value, x, "its own value"),
            Err(Error::Protocol { .. }) => {}
            Err(other) => panic!("expected its own value or Protocol, got {other:?}"),
        }
    }
}

/// Sends its answer with one payload bit flipped, then its real one.
#[bombsquad(pool = 1)]
fn pooled_scribbler(x: u8, scribble: bool) -> u8 {
    if scribble {
        common::write_raw(worker_channel(), &flipped_return(&fixint(x ^ 1), 0));
    }
    x
}

#[test]
fn a_flipped_bit_in_a_workers_answer_is_a_protocol_error() {
    common::watchdog();
    assert_eq!(pooled_scribbler(6, false).unwrap(), 6);
    let message = checksum_mismatch(pooled_scribbler(8, true));
    assert!(message.contains("of 1 bytes: it says "), "{message}");
    assert_eq!(pooled_scribbler(10, false).unwrap(), 10, "a fresh worker");
}

// ---------------------------------------------------------------------------
// One-shot children

/// Writes `frame` to the reply channel and leaves with code 0, as a child
/// whose reply was damaged would.
fn reply_with(frame: &[u8]) -> ! {
    common::write_raw(common::reply_fd_in_child(), frame);
    unsafe { libc::_exit(0) }
}

#[bombsquad(backend = "file")]
fn spawned_scribbler_file(len: usize, at: usize) -> Vec<u8> {
    reply_with(&flipped_return(&bin(len), at))
}

#[bombsquad(backend = "pipe")]
fn spawned_scribbler_pipe(len: usize, at: usize) -> Vec<u8> {
    reply_with(&flipped_return(&bin(len), at))
}

#[bombsquad(backend = "shm")]
fn spawned_scribbler_shm(len: usize, at: usize) -> Vec<u8> {
    reply_with(&flipped_return(&bin(len), at))
}

/// A `Vec<u8>` of `len` bytes as MessagePack (`bin 32`).
fn bin(len: usize) -> Vec<u8> {
    let mut payload = vec![0xc6];
    payload.extend_from_slice(&u32::try_from(len).unwrap().to_be_bytes());
    payload.extend((0..len).map(|i| (i % 251) as u8));
    payload
}

#[test]
fn a_flipped_bit_in_a_reply_is_a_protocol_error_on_every_backend() {
    common::watchdog();
    let backends = [Backend::File, Backend::Pipe, Backend::Shm];
    // Short, and long enough for the file backend to leave it in the file
    // (flipped in its bin header, its middle and its last byte).
    for (len, at) in [
        (100, 50),
        (2 << 20, 2),
        (2 << 20, 1 << 20),
        (2 << 20, (2 << 20) + 4),
    ] {
        for backend in backends {
            let forked =
                forking(backend).fork(|| -> Vec<u8> { reply_with(&flipped_return(&bin(len), at)) });
            let message = checksum_mismatch(forked);
            assert!(
                message.contains(&format!("of {} bytes", len + 5)),
                "{message}"
            );
        }
        for spawned in [
            spawned_scribbler_file,
            spawned_scribbler_pipe,
            spawned_scribbler_shm,
        ] {
            checksum_mismatch(spawned(len, at));
        }
    }
}

/// A `String` of `len` bytes as MessagePack (`str 32`): decoded through
/// serde, borrowed from the memfd's mapping on the shm backend.
fn str32(len: usize) -> Vec<u8> {
    let mut payload = vec![0xdb];
    payload.extend_from_slice(&u32::try_from(len).unwrap().to_be_bytes());
    payload.extend(std::iter::repeat_n(b'x', len));
    payload
}

#[test]
fn a_flipped_bit_in_a_result_decoded_in_place_is_a_protocol_error() {
    common::watchdog();
    for backend in [Backend::File, Backend::Pipe, Backend::Shm] {
        let forked = forking(backend)
            .fork(|| -> String { reply_with(&flipped_return(&str32(2 << 20), 1 << 20)) });
        checksum_mismatch(forked);
        let whole = forking(backend)
            .fork(|| -> String {
                reply_with(&common::frame(common::RETURN_FRAME, &str32(2 << 20)))
            })
            .unwrap();
        assert_eq!(whole.len(), 2 << 20, "{backend:?}");
    }
}

#[test]
fn a_reply_without_a_flipped_bit_is_a_value() {
    common::watchdog();
    for backend in [Backend::File, Backend::Pipe, Backend::Shm] {
        let value = forking(backend)
            .fork(|| -> Vec<u8> { reply_with(&common::frame(common::RETURN_FRAME, &bin(1 << 20))) })
            .unwrap();
        assert!(value == bin(1 << 20)[5..], "{backend:?}");
    }
}

// ---------------------------------------------------------------------------
// max_result on every backend

const MIB: usize = 1 << 20;

#[test]
fn a_result_over_max_result_is_refused_on_every_backend() {
    common::watchdog();
    for backend in [Backend::Pipe, Backend::File, Backend::Shm] {
        let limited = forking(backend).max_result(MIB as u64);
        // Under the limit, with room for the frame around it.
        let fits = limited.fork(|| vec![3u8; MIB - 5]).unwrap();
        assert_eq!(fits.len(), MIB - 5, "{backend:?}");
        // Over it by one byte: the result's own size is named.
        match limited.fork(|| vec![3u8; MIB - 4]) {
            Err(Error::ResultTooLarge { size, limit }) => {
                assert_eq!((size, limit), (MIB as u64 + 1, MIB as u64), "{backend:?}");
            }
            other => panic!("{backend:?}: expected ResultTooLarge, got {other:?}"),
        }
        // Over it by far: refused from the frame's header...
        match limited.fork(|| vec![3u8; 8 * MIB]) {
            Err(Error::ResultTooLarge { size, limit }) => {
                assert_eq!(
                    (size, limit),
                    (8 * MIB as u64 + 5, MIB as u64),
                    "{backend:?}"
                );
            }
            other => panic!("{backend:?}: expected ResultTooLarge, got {other:?}"),
        }
        // ... or, past the 16 MiB a reply may hold besides its result, from
        // the reply file's (memfd's) length alone, before reading a byte.
        let expected = match backend {
            Backend::Pipe => 24 * MIB as u64 + 5,
            _ => 24 * MIB as u64 + 5 + common::HEADER_LEN as u64,
        };
        match limited.fork(|| vec![3u8; 24 * MIB]) {
            Err(Error::ResultTooLarge { size, limit }) => {
                assert_eq!((size, limit), (expected, MIB as u64), "{backend:?}");
            }
            other => panic!("{backend:?}: expected ResultTooLarge, got {other:?}"),
        }
    }
}

#[test]
fn a_panic_report_is_not_held_to_a_small_max_result() {
    common::watchdog();
    for backend in [Backend::Pipe, Backend::File, Backend::Shm] {
        let message = "m".repeat(4096);
        let result = forking(backend)
            .max_result(16)
            .panic_mode(PanicMode::Error)
            .stderr(bombsquad::Stderr::Capture)
            .fork(|| -> u8 { std::panic::panic_any(message.clone()) });
        match result {
            Err(Error::Panicked { message: got, .. }) => assert_eq!(got, message, "{backend:?}"),
            other => panic!("{backend:?}: expected Panicked, got {other:?}"),
        }
    }
}

#[test]
fn panics_the_function_caught_do_not_crowd_out_its_result() {
    common::watchdog();
    // Each caught panic leaves a report in the reply: 300 of 4 KiB.
    for backend in [Backend::Pipe, Backend::File, Backend::Shm] {
        let value = forking(backend)
            .stderr(bombsquad::Stderr::Capture)
            .fork(|| {
                for _ in 0..300 {
                    let caught =
                        std::panic::catch_unwind(|| std::panic::panic_any("p".repeat(4096)));
                    assert!(caught.is_err());
                }
                7u8
            });
        assert_eq!(value.unwrap(), 7, "{backend:?}");
    }
}

#[test]
fn the_error_names_the_size_and_the_limit() {
    let error = Error::ResultTooLarge {
        size: 3 << 30,
        limit: 1 << 30,
    };
    assert_eq!(
        error.to_string(),
        "the isolated call's reply is 3.0 GiB (3221225472 bytes), more than its max_result of \
         1.0 GiB (1073741824 bytes); raise Isolate::max_result if results this large are expected"
    );
}

/// A large `Vec<u8>`: it crosses through the worker's arena.
#[bombsquad(pool = 1)]
fn pooled_bytes(len: usize) -> Vec<u8> {
    vec![9; len]
}

#[test]
fn a_result_in_the_arena_over_max_result_is_refused() {
    common::watchdog();
    assert_eq!(pooled_bytes(2 * MIB).unwrap().len(), 2 * MIB);
    let limited = Isolate::new().max_result(MIB as u64);
    // The arena holds the bytes; the limit is checked before they are read.
    match limited.scope(|| pooled_bytes(2 * MIB)) {
        Err(Error::ResultTooLarge { size, limit }) => {
            assert_eq!((size, limit), (2 * MIB as u64, MIB as u64));
        }
        other => panic!("expected ResultTooLarge, got {other:?}"),
    }
    assert_eq!(limited.scope(|| pooled_bytes(MIB)).unwrap().len(), MIB);
}

#[derive(Default)]
struct Texts;

#[bombsquad]
impl Task for Texts {
    type Input = usize;
    type Output = String;
    type Error = ();

    fn run(&mut self, len: usize) -> Result<String, ()> {
        Ok("x".repeat(len))
    }
}

#[test]
fn a_workers_result_over_max_result_is_refused_and_the_worker_replaced() {
    common::watchdog();
    let isolate = Isolate::new()
        .max_result(64 << 10)
        .panic_mode(PanicMode::Error);
    let worker = Worker::<Texts>::spawn_with(WorkerOptions::new().isolate(isolate)).unwrap();
    let first = worker.pid().unwrap();
    // {"Ok": <str 16>}: 7 bytes around the text.
    assert_eq!(
        worker.call((64 << 10) - 7).unwrap().unwrap().len(),
        (64 << 10) - 7
    );
    match worker.call((64 << 10) - 6) {
        Err(Error::ResultTooLarge { size, limit }) => {
            assert_eq!((size, limit), ((64 << 10) + 1, 64 << 10))
        }
        other => panic!("expected ResultTooLarge, got {other:?}"),
    }
    assert!(!common::process_exists(first), "the worker was killed");
    assert_eq!(worker.restarts(), 1);
    assert_eq!(worker.call(3).unwrap().unwrap(), "xxx");
}

// ---------------------------------------------------------------------------
// A reply file the child made huge for free

/// Writes a small, valid result, then extends the reply file with 1 GiB of
/// holes (`ftruncate` costs the child nothing).
fn sparse_reply() -> u8 {
    let fd = common::reply_fd_in_child();
    common::write_raw(fd, &common::frame(common::RETURN_FRAME, &fixint(42)));
    unsafe {
        assert_eq!(libc::ftruncate(fd, 1 << 30), 0);
        libc::_exit(0)
    }
}

#[bombsquad(backend = "file")]
fn spawned_sparse() -> u8 {
    sparse_reply()
}

#[bombsquad(start_method = "forkserver", backend = "file")]
fn forkserved_sparse() -> u8 {
    sparse_reply()
}

/// This process's peak resident set, in bytes.
fn peak_rss() -> u64 {
    common::status_bytes("VmHWM")
}

#[test]
fn a_sparse_reply_file_costs_the_parent_its_headers_only() {
    common::watchdog();
    common::scenario::run(common::scenario::command("scenario_a_sparse_reply_file"));
}

#[test]
fn scenario_a_sparse_reply_file() {
    if !common::scenario::is("scenario_a_sparse_reply_file") {
        return;
    }
    let before = peak_rss();
    let forked = forking(Backend::File).fork(|| -> u8 { sparse_reply() });
    for result in [forked, spawned_sparse(), forkserved_sparse()] {
        // Found malformed at the first header past the result.
        assert_eq!(
            common::protocol_error(result),
            "bad frame magic [00, 00, 00, 00]"
        );
    }
    let grown = peak_rss().saturating_sub(before);
    // Before, the parent read the whole 1 GiB file, three times.
    assert!(
        grown < 16 << 20,
        "the parent's peak RSS grew by {grown} bytes"
    );
}

#[bombsquad(max_result = "1MiB", backend = "pipe")]
fn limited_by_the_attribute(len: usize) -> Vec<u8> {
    vec![3u8; len]
}

#[bombsquad(max_result = "1MiB", start_method = "forkserver")]
fn limited_forkserved(len: usize) -> Vec<u8> {
    vec![3u8; len]
}

#[test]
fn the_attribute_sets_max_result_for_spawn_and_forkserver() {
    common::watchdog();
    for call in [limited_by_the_attribute, limited_forkserved] {
        assert_eq!(call(MIB - 5).unwrap().len(), MIB - 5);
        match call(MIB - 4) {
            Err(Error::ResultTooLarge { size, limit }) => {
                assert_eq!((size, limit), (MIB as u64 + 1, MIB as u64));
            }
            other => panic!("expected ResultTooLarge, got {other:?}"),
        }
    }
}
