//! `RemoteWorker` driving a worker written in another language: the Python
//! worker in `tests/python/` (standard library only), which implements
//! PROTOCOL.md, and small inline Python programs that break it on purpose.
//!
//! Every test ends by checking that no child, zombie or descriptor is left
//! once its pool is gone. Those checks see the whole process, so the tests
//! take turns.
//!
//! python3 (3.8 or later) must be on PATH: without it these tests fail and
//! say so; they never skip.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::os::fd::RawFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use bombsquad::{CodecStage, Error, Isolate, PanicMode, RemoteWorker, Stderr, WorkerOptions};
use serde::{Deserialize, Serialize};

/// The demo worker: ops that answer, raise, crash, sleep.
const DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/worker_demo.py");

/// The demo's answers: `{"Ok": v}` or `{"Err": message}`.
type Answer<T> = Result<T, String>;

// ---------------------------------------------------------------------------
// Requests: maps with an "op", as the demo expects.

#[derive(Serialize)]
struct Plain {
    op: &'static str,
}

fn plain(op: &'static str) -> Plain {
    Plain { op }
}

#[derive(Serialize)]
struct Double {
    op: &'static str,
    x: i64,
}

#[derive(Serialize)]
struct Sleep {
    op: &'static str,
    seconds: f64,
}

#[derive(Serialize)]
struct Exit {
    op: &'static str,
    code: i32,
}

#[derive(Serialize)]
struct Steps {
    op: &'static str,
    steps: u32,
}

/// Everything the echo op must send back unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Everything {
    op: String,
    text: String,
    long_text: String,
    empty: String,
    negatives: Vec<i64>,
    positives: Vec<u64>,
    floats: Vec<f64>,
    maybe: Option<String>,
    nothing: Option<i32>,
    yes: bool,
    no: bool,
    nested: Vec<Vec<Inner>>,
    map: BTreeMap<String, Vec<bool>>,
    #[serde(with = "serde_bytes")]
    every_byte: Vec<u8>,
    #[serde(with = "serde_bytes")]
    no_bytes: Vec<u8>,
    #[serde(with = "serde_bytes")]
    big_bytes: Vec<u8>,
    kind: Kind,
    pair: (i8, String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Inner {
    name: String,
    score: f64,
    tags: Vec<String>,
}

/// A unit variant travels as its name.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
enum Kind {
    Small,
    Large,
}

fn everything() -> Everything {
    Everything {
        op: "echo".to_owned(),
        text: "héllo wörld — 你好 — 🦀💣 — e\u{301} — tab\tnul\0".to_owned(),
        long_text: "ünïcödé ".repeat(5000),
        empty: String::new(),
        negatives: vec![
            -1,
            -32,
            -33,
            -128,
            -129,
            -32_768,
            -32_769,
            i64::from(i32::MIN),
            i64::from(i32::MIN) - 1,
            i64::MIN,
        ],
        positives: vec![
            0,
            127,
            128,
            255,
            256,
            65_535,
            65_536,
            u64::from(u32::MAX),
            u64::from(u32::MAX) + 1,
            u64::MAX,
        ],
        floats: vec![
            0.0,
            1.5,
            -0.1,
            -2.25e-300,
            f64::MAX,
            f64::MIN_POSITIVE,
            f64::EPSILON,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ],
        maybe: Some("present".to_owned()),
        nothing: None,
        yes: true,
        no: false,
        nested: vec![
            vec![],
            vec![Inner {
                name: "ä".to_owned(),
                score: -3.5,
                tags: vec!["x".to_owned(), String::new()],
            }],
            vec![
                Inner {
                    name: "b".to_owned(),
                    score: 1e10,
                    tags: vec![],
                };
                3
            ],
        ],
        map: BTreeMap::from([
            ("clé".to_owned(), vec![true, false]),
            (String::new(), vec![]),
        ]),
        every_byte: (0..=255).collect(),
        no_bytes: Vec::new(),
        big_bytes: (0..(2 << 20) + 7).map(|i: u32| (i % 251) as u8).collect(),
        kind: Kind::Large,
        pair: (-7, "seven".to_owned()),
    }
}

// ---------------------------------------------------------------------------
// Workers

/// Fails the test, with a reason, unless python3 (3.8+) can be run.
fn require_python() {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let checked = CHECKED.get_or_init(|| {
        let version_check = "import sys; sys.exit(0 if sys.version_info >= (3, 8) else 1)";
        match Command::new("python3").args(["-c", version_check]).output() {
            Ok(output) if output.status.success() => Ok(()),
            Ok(output) => Err(format!(
                "python3 is older than 3.8 ({}; {})",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )),
            Err(e) => Err(format!("python3 could not be run: {e}")),
        }
    });
    if let Err(why) = checked {
        panic!(
            "tests/remote_worker.rs needs python3 (3.8 or later) on PATH to run its Python \
             worker (tests/python/worker_demo.py), and {why}"
        );
    }
}

/// Starts the demo worker (`-B`: no `__pycache__` in the source tree).
fn demo() -> impl Fn() -> Command + Send + Sync + 'static {
    || {
        let mut python = Command::new("python3");
        python.args(["-B", DEMO]);
        python
    }
}

/// Starts `python3 -c script`.
fn inline(script: &'static str) -> impl Fn() -> Command + Send + Sync + 'static {
    move || {
        let mut python = Command::new("python3");
        python.args(["-c", script]);
        python
    }
}

/// One worker, panics as errors, a timeout far above what a test takes.
fn options() -> WorkerOptions {
    with_isolate(Isolate::new().timeout(Duration::from_secs(20)))
}

fn with_isolate(isolate: Isolate) -> WorkerOptions {
    WorkerOptions::new()
        .workers(1)
        .isolate(isolate.panic_mode(PanicMode::Error))
}

fn pid_of(worker: &RemoteWorker) -> u32 {
    let pid: Answer<u32> = worker.call(&plain("pid")).expect("the pid op");
    pid.expect("the pid op answers Ok")
}

/// Where the demo raises its ValueError.
fn line_of_raise() -> u32 {
    let source = std::fs::read_to_string(DEMO).unwrap();
    let index = source
        .lines()
        .position(|line| line.trim() == "raise ValueError(\"boom\")")
        .expect("the demo raises ValueError(\"boom\")");
    u32::try_from(index + 1).unwrap()
}

/// `python3 -c` with a program that breaks the protocol on purpose: `body`
/// after helpers that write frames by hand, with the layout of PROTOCOL.md
/// (`hello(version)` sends `{"protocol": version, "pid": 0}`; `request()`
/// reads a request and makes `frame` answer its call id).
macro_rules! python_worker {
    ($body:expr) => {
        inline(concat!(
            r#"
import os, socket, struct, sys, time, zlib
s = socket.socket(fileno=0)
call = 0
def header(kind, length, crc=0):
    return b"BSQ\x02" + bytes([kind, 0, 0, 0]) + struct.pack("<IIQ", call, crc, length)
def frame(kind, payload):
    crc = zlib.crc32(header(kind, len(payload)) + payload)
    return header(kind, len(payload), crc) + payload
def request():
    global call
    data = s.recv(1 << 16)
    call = struct.unpack("<I", data[8:12])[0]
    return data
def send(kind, payload):
    s.sendall(frame(kind, payload))
def hello(version):
    send(4, b"\x82\xa8protocol" + bytes([version]) + b"\xa3pid\x00")
"#,
            $body
        ))
    };
}

// ---------------------------------------------------------------------------
// Hygiene

/// A test's turn: taken first, checked last.
struct Turn {
    fds: BTreeMap<RawFd, String>,
    _turn: MutexGuard<'static, ()>,
}

fn turn() -> Turn {
    static TURN: Mutex<()> = Mutex::new(());
    common::watchdog();
    require_python();
    let turn = TURN.lock().unwrap_or_else(PoisonError::into_inner);
    // A test that failed left its workers to the keeper: let it reap them
    // before this test takes stock.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !common::call_children(std::process::id()).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    Turn {
        fds: common::open_fds(),
        _turn: turn,
    }
}

impl Turn {
    /// Once the pool is dropped: every worker is reaped (the keeper thread
    /// reaps retired ones a moment later) and every descriptor is closed.
    fn check(self) {
        let me = std::process::id();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let children = common::call_children(me);
            let fds = common::open_fds();
            if children.is_empty() && fds == self.fds {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "left behind: children {children:?} (zombies {:?}); descriptors before {:?}, \
                 after {fds:?}",
                common::zombie_children(),
                self.fds
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// This process's CPU time, all threads.
fn cpu_time() -> Duration {
    // SAFETY: an all-zero rusage is valid; getrusage fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is valid for writes.
    let status = unsafe { libc::getrusage(libc::RUSAGE_SELF, &raw mut usage) };
    assert_eq!(status, 0);
    let micros = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.cast_unsigned())
            + Duration::from_micros(t.tv_usec.cast_unsigned())
    };
    micros(usage.ru_utime) + micros(usage.ru_stime)
}

// ---------------------------------------------------------------------------
// Answers

#[test]
fn double_answers_with_the_exact_value() {
    let turn = turn();
    let worker = RemoteWorker::spawn_with(demo(), options()).unwrap();
    for (x, doubled) in [
        (21, 42),
        (-21, -42),
        (0, 0),
        (1 << 40, 1 << 41),
        (i64::MIN / 2, i64::MIN),
    ] {
        let answer: Answer<i64> = worker.call(&Double { op: "double", x }).unwrap();
        assert_eq!(answer, Ok(doubled), "double {x}");
    }
    let unknown: Answer<i64> = worker.call(&plain("nope")).unwrap();
    assert_eq!(unknown, Err("unknown op 'nope'".to_owned()));
    assert_eq!(worker.restarts(), 0);
    drop(worker);
    turn.check();
}

#[test]
fn echo_round_trips_every_kind_of_value() {
    let turn = turn();
    let worker = RemoteWorker::spawn_with(demo(), options()).unwrap();
    let sent = everything();
    let back: Answer<Everything> = worker.call(&sent).unwrap();
    assert_eq!(back, Ok(sent.clone()));
    // Again, on the same worker: its channel is in step.
    let back: Answer<Everything> = worker.call(&sent).unwrap();
    assert_eq!(back, Ok(sent));
    assert_eq!(worker.restarts(), 0);
    drop(worker);
    turn.check();
}

#[test]
fn progress_frames_before_the_answer_are_skipped() {
    let turn = turn();
    let worker = RemoteWorker::spawn_with(demo(), options()).unwrap();
    let pid = pid_of(&worker);
    for steps in [3, 0, 2000] {
        let answer: Answer<u32> = worker
            .call(&Steps {
                op: "progress",
                steps,
            })
            .unwrap();
        assert_eq!(answer, Ok(steps));
    }
    assert_eq!(pid_of(&worker), pid);
    drop(worker);
    turn.check();
}

// ---------------------------------------------------------------------------
// Exceptions and codec failures: the worker lives on

#[test]
fn an_exception_is_a_panic_and_the_worker_survives() {
    let turn = turn();
    let worker = RemoteWorker::spawn_with(demo(), options()).unwrap();
    let pid = pid_of(&worker);
    match worker.call::<_, Answer<i64>>(&plain("raise")) {
        Err(Error::Panicked {
            message,
            location,
            backtrace,
            ..
        }) => {
            assert_eq!(message, "ValueError: boom");
            let location = location.expect("the raising frame");
            assert_eq!(location.file, DEMO);
            assert_eq!(location.line, line_of_raise());
            let backtrace = backtrace.expect("the traceback");
            assert!(
                backtrace.starts_with("Traceback (most recent call last):"),
                "{backtrace}"
            );
            assert!(backtrace.ends_with("ValueError: boom\n"), "{backtrace}");
        }
        other => panic!("expected Panicked, got {other:?}"),
    }
    assert_eq!(pid_of(&worker), pid, "the same worker serves the next call");
    assert_eq!(worker.restarts(), 0);
    drop(worker);
    turn.check();
}

#[test]
fn an_exception_is_re_raised_in_resume_mode() {
    let turn = turn();
    let options = WorkerOptions::new().isolate(Isolate::new().timeout(Duration::from_secs(20)));
    let worker = RemoteWorker::spawn_with(demo(), options).unwrap();
    let pid = pid_of(&worker);
    let payload = catch_unwind(AssertUnwindSafe(|| {
        worker.call::<_, Answer<i64>>(&plain("raise"))
    }))
    .expect_err("the panic is re-raised in the caller");
    assert_eq!(
        payload.downcast_ref::<String>().map(String::as_str),
        Some("ValueError: boom")
    );
    assert_eq!(pid_of(&worker), pid);
    drop(worker);
    turn.check();
}

#[test]
fn an_answer_the_worker_cannot_encode_is_a_codec_error() {
    let turn = turn();
    let worker = RemoteWorker::spawn_with(demo(), options()).unwrap();
    let pid = pid_of(&worker);
    match worker.call::<_, Answer<Vec<i64>>>(&plain("unencodable")) {
        Err(Error::Codec { stage, message }) => {
            assert_eq!(stage, CodecStage::EncodeResult);
            assert_eq!(
                message,
                "cannot encode value['Ok'] of type set as MessagePack (supported: None, bool, \
                 int, float, str, bytes, list, tuple, dict)"
            );
        }
        other => panic!("expected a codec error, got {other:?}"),
    }
    assert_eq!(pid_of(&worker), pid);
    drop(worker);
    turn.check();
}

/// A MessagePack ext value (rmp_serde's `_ExtStruct`), which the Python
/// decoder refuses.
#[derive(Serialize)]
#[serde(rename = "_ExtStruct")]
struct ExtValue((i8, serde_bytes::ByteBuf));

#[derive(Serialize)]
struct EchoExt {
    op: &'static str,
    value: ExtValue,
}

#[test]
fn a_request_the_worker_cannot_decode_is_a_codec_error() {
    let turn = turn();
    let worker = RemoteWorker::spawn_with(demo(), options()).unwrap();
    let pid = pid_of(&worker);
    let request = EchoExt {
        op: "echo",
        value: ExtValue((5, serde_bytes::ByteBuf::from(vec![1, 2, 3]))),
    };
    match worker.call::<_, Answer<()>>(&request) {
        Err(Error::Codec { stage, message }) => {
            assert_eq!(stage, CodecStage::DecodeArguments);
            assert_eq!(
                message,
                "MessagePack ext type (marker 0xc7) at offset 15 is not supported"
            );
        }
        other => panic!("expected a codec error, got {other:?}"),
    }
    assert_eq!(pid_of(&worker), pid);
    drop(worker);
    turn.check();
}

// ---------------------------------------------------------------------------
// Deaths: only the call fails, a fresh worker takes the next one

#[test]
fn a_segfault_fails_the_call_and_a_fresh_worker_takes_the_next() {
    let turn = turn();
    let options = with_isolate(
        Isolate::new()
            .timeout(Duration::from_secs(20))
            .stderr(Stderr::Capture),
    );
    let worker = RemoteWorker::spawn_with(demo(), options).unwrap();
    let first = pid_of(&worker);
    match worker.call::<_, Answer<()>>(&plain("crash")) {
        Err(Error::NonzeroExitcode(exit)) => {
            assert_eq!(exit.signal(), Some(libc::SIGSEGV));
            assert_eq!(exit.signal_name(), Some("SIGSEGV"));
            assert_eq!(exit.exitcode(), -libc::SIGSEGV);
            assert_eq!(exit.code(), None);
            assert_eq!(exit.pid(), first);
            assert_eq!(exit.stderr_tail(), b"worker_demo: crashing on purpose\n");
        }
        other => panic!("expected NonzeroExitcode, got {other:?}"),
    }
    assert!(
        !common::process_exists(first),
        "the crashed worker is reaped"
    );
    let second = pid_of(&worker);
    assert_ne!(second, first);
    assert_eq!(worker.pid(), Some(second));
    assert_eq!(worker.restarts(), 1);
    drop(worker);
    turn.check();
}

#[test]
fn an_abort_is_sigabrt() {
    let turn = turn();
    let worker = RemoteWorker::spawn_with(demo(), options()).unwrap();
    let first = pid_of(&worker);
    match worker.call::<_, Answer<()>>(&plain("abort")) {
        Err(Error::NonzeroExitcode(exit)) => {
            assert_eq!(exit.signal(), Some(libc::SIGABRT));
            assert_eq!(exit.exitcode(), -libc::SIGABRT);
            assert_eq!(exit.pid(), first);
        }
        other => panic!("expected NonzeroExitcode, got {other:?}"),
    }
    assert_ne!(pid_of(&worker), first);
    assert_eq!(worker.restarts(), 1);
    drop(worker);
    turn.check();
}

#[test]
fn an_exit_is_its_code() {
    let turn = turn();
    let worker = RemoteWorker::spawn_with(demo(), options()).unwrap();
    match worker.call::<_, Answer<()>>(&Exit {
        op: "exit",
        code: 7,
    }) {
        Err(Error::NonzeroExitcode(exit)) => {
            assert_eq!(exit.code(), Some(7));
            assert_eq!(exit.signal(), None);
            assert_eq!(exit.exitcode(), 7);
        }
        other => panic!("expected NonzeroExitcode, got {other:?}"),
    }
    // Exit code 0 without an answer is not a success.
    let pid = pid_of(&worker);
    match worker.call::<_, Answer<()>>(&Exit {
        op: "exit",
        code: 0,
    }) {
        Err(Error::ZeroExitcodeWithoutPayload { pid: reported, .. }) => assert_eq!(reported, pid),
        other => panic!("expected ZeroExitcodeWithoutPayload, got {other:?}"),
    }
    assert_eq!(worker.restarts(), 2);
    assert_eq!(
        worker
            .call::<_, Answer<i64>>(&Double { op: "double", x: 1 })
            .unwrap(),
        Ok(2)
    );
    drop(worker);
    turn.check();
}

#[test]
fn a_worker_killed_while_idle_is_replaced_before_the_next_call() {
    let turn = turn();
    let worker = RemoteWorker::spawn_with(demo(), options()).unwrap();
    let first = pid_of(&worker);
    assert_eq!(worker.pid(), Some(first));
    // SAFETY: kill(2) with a pid that is our unreaped child (it cannot be
    // reused until the pool reaps it).
    assert_eq!(unsafe { libc::kill(first.cast_signed(), libc::SIGKILL) }, 0);
    common::wait_until_dead(first);
    let answer: Answer<i64> = worker
        .call(&Double {
            op: "double",
            x: 21,
        })
        .unwrap();
    assert_eq!(answer, Ok(42));
    assert_ne!(pid_of(&worker), first);
    assert_eq!(worker.restarts(), 1);
    drop(worker);
    turn.check();
}

#[test]
fn a_timeout_kills_the_worker_and_the_pool_goes_on() {
    let turn = turn();
    let timeout = Duration::from_millis(300);
    let worker =
        RemoteWorker::spawn_with(demo(), with_isolate(Isolate::new().timeout(timeout))).unwrap();
    let first = pid_of(&worker);
    let started = Instant::now();
    match worker.call::<_, Answer<f64>>(&Sleep {
        op: "sleep",
        seconds: 30.0,
    }) {
        Err(Error::Timeout { after, pid, .. }) => {
            assert_eq!(after, timeout);
            assert_eq!(pid, first);
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    let took = started.elapsed();
    assert!(took >= timeout && took < Duration::from_secs(5), "{took:?}");
    assert!(
        !common::process_exists(first),
        "the timed-out worker is reaped"
    );
    let answer: Answer<f64> = worker
        .call(&Sleep {
            op: "sleep",
            seconds: 0.01,
        })
        .unwrap();
    assert_eq!(answer, Ok(0.01));
    assert_eq!(worker.restarts(), 1);
    drop(worker);
    turn.check();
}

// ---------------------------------------------------------------------------
// Workers that never become ready

#[test]
fn a_worker_that_exits_before_hello_breaks_the_pool_after_five_attempts() {
    let turn = turn();
    let options = with_isolate(Isolate::new().stderr(Stderr::Capture));
    let started = Instant::now();
    let script = "import sys; sys.stderr.write('no model file\\n'); sys.exit(3)";
    match RemoteWorker::spawn_with(inline(script), options) {
        Err(Error::WorkerStartup {
            attempts,
            exitcode,
            stderr_tail,
            ..
        }) => {
            assert_eq!(attempts, 5);
            assert_eq!(exitcode, Some(3));
            assert_eq!(stderr_tail, b"no model file\n");
        }
        other => panic!("expected WorkerStartup, got {other:?}"),
    }
    // Backoff 50 + 100 + 200 + 400 ms, plus five Python starts.
    assert!(started.elapsed() < Duration::from_secs(10));
    turn.check();
}

#[test]
fn a_program_that_does_not_exist_is_a_spawn_error_at_once() {
    let turn = turn();
    let started = Instant::now();
    let missing = || Command::new("/nonexistent/bombsquad-worker");
    match RemoteWorker::spawn_with(missing, options()) {
        Err(Error::Spawn { what, source }) => {
            assert_eq!(source.raw_os_error(), Some(libc::ENOENT));
            assert!(what.contains("/nonexistent/bombsquad-worker"), "{what}");
        }
        other => panic!("expected Spawn, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1), "not retried");
    turn.check();
}

#[test]
fn garbage_instead_of_hello_breaks_the_pool() {
    let turn = turn();
    let worker = python_worker!("s.sendall(b'this is not a frame header'); time.sleep(30)");
    match RemoteWorker::spawn_with(worker, options()) {
        Err(Error::WorkerStartup {
            attempts,
            exitcode,
            reason,
            ..
        }) => {
            assert_eq!(attempts, 5);
            assert_eq!(exitcode, None, "killed by the parent, not ended by itself");
            assert!(reason.contains("bad frame magic"), "{reason}");
        }
        other => panic!("expected WorkerStartup, got {other:?}"),
    }
    turn.check();
}

#[test]
fn another_protocol_version_is_refused() {
    let turn = turn();
    let worker = python_worker!("hello(3); time.sleep(30)");
    match RemoteWorker::spawn_with(worker, options()) {
        Err(Error::WorkerStartup { reason, .. }) => {
            assert!(
                reason.contains("the worker speaks protocol 3, this library speaks 2"),
                "{reason}"
            );
        }
        other => panic!("expected WorkerStartup, got {other:?}"),
    }
    turn.check();
}

// ---------------------------------------------------------------------------
// Workers that break the protocol mid-call

#[test]
fn a_garbage_answer_is_a_protocol_error_and_kills_the_worker() {
    let turn = turn();
    let worker = python_worker!(
        "hello(2); request(); s.sendall(b'this is not a frame header'); time.sleep(30)"
    );
    let worker = RemoteWorker::spawn_with(worker, options()).unwrap();
    let pid = worker.pid().unwrap();
    match worker.call::<_, Answer<i64>>(&Double { op: "double", x: 1 }) {
        Err(Error::Protocol {
            pid: reported,
            message,
            ..
        }) => {
            assert_eq!(reported, pid);
            assert!(message.starts_with("bad frame magic"), "{message}");
        }
        other => panic!("expected Protocol, got {other:?}"),
    }
    assert!(
        !common::process_exists(pid),
        "the lying worker is killed and reaped"
    );
    assert_eq!(worker.restarts(), 1);
    drop(worker);
    turn.check();
}

#[test]
fn bytes_after_the_answer_are_a_protocol_error() {
    let turn = turn();
    // An answer, then a Progress frame, in one write.
    let worker = python_worker!(
        "hello(2); request(); s.sendall(frame(16, b'\\x2a') + frame(20, b'\\xc0')); \
         time.sleep(30)"
    );
    let worker = RemoteWorker::spawn_with(worker, options()).unwrap();
    let pid = worker.pid().unwrap();
    match worker.call::<_, i64>(&plain("anything")) {
        Err(Error::Protocol { message, .. }) => {
            assert_eq!(message, "25 bytes after the Return frame");
        }
        other => panic!("expected Protocol, got {other:?}"),
    }
    assert!(!common::process_exists(pid));
    drop(worker);
    turn.check();
}

#[test]
fn a_padding_frame_from_a_worker_is_a_protocol_error() {
    let turn = turn();
    // Kind 22 pads one-shot replies in a file; no worker may send it.
    let worker = python_worker!(
        "hello(2); request(); s.sendall(frame(22, b'\\0\\0') + frame(16, b'\\x2a')); \
         time.sleep(30)"
    );
    let worker = RemoteWorker::spawn_with(worker, options()).unwrap();
    let pid = worker.pid().unwrap();
    match worker.call::<_, i64>(&plain("anything")) {
        Err(Error::Protocol { message, .. }) => {
            assert_eq!(message, "unexpected Padding frame from the worker");
        }
        other => panic!("expected Protocol, got {other:?}"),
    }
    assert!(!common::process_exists(pid));
    drop(worker);
    turn.check();
}

#[test]
fn a_worker_that_closes_its_channel_without_answering() {
    let turn = turn();
    let worker = RemoteWorker::spawn_with(demo(), options()).unwrap();
    // It exits soon after: how it ended is the answer.
    let pid = pid_of(&worker);
    match worker.call::<_, Answer<()>>(&Sleep {
        op: "close",
        seconds: 0.2,
    }) {
        Err(Error::ZeroExitcodeWithoutPayload { pid: reported, .. }) => assert_eq!(reported, pid),
        other => panic!("expected ZeroExitcodeWithoutPayload, got {other:?}"),
    }
    // It lives on: killed after a second, without the parent spinning.
    let pid = pid_of(&worker);
    let (started, cpu) = (Instant::now(), cpu_time());
    match worker.call::<_, Answer<()>>(&Sleep {
        op: "close",
        seconds: 30.0,
    }) {
        Err(Error::Protocol {
            pid: reported,
            message,
            ..
        }) => {
            assert_eq!(reported, pid);
            assert_eq!(
                message,
                "the worker closed its channel without answering and did not exit within 1s"
            );
        }
        other => panic!("expected Protocol, got {other:?}"),
    }
    let (took, spent) = (started.elapsed(), cpu_time() - cpu);
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(
        spent < Duration::from_millis(500),
        "the parent spun: {spent:?} of CPU"
    );
    assert!(!common::process_exists(pid));
    assert_eq!(worker.restarts(), 2);
    assert_ne!(pid_of(&worker), pid);
    drop(worker);
    turn.check();
}

#[test]
fn a_lying_frame_length_is_not_allocated() {
    // In a subprocess: it lowers its own address-space limit.
    let turn = turn();
    common::scenario::run(common::scenario::command(
        "scenario_a_lying_frame_length_is_not_allocated",
    ));
    turn.check();
}

#[test]
fn scenario_a_lying_frame_length_is_not_allocated() {
    if !common::scenario::is("scenario_a_lying_frame_length_is_not_allocated") {
        return;
    }
    let turn = turn();
    // Announces a 3 GiB answer, sends 10 bytes of it, and leaves.
    let worker = python_worker!(
        "hello(2); request(); \
         s.sendall(header(16, 3 << 30) + b'0123456789'); \
         os._exit(0)"
    );
    let worker = RemoteWorker::spawn_with(worker, options()).unwrap();
    // Room for the call, not for 3 GiB: reserving it would abort.
    let size = common::status_bytes("VmSize");
    let mut rlimit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rlimit` is valid for writes.
    let status = unsafe { libc::getrlimit(libc::RLIMIT_AS, &raw mut rlimit) };
    assert_eq!(status, 0);
    rlimit.rlim_cur = (size + (2 << 30)).min(rlimit.rlim_max);
    // SAFETY: `rlimit` is a valid struct; only the soft limit is lowered.
    let status = unsafe { libc::setrlimit(libc::RLIMIT_AS, &raw const rlimit) };
    assert_eq!(status, 0);
    match worker.call::<_, i64>(&plain("anything")) {
        Err(Error::Protocol { message, .. }) => {
            assert_eq!(
                message,
                "truncated frame: 10 of 3221225472 payload bytes arrived"
            );
        }
        other => panic!("expected Protocol, got {other:?}"),
    }
    drop(worker);
    turn.check();
}

// ---------------------------------------------------------------------------
// Integrity: a reply is this call's, whole and unchanged, or an error

#[derive(Serialize)]
struct AnswerTwice {
    op: &'static str,
    x: i64,
    seconds: f64,
}

#[test]
fn a_worker_that_answers_twice_never_hands_an_answer_to_the_next_caller() {
    let turn = turn();
    let worker = RemoteWorker::spawn_with(demo(), options()).unwrap();
    let first = pid_of(&worker);
    // The second answer lands in the channel once the caller has its own.
    let twice = AnswerTwice {
        op: "answer_twice",
        x: 1,
        seconds: 0.5,
    };
    assert_eq!(worker.call::<_, Answer<i64>>(&twice).unwrap(), Ok(1));
    std::thread::sleep(Duration::from_millis(1000));
    // The next caller's request finds it there: an error, not `Ok(1)`.
    match worker.call::<_, Answer<i64>>(&Double { op: "double", x: 2 }) {
        Err(Error::Protocol { pid, message, .. }) => {
            assert_eq!(pid, first);
            assert_eq!(
                message,
                "29 bytes were waiting in the worker's channel before the request: \
                 a reply that belongs to no call"
            );
        }
        other => panic!("expected Protocol, got {other:?}"),
    }
    assert!(!common::process_exists(first), "the worker was replaced");
    assert_eq!(worker.restarts(), 1);
    assert_eq!(
        worker
            .call::<_, Answer<i64>>(&Double { op: "double", x: 3 })
            .unwrap(),
        Ok(6)
    );
    // Both answers at once: the second follows the first in the same read,
    // or lands a moment later. Either way no caller gets another's answer.
    let at_once = AnswerTwice {
        op: "answer_twice",
        x: 4,
        seconds: 0.0,
    };
    match worker.call::<_, Answer<i64>>(&at_once) {
        Ok(answer) => assert_eq!(answer, Ok(4), "its own answer"),
        Err(Error::Protocol { message, .. }) => {
            assert_eq!(message, "29 bytes after the Return frame");
        }
        Err(other) => panic!("expected its own answer or Protocol, got {other:?}"),
    }
    match worker.call::<_, Answer<i64>>(&Double { op: "double", x: 5 }) {
        Ok(answer) => assert_eq!(answer, Ok(10), "its own answer"),
        Err(Error::Protocol { .. }) => {}
        Err(other) => panic!("expected its own answer or Protocol, got {other:?}"),
    }
    assert_eq!(
        worker
            .call::<_, Answer<i64>>(&Double { op: "double", x: 6 })
            .unwrap(),
        Ok(12)
    );
    drop(worker);
    turn.check();
}

#[test]
fn a_flipped_bit_in_an_answer_is_a_protocol_error() {
    let turn = turn();
    // A valid Return frame for the call, one payload bit flipped on the way.
    let worker = python_worker!(
        "hello(2); request(); bad = bytearray(frame(16, b'\\x81\\xa2Ok\\x2a')); bad[-1] ^= 1; \
         s.sendall(bytes(bad)); time.sleep(30)"
    );
    let worker = RemoteWorker::spawn_with(worker, options()).unwrap();
    let pid = worker.pid().unwrap();
    match worker.call::<_, Answer<i64>>(&plain("anything")) {
        Err(Error::Protocol {
            pid: reported,
            message,
            ..
        }) => {
            assert_eq!(reported, pid);
            assert!(
                message.starts_with("checksum mismatch in a Return frame of 5 bytes: it says "),
                "{message}"
            );
        }
        other => panic!("expected Protocol, got {other:?}"),
    }
    assert!(!common::process_exists(pid), "the worker was replaced");
    drop(worker);
    turn.check();
}

#[test]
fn an_answer_for_another_call_is_a_protocol_error() {
    let turn = turn();
    let worker = python_worker!(
        "hello(2); request(); call += 1; send(16, b'\\x81\\xa2Ok\\x2a'); time.sleep(30)"
    );
    let worker = RemoteWorker::spawn_with(worker, options()).unwrap();
    match worker.call::<_, Answer<i64>>(&plain("anything")) {
        Err(Error::Protocol { message, .. }) => {
            assert!(
                message.starts_with("a Return frame for call ")
                    && message.contains(", during call "),
                "{message}"
            );
        }
        other => panic!("expected Protocol, got {other:?}"),
    }
    drop(worker);
    turn.check();
}

#[derive(Serialize)]
struct Padded {
    op: &'static str,
    pad: String,
}

#[test]
fn an_answer_over_max_result_is_refused_and_the_worker_replaced() {
    let turn = turn();
    let worker =
        RemoteWorker::spawn_with(demo(), with_isolate(Isolate::new().max_result(2000))).unwrap();
    let first = pid_of(&worker);
    let echo = |len| Padded {
        op: "echo",
        pad: "x".repeat(len),
    };
    // {"Ok": {"op": "echo", "pad": <str 16>}}: 20 bytes around the padding.
    let fits: Answer<Echoed> = worker.call(&echo(1980)).unwrap();
    let fits = fits.unwrap();
    assert_eq!((fits.op.as_str(), fits.pad.len()), ("echo", 1980));
    match worker.call::<_, Answer<Echoed>>(&echo(1981)) {
        Err(Error::ResultTooLarge { size, limit }) => assert_eq!((size, limit), (2001, 2000)),
        other => panic!("expected ResultTooLarge, got {other:?}"),
    }
    assert!(!common::process_exists(first), "the worker was killed");
    assert_eq!(worker.restarts(), 1);
    drop(worker);
    turn.check();
}

/// What the demo's echo op sends back for a [`Padded`].
#[derive(Debug, Serialize, Deserialize)]
struct Echoed {
    op: String,
    pad: String,
}

// ---------------------------------------------------------------------------
// Shutdown

#[test]
fn shutdown_lets_an_idle_worker_leave_at_once() {
    let turn = turn();
    let worker = RemoteWorker::spawn_with(demo(), options()).unwrap();
    let pid = pid_of(&worker);
    let started = Instant::now();
    worker.shutdown(Duration::from_secs(5));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "it left on Shutdown, before the grace ran out: {:?}",
        started.elapsed()
    );
    match worker.call::<_, Answer<u32>>(&plain("pid")) {
        Err(Error::PoolClosed) => {}
        other => panic!("expected PoolClosed, got {other:?}"),
    }
    drop(worker);
    turn.check();
    assert!(!common::process_exists(pid));
}

#[test]
fn shutdown_kills_a_busy_worker_after_the_grace() {
    let turn = turn();
    let worker = RemoteWorker::spawn_with(demo(), options()).unwrap();
    let pid = pid_of(&worker);
    std::thread::scope(|scope| {
        let busy = scope.spawn(|| {
            worker.call::<_, Answer<f64>>(&Sleep {
                op: "sleep",
                seconds: 30.0,
            })
        });
        std::thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        worker.shutdown(Duration::from_millis(300));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        match busy.join().unwrap() {
            Err(Error::PoolClosed) => {}
            other => panic!("expected PoolClosed, got {other:?}"),
        }
    });
    drop(worker);
    turn.check();
    assert!(!common::process_exists(pid));
}

// ---------------------------------------------------------------------------
// The lifeline

#[test]
fn a_worker_exits_when_its_parent_dies() {
    let turn = turn();
    let mut parent = common::scenario::command("scenario_a_worker_exits_when_its_parent_dies")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid: u32 = BufReader::new(parent.stdout.take().unwrap())
        .lines()
        // libtest may print the test's name on the same line first.
        .find_map(|line| line.ok()?.split_once("worker pid ")?.1.trim().parse().ok())
        .expect("the scenario names its worker");
    // SIGKILL: the parent gets no chance to shut its pool down.
    parent.kill().unwrap();
    parent.wait().unwrap();
    // The worker, now an orphan, reads EOF on its channel and exits.
    common::wait_until_dead(pid);
    turn.check();
}

#[test]
fn scenario_a_worker_exits_when_its_parent_dies() {
    if !common::scenario::is("scenario_a_worker_exits_when_its_parent_dies") {
        return;
    }
    let worker = RemoteWorker::spawn_with(demo(), options()).unwrap();
    println!("worker pid {}", pid_of(&worker));
    std::thread::sleep(Duration::from_secs(60));
}

// ---------------------------------------------------------------------------
// Awaited calls (`RemoteWorker::call_async`, feature `tokio`)

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn call_async_answers_and_a_crash_is_the_blocking_calls_error() {
    let turn = turn();
    let runtime = current_thread();
    let options = with_isolate(
        Isolate::new()
            .timeout(Duration::from_secs(20))
            .stderr(Stderr::Capture),
    );
    let worker = RemoteWorker::spawn_with(demo(), options).unwrap();
    let answer: Answer<i64> = runtime
        .block_on(worker.call_async(&Double {
            op: "double",
            x: 21,
        }))
        .unwrap();
    assert_eq!(answer, Ok(42));
    let first = pid_of(&worker);
    match runtime.block_on(worker.call_async::<_, Answer<()>>(&plain("crash"))) {
        Err(Error::NonzeroExitcode(exit)) => {
            assert_eq!(exit.signal(), Some(libc::SIGSEGV));
            assert_eq!(exit.exitcode(), -libc::SIGSEGV);
            assert_eq!(exit.pid(), first);
            assert_eq!(exit.stderr_tail(), b"worker_demo: crashing on purpose\n");
        }
        other => panic!("expected NonzeroExitcode, got {other:?}"),
    }
    assert!(!common::process_exists(first), "reaped");
    match runtime.block_on(worker.call_async::<_, Answer<()>>(&plain("abort"))) {
        Err(Error::NonzeroExitcode(exit)) => assert_eq!(exit.signal(), Some(libc::SIGABRT)),
        other => panic!("expected NonzeroExitcode, got {other:?}"),
    }
    let answer: Answer<i64> = runtime
        .block_on(worker.call_async(&Double { op: "double", x: 4 }))
        .unwrap();
    assert_eq!(answer, Ok(8));
    assert_eq!(worker.restarts(), 2);
    drop(worker);
    drop(runtime);
    turn.check();
}

#[test]
fn call_async_dropped_mid_call_kills_the_worker_and_the_next_call_gets_its_own_answer() {
    let turn = turn();
    let runtime = current_thread();
    let worker = RemoteWorker::spawn_with(demo(), options()).unwrap();
    let first = pid_of(&worker);
    let sleep = Sleep {
        op: "sleep",
        seconds: 30.0,
    };
    let outcome = runtime.block_on(async {
        tokio::time::timeout(
            Duration::from_millis(300),
            worker.call_async::<_, Answer<f64>>(&sleep),
        )
        .await
    });
    assert!(outcome.is_err(), "tokio's timeout dropped the call");
    // Killed and reaped as the future dropped: not even a zombie.
    assert!(!common::process_exists(first), "the worker is gone");
    let answer: Answer<i64> = runtime
        .block_on(worker.call_async(&Double { op: "double", x: 5 }))
        .unwrap();
    assert_eq!(answer, Ok(10), "its own answer");
    assert_ne!(pid_of(&worker), first);
    drop(worker);
    drop(runtime);
    turn.check();
}

#[test]
fn many_tasks_awaiting_remote_workers_each_get_their_own_answer() {
    let turn = turn();
    let runtime = current_thread();
    let worker =
        std::sync::Arc::new(RemoteWorker::spawn_with(demo(), options().workers(2)).unwrap());
    let answers = runtime.block_on(async {
        let mut calls = tokio::task::JoinSet::new();
        for x in 0..30 {
            let worker = worker.clone();
            calls.spawn(async move {
                let answer = worker.call_async::<_, Answer<i64>>(&Double { op: "double", x });
                (x, answer.await)
            });
        }
        calls.join_all().await
    });
    for (x, answer) in answers {
        assert_eq!(answer.unwrap(), Ok(2 * x));
    }
    drop(worker);
    drop(runtime);
    turn.check();
}
