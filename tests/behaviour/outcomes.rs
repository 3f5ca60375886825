//! Every outcome of an isolated call, under every start_method x backend
//! combination, with real crashes. Fields are asserted exactly.

#![allow(
    clippy::undocumented_unsafe_blocks,
    reason = "crash tests call libc to fault on purpose"
)]

use crate::common;

use crate::common::{PanicsInDeserialize, PanicsInSerialize, RefusesToSerialize};

use std::fmt::Debug;
use std::time::{Duration, Instant};

use bombsquad::{CodecStage, Error, NonzeroExitcode, bombsquad};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shape {
    sides: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<String>,
    #[serde(flatten)]
    extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Extra {
    color: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Verdict {
    Fine,
    Broken { why: String },
    Count(u64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    name: String,
    tags: Vec<String>,
    shape: Shape,
    verdict: Verdict,
}

fn sample_shape(label: Option<&str>) -> Shape {
    Shape {
        sides: 6,
        label: label.map(str::to_owned),
        extra: Extra {
            color: "red".to_owned(),
        },
    }
}

const BOOM_LINE: u32 = line!() + 2;
fn boom_here() -> ! {
    panic!("boom as error")
}

fn nonzero<T: Debug>(result: Result<T, Error>) -> NonzeroExitcode {
    match result {
        Err(Error::NonzeroExitcode(e)) => e,
        other => panic!("expected NonzeroExitcode, got {other:?}"),
    }
}

fn assert_signal(e: &NonzeroExitcode, signal: i32, name: &str) {
    assert_eq!(e.signal(), Some(signal), "{e}");
    assert_eq!(e.signal_name(), Some(name));
    assert_eq!(e.exitcode(), -signal);
    assert_eq!(e.code(), None);
    assert!(!e.core_dumped(), "RLIMIT_CORE is 0 in the child");
    assert!(e.pid() > 0);
    assert!(!common::process_exists(e.pid()), "the child was reaped");
}

fn codec_error<T: Debug>(result: Result<T, Error>) -> (CodecStage, String) {
    match result {
        Err(Error::Codec { stage, message }) => (stage, message),
        other => panic!("expected a codec error, got {other:?}"),
    }
}

macro_rules! outcome_tests {
    ($module:ident, $start_method:literal, $backend:literal) => {
        mod $module {
            use super::*;

            #[bombsquad(start_method = $start_method, backend = $backend)]
            fn add(a: i64, b: i64) -> i64 {
                a + b
            }

            /// Borrowed arguments are rebuilt as owned values in a spawned child.
            #[bombsquad(start_method = $start_method, backend = $backend)]
            fn describe(name: &str, tags: &[String], shape: &Shape, count: Option<u64>) -> Report {
                Report {
                    name: name.to_uppercase(),
                    tags: tags.to_vec(),
                    shape: shape.clone(),
                    verdict: match count {
                        Some(n) => Verdict::Count(n),
                        None if tags.is_empty() => Verdict::Broken { why: "no tags".into() },
                        None => Verdict::Fine,
                    },
                }
            }

            #[bombsquad(start_method = $start_method, backend = $backend)]
            fn nothing() {}

            #[bombsquad(start_method = $start_method, backend = $backend)]
            fn fallible(ok: bool) -> Result<u8, String> {
                if ok { Ok(7) } else { Err("nope".to_owned()) }
            }

            #[bombsquad(start_method = $start_method, backend = $backend)]
            fn panics(n: i32) -> i32 {
                panic!("boom {n}")
            }

            #[bombsquad(start_method = $start_method, backend = $backend, panic = "error")]
            fn panics_as_error() -> i32 {
                boom_here()
            }

            #[bombsquad(start_method = $start_method, backend = $backend)]
            fn panics_with_a_number() {
                std::panic::panic_any(42u32)
            }

            #[bombsquad(start_method = $start_method, backend = $backend, panic = "error")]
            fn panics_hugely() {
                panic!("{}", "x".repeat(100 << 20))
            }

            #[bombsquad(start_method = $start_method, backend = $backend)]
            fn panics_while_unwinding() {
                struct PanicsOnDrop;
                impl Drop for PanicsOnDrop {
                    fn drop(&mut self) {
                        panic!("in drop")
                    }
                }
                let _guard = PanicsOnDrop;
                panic!("first panic")
            }

            #[bombsquad(start_method = $start_method, backend = $backend)]
            fn segfaults_in_c() -> usize {
                unsafe { libc::strlen(std::ptr::null()) }
            }

            #[bombsquad(start_method = $start_method, backend = $backend)]
            fn aborts() {
                std::process::abort()
            }

            #[bombsquad(start_method = $start_method, backend = $backend)]
            fn sends_itself(signal: i32) {
                unsafe { libc::kill(libc::getpid(), signal) };
                std::thread::sleep(Duration::from_secs(30));
            }

            #[bombsquad(start_method = $start_method, backend = $backend)]
            fn exits(code: i32, raw: bool) -> u32 {
                if raw {
                    unsafe { libc::_exit(code) }
                }
                std::process::exit(code)
            }

            #[bombsquad(start_method = $start_method, backend = $backend, timeout = "300ms")]
            fn sleeps_forever() {
                std::thread::sleep(Duration::MAX)
            }

            /// Ignores the signals a polite supervisor would send first.
            #[bombsquad(start_method = $start_method, backend = $backend, timeout = "300ms")]
            fn ignores_termination_and_sleeps() {
                for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
                    unsafe { libc::signal(signal, libc::SIG_IGN) };
                }
                std::thread::sleep(Duration::MAX)
            }

            #[bombsquad(start_method = $start_method, backend = $backend, timeout = "300ms")]
            fn spins_forever() {
                loop {
                    std::hint::black_box(0);
                }
            }

            /// Announces a 2 GiB reply and streams it as fast as it can, so the
            /// pipe is readable whenever the parent looks.
            #[bombsquad(start_method = $start_method, backend = $backend, timeout = "300ms")]
            fn streams_its_reply_past_the_deadline() -> i32 {
                let fd = common::reply_fd_in_child();
                common::write_raw(fd, &common::frame_header(common::RETURN_FRAME, 2 << 30));
                let chunk = vec![0u8; 64 << 10];
                loop {
                    common::write_raw(fd, &chunk);
                }
            }

            #[bombsquad(start_method = $start_method, backend = $backend)]
            fn bytes(len: usize) -> Vec<u8> {
                (0..len).map(|i| (i % 251) as u8).collect()
            }

            #[bombsquad(start_method = $start_method, backend = $backend)]
            fn reversed(data: Vec<u8>) -> Vec<u8> {
                data.into_iter().rev().collect()
            }

            #[bombsquad(start_method = $start_method, backend = $backend)]
            fn reads_stdin() -> String {
                std::io::read_to_string(std::io::stdin()).unwrap()
            }

            #[bombsquad(start_method = $start_method, backend = $backend)]
            fn prints_junk() -> i32 {
                use std::io::Write;
                std::io::stdout().write_all(b"\0\x01garbage").unwrap();
                std::io::stderr().write_all(b"\0\x02junk").unwrap();
                3
            }

            #[bombsquad(start_method = $start_method, backend = $backend)]
            fn sends_a_truncated_reply() -> i32 {
                let fd = common::reply_fd_in_child();
                common::write_raw(fd, &common::frame_header(common::RETURN_FRAME, 100));
                common::write_raw(fd, &[0; 10]);
                unsafe { libc::_exit(0) }
            }

            #[bombsquad(start_method = $start_method, backend = $backend)]
            fn sends_garbage() -> i32 {
                common::write_raw(common::reply_fd_in_child(), b"this is not a frame, just junk");
                unsafe { libc::_exit(0) }
            }

            #[bombsquad(start_method = $start_method, backend = $backend)]
            fn lies_about_its_length() -> i32 {
                common::write_raw(common::reply_fd_in_child(), &common::frame_header(common::RETURN_FRAME, u64::MAX));
                unsafe { libc::_exit(0) }
            }

            /// Daemonizing C code closes every descriptor above stdio.
            #[bombsquad(start_method = $start_method, backend = $backend)]
            fn closes_every_descriptor() -> i32 {
                unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
                5
            }

            /// A grandchild holds the reply channel open for 30 s.
            #[bombsquad(start_method = $start_method, backend = $backend)]
            fn leaves_a_grandchild() -> i32 {
                match unsafe { libc::fork() } {
                    0 => {
                        unsafe { libc::sleep(30) };
                        unsafe { libc::_exit(0) }
                    }
                    grandchild => grandchild,
                }
            }

            /// A grandchild leaves the child's process group and session
            /// (`setsid`, as a daemon does) and holds the reply channel open
            /// for 30 s.
            #[bombsquad(start_method = $start_method, backend = $backend)]
            fn leaves_an_escaped_grandchild() -> i32 {
                let mut escaped = [0; 2];
                assert_eq!(unsafe { libc::pipe(escaped.as_mut_ptr()) }, 0);
                match unsafe { libc::fork() } {
                    0 => {
                        unsafe { libc::setsid() };
                        unsafe { libc::write(escaped[1], [1u8].as_ptr().cast(), 1) };
                        unsafe { libc::sleep(30) };
                        unsafe { libc::_exit(0) }
                    }
                    grandchild => {
                        // Returns once it has left: else the group kill at
                        // the end of the call could still reach it.
                        let mut byte = [0u8];
                        unsafe { libc::close(escaped[1]) };
                        assert_eq!(unsafe { libc::read(escaped[0], byte.as_mut_ptr().cast(), 1) }, 1);
                        grandchild
                    }
                }
            }

            #[bombsquad(start_method = $start_method, backend = $backend)]
            fn result_refuses_to_serialize() -> RefusesToSerialize {
                RefusesToSerialize
            }

            #[bombsquad(start_method = $start_method, backend = $backend)]
            fn result_panics_in_serialize() -> PanicsInSerialize {
                PanicsInSerialize
            }

            #[bombsquad(start_method = $start_method, backend = $backend)]
            fn result_panics_in_deserialize() -> PanicsInDeserialize {
                PanicsInDeserialize(7)
            }

            #[test]
            fn returns_the_value() {
                common::watchdog();
                assert_eq!(add(40, 2).unwrap(), 42);
            }

            #[test]
            fn structs_enums_and_serde_attributes_cross() {
                common::watchdog();
                let tags = vec!["a".to_owned(), "b".to_owned()];
                let shape = sample_shape(None);
                let report = describe("hexagon", &tags, &shape, Some(3)).unwrap();
                assert_eq!(report, Report {
                    name: "HEXAGON".into(),
                    tags: tags.clone(),
                    shape: shape.clone(),
                    verdict: Verdict::Count(3),
                });
                let labelled = sample_shape(Some("hex"));
                assert_eq!(describe("x", &[], &labelled, None).unwrap().verdict, Verdict::Broken { why: "no tags".into() });
                assert_eq!(describe("x", &tags, &labelled, None).unwrap().shape, labelled);
            }

            #[test]
            fn unit_and_result_returns() {
                common::watchdog();
                nothing().unwrap();
                assert_eq!(fallible(true).unwrap(), Ok(7));
                assert_eq!(fallible(false).unwrap(), Err("nope".to_owned()));
            }

            #[test]
            #[should_panic(expected = "boom 7")]
            fn a_child_panic_is_re_raised() {
                let _ = panics(7);
            }

            #[test]
            fn a_re_raised_panic_carries_a_string_payload() {
                common::watchdog();
                let payload = std::panic::catch_unwind(|| panics(8)).unwrap_err();
                assert_eq!(payload.downcast_ref::<String>().map(String::as_str), Some("boom 8"));
            }

            #[test]
            fn panic_error_mode_returns_message_and_location() {
                common::watchdog();
                match panics_as_error() {
                    Err(e @ Error::Panicked { .. }) => {
                        let text = e.to_string();
                        let Error::Panicked { message, location, function, .. } = e else { unreachable!() };
                        assert_eq!(message, "boom as error");
                        assert_eq!(function.as_deref(), Some("panics_as_error"));
                        let location = location.expect("a location");
                        assert_eq!((location.file.as_str(), location.line, location.column), (file!(), BOOM_LINE, 5));
                        assert_eq!(text, format!("panics_as_error panicked at {}:{BOOM_LINE}:5: boom as error", file!()));
                    }
                    other => panic!("expected Panicked, got {other:?}"),
                }
            }

            #[test]
            fn a_non_string_panic_payload_is_named() {
                common::watchdog();
                let payload = std::panic::catch_unwind(panics_with_a_number).unwrap_err();
                assert_eq!(
                    payload.downcast_ref::<String>().map(String::as_str),
                    Some("child panicked with a non-string payload (Box<dyn Any>)")
                );
            }

            #[test]
            fn a_huge_panic_message_is_truncated() {
                common::watchdog();
                let Err(Error::Panicked { message, .. }) = panics_hugely() else { panic!("expected Panicked") };
                assert!(message.starts_with("xxxx"));
                assert!(message.ends_with(&format!("…[truncated {} bytes]", (100 << 20) - (64 << 10))), "{}", &message[message.len() - 40..]);
                assert!(message.len() <= (64 << 10) + 40);
            }

            #[test]
            fn a_panic_during_unwinding_aborts_with_the_first_panic() {
                common::watchdog();
                let e = nonzero(panics_while_unwinding());
                assert_signal(&e, libc::SIGABRT, "SIGABRT");
                assert_eq!(e.panic_message(), Some("first panic"));
            }

            #[test]
            fn a_segfault_in_c_is_sigsegv() {
                common::watchdog();
                let e = nonzero(segfaults_in_c());
                assert_signal(&e, libc::SIGSEGV, "SIGSEGV");
                let expected = format!("segfaults_in_c (pid {}) was killed by SIGSEGV: segmentation fault", e.pid());
                assert!(e.to_string().starts_with(&expected), "{e}");
                assert_eq!(add(1, 1).unwrap(), 2, "the next call works");
            }

            #[test]
            fn abort_is_sigabrt() {
                common::watchdog();
                assert_signal(&nonzero(aborts()), libc::SIGABRT, "SIGABRT");
            }

            #[test]
            fn sigkill_is_reported_as_possibly_the_oom_killer() {
                common::watchdog();
                let e = nonzero(sends_itself(libc::SIGKILL));
                assert_signal(&e, libc::SIGKILL, "SIGKILL");
                assert_eq!(e.exitcode(), -9);
                let expected = format!(
                    "sends_itself (pid {}) was killed by SIGKILL: not sent by bombsquad, possibly the OOM killer, after ",
                    e.pid()
                );
                assert!(e.to_string().starts_with(&expected), "{e}");
            }

            #[test]
            fn sigterm_is_reported() {
                common::watchdog();
                assert_signal(&nonzero(sends_itself(libc::SIGTERM)), libc::SIGTERM, "SIGTERM");
            }

            #[test]
            fn a_nonzero_exit_keeps_its_code() {
                common::watchdog();
                for raw in [false, true] {
                    let e = nonzero(exits(3, raw));
                    assert_eq!((e.code(), e.exitcode(), e.signal()), (Some(3), 3, None));
                    let expected = format!("exits (pid {}) exited with code 3, after ", e.pid());
                    assert!(e.to_string().starts_with(&expected), "{e}");
                    assert!(e.to_string().contains(", peak RSS "), "{e}");
                }
            }

            #[test]
            fn exit_zero_without_a_result_is_never_ok() {
                common::watchdog();
                for (code, raw) in [(0, false), (0, true), (256, false)] {
                    match exits(code, raw) {
                        Err(e @ Error::ZeroExitcodeWithoutPayload { pid, .. }) => {
                            assert!(pid > 0);
                            assert_eq!(
                                e.to_string(),
                                format!("exits (pid {pid}) exited with code 0 without sending a result; does it call std::process::exit?")
                            );
                        }
                        other => panic!("exit({code}) raw={raw}: expected ZeroExitcodeWithoutPayload, got {other:?}"),
                    }
                }
            }

            #[test]
            fn a_timeout_kills_a_sleeping_or_spinning_child() {
                common::watchdog();
                for call in [sleeps_forever as fn() -> Result<(), Error>, spins_forever] {
                    let start = Instant::now();
                    match call() {
                        Err(Error::Timeout { after, pid, .. }) => {
                            assert_eq!(after, Duration::from_millis(300));
                            assert!(!common::process_exists(pid), "the child was killed and reaped");
                        }
                        other => panic!("expected Timeout, got {other:?}"),
                    }
                    // Generous: this asserts "soon after the deadline", not speed.
                    assert!(start.elapsed() < Duration::from_secs(10));
                }
            }

            #[test]
            fn a_child_that_ignores_sigterm_is_still_killed_at_its_timeout() {
                common::watchdog();
                match ignores_termination_and_sleeps() {
                    Err(Error::Timeout { after, pid, .. }) => {
                        assert_eq!(after, Duration::from_millis(300));
                        assert!(!common::process_exists(pid), "the child was killed and reaped");
                    }
                    other => panic!("expected Timeout, got {other:?}"),
                }
            }

            #[test]
            fn a_child_streaming_its_reply_still_times_out() {
                common::watchdog();
                let start = Instant::now();
                match streams_its_reply_past_the_deadline() {
                    Err(Error::Timeout { after, pid, .. }) => {
                        assert_eq!(after, Duration::from_millis(300));
                        assert!(!common::process_exists(pid));
                        // Soon after the deadline: a reader that drains until the
                        // pipe is empty, or that reads a timed-out child's reply
                        // file, took 1-1.4 s here; the deadline-first loop ~0.35 s.
                        let elapsed = start.elapsed();
                        assert!(elapsed < after + Duration::from_millis(700), "took {elapsed:?}");
                    }
                    other => panic!("expected Timeout, got {other:?}"),
                }
            }

            #[test]
            fn payloads_of_every_size_round_trip() {
                common::watchdog();
                for len in [0, 1 << 10, (64 << 10) + 1, 1 << 20, 64 << 20] {
                    let got = bytes(len).unwrap();
                    assert_eq!(got.len(), len);
                    assert!(got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8), "content of {len} bytes");
                }
            }

            #[test]
            fn large_arguments_and_result_at_once() {
                common::watchdog();
                let data: Vec<u8> = (0..2 << 20).map(|i: u32| (i % 253) as u8).collect();
                let expected: Vec<u8> = data.iter().rev().copied().collect();
                assert_eq!(reversed(data).unwrap(), expected);
            }

            #[test]
            fn stdin_is_empty() {
                common::watchdog();
                assert_eq!(reads_stdin().unwrap(), "");
            }

            #[test]
            fn output_on_stdout_and_stderr_does_not_corrupt_the_result() {
                common::watchdog();
                assert_eq!(prints_junk().unwrap(), 3);
            }

            #[test]
            fn a_truncated_reply_is_a_protocol_error() {
                common::watchdog();
                assert_eq!(common::protocol_error(sends_a_truncated_reply()), "truncated frame: 10 of 100 payload bytes arrived");
            }

            #[test]
            fn garbage_is_a_protocol_error() {
                common::watchdog();
                assert!(common::protocol_error(sends_garbage()).starts_with("bad frame magic"));
            }

            #[test]
            fn a_lying_length_is_refused_before_allocating() {
                common::watchdog();
                let message = common::protocol_error(lies_about_its_length());
                assert_eq!(message, format!("frame of {} bytes exceeds the limit of {} bytes", u64::MAX, 16u64 << 30));
            }

            #[test]
            fn a_child_that_closed_its_channel_ends_without_payload() {
                common::watchdog();
                match closes_every_descriptor() {
                    Err(Error::ZeroExitcodeWithoutPayload { pid, .. }) => assert!(!common::process_exists(pid)),
                    other => panic!("expected ZeroExitcodeWithoutPayload, got {other:?}"),
                }
            }

            #[test]
            fn a_grandchild_holding_the_channel_does_not_delay_the_call() {
                common::watchdog();
                let start = Instant::now();
                let grandchild = leaves_a_grandchild().unwrap();
                assert!(start.elapsed() < Duration::from_secs(10), "completion came from the child, not EOF");
                // The process-group kill got it; init reaps it shortly.
                let deadline = Instant::now() + Duration::from_secs(10);
                while common::process_exists(grandchild as u32) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let state = std::fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default();
                assert!(state.is_empty() || state.contains(") Z "), "grandchild still running: {state}");
            }

            #[test]
            fn a_grandchild_that_left_the_group_does_not_delay_the_call_and_survives_it() {
                common::watchdog();
                let start = Instant::now();
                let grandchild = leaves_an_escaped_grandchild().unwrap();
                assert!(start.elapsed() < Duration::from_secs(10), "completion came from the child, not EOF");
                // Out of the child's group, the group kill missed it: the
                // documented survivor. It sits in a session of its own.
                assert!(common::process_exists(grandchild as u32), "the escaped grandchild is alive");
                assert_eq!(unsafe { libc::getsid(grandchild) }, grandchild);
                // Init reaps it.
                unsafe { libc::kill(grandchild, libc::SIGKILL) };
            }

            #[test]
            fn result_encode_failures_name_the_stage() {
                common::watchdog();
                assert_eq!(codec_error(result_refuses_to_serialize()), (CodecStage::EncodeResult, "refuses to serialize".to_owned()));
                assert_eq!(codec_error(result_panics_in_serialize()), (CodecStage::EncodeResult, "serialize panicked".to_owned()));
            }

            #[test]
            fn a_panicking_deserialize_in_the_parent_is_a_codec_error() {
                common::watchdog();
                assert_eq!(codec_error(result_panics_in_deserialize()), (CodecStage::DecodeResult, "deserialize panicked".to_owned()));
            }

            #[test]
            fn eight_threads_with_mixed_outcomes() {
                common::watchdog();
                std::thread::scope(|scope| {
                    for t in 0..8i64 {
                        scope.spawn(move || {
                            for i in 0..4 {
                                match (t + i) % 4 {
                                    0 => assert_eq!(add(t, i).unwrap(), t + i),
                                    1 => assert_signal(&nonzero(segfaults_in_c()), libc::SIGSEGV, "SIGSEGV"),
                                    2 => assert_eq!(nonzero(exits(5, true)).code(), Some(5)),
                                    _ => assert_eq!(bytes(70_000).unwrap().len(), 70_000),
                                }
                            }
                        });
                    }
                });
            }
        }
    };
}

outcome_tests!(spawn_file, "spawn", "file");
outcome_tests!(spawn_pipe, "spawn", "pipe");
outcome_tests!(fork_file, "fork", "file");
outcome_tests!(fork_pipe, "fork", "pipe");
outcome_tests!(spawn_shm, "spawn", "shm");
outcome_tests!(fork_shm, "fork", "shm");
outcome_tests!(forkserver_file, "forkserver", "file");
outcome_tests!(forkserver_pipe, "forkserver", "pipe");
outcome_tests!(forkserver_shm, "forkserver", "shm");
