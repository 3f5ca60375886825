//! The file backend's reading of a result: a reply file longer than 64 KiB
//! that ends in a `Return` frame is read up to that frame's payload, which
//! decoding reads straight into the result; a result of 32 MiB or more
//! follows a `Padding` frame. Sizes on both sides of those thresholds,
//! frames before the result, a crash after it, serde results, and a reply
//! the child shrank (the same errors as a reply read whole).

#![allow(
    clippy::undocumented_unsafe_blocks,
    reason = "the children call libc to tamper with the reply file on purpose"
)]

use crate::common;

use bombsquad::{Error, NonzeroExitcode, bombsquad};
use serde_bytes::ByteBuf;

/// The reply file length up to which the parent reads the file whole.
const HEAD_LEN: usize = 64 << 10;
/// A `Return` frame's header, then a `bin 16` header (256 to 65535 bytes).
const BIN16_OVERHEAD: usize = 16 + 3;
/// The largest result read with the file whole: its reply is `HEAD_LEN`.
const LAST_READ_WHOLE: usize = HEAD_LEN - BIN16_OVERHEAD;
/// The shortest result the child writes at a file offset matching its
/// address (after a `Padding` frame).
const ALIGNED_TAIL: usize = 32 << 20;
/// A result of 8 MiB, for the tampering children.
const LEN: usize = 8 << 20;

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[bombsquad(start_method = "fork", backend = "file")]
fn bytes_fork(len: usize) -> Vec<u8> {
    pattern(len)
}

#[bombsquad(start_method = "spawn", backend = "file")]
fn bytes_spawn(len: usize) -> Vec<u8> {
    pattern(len)
}

#[test]
fn results_on_both_sides_of_the_threshold_arrive_byte_exact() {
    common::watchdog();
    for call in [bytes_fork, bytes_spawn] {
        for len in [
            0,
            1,
            LAST_READ_WHOLE - 1,
            LAST_READ_WHOLE,
            LAST_READ_WHOLE + 1,
            1 << 20,
            ALIGNED_TAIL - 1,
            ALIGNED_TAIL,
            ALIGNED_TAIL + 1,
            64 << 20,
        ] {
            let got = call(len).unwrap();
            assert_eq!(got.len(), len);
            assert!(got == pattern(len), "content of {len} bytes");
        }
    }
}

/// Catches a panic of its own (its report is a frame before the result),
/// then returns 1 MiB.
#[bombsquad(start_method = "fork", backend = "file")]
fn caught_a_panic_then_returns() -> Vec<u8> {
    let caught = std::panic::catch_unwind(|| panic!("caught inside"));
    assert!(caught.is_err());
    pattern(1 << 20)
}

#[test]
fn frames_before_a_long_result_do_not_hide_it() {
    common::watchdog();
    assert!(caught_a_panic_then_returns().unwrap() == pattern(1 << 20));
}

/// A serde type encoded as one `bin` object, and one that is not.
#[bombsquad(start_method = "fork", backend = "file")]
fn byte_buf(len: usize) -> ByteBuf {
    ByteBuf::from(pattern(len))
}

#[bombsquad(start_method = "fork", backend = "file")]
fn words(count: u32) -> Vec<u32> {
    (0..count).collect()
}

#[test]
fn serde_results_left_in_the_file_decode() {
    common::watchdog();
    assert!(byte_buf(1 << 20).unwrap().into_vec() == pattern(1 << 20));
    let count = 1 << 18; // 1 MiB and more of MessagePack
    assert_eq!(words(count).unwrap(), (0..count).collect::<Vec<u32>>());
}

/// Writes a whole 8 MiB `Vec<u8>` reply, then kills itself with SIGKILL
/// (no fault record): a crash after the result is still a crash.
#[bombsquad(start_method = "fork", backend = "file")]
fn returns_then_is_killed() -> Vec<u8> {
    let fd = common::reply_fd_in_child();
    common::write_raw(
        fd,
        &common::frame_header(common::RETURN_FRAME, LEN as u64 + 5),
    );
    let mut bin = vec![0xc6];
    bin.extend_from_slice(&(LEN as u32).to_be_bytes());
    common::write_raw(fd, &bin);
    common::write_raw(fd, &vec![7; LEN]);
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    unreachable!("SIGKILL")
}

#[test]
fn a_crash_after_a_long_result_is_a_crash() {
    common::watchdog();
    let crash: NonzeroExitcode = match returns_then_is_killed() {
        Err(Error::NonzeroExitcode(crash)) => crash,
        other => panic!("expected NonzeroExitcode, got {other:?}"),
    };
    assert_eq!(crash.signal(), Some(libc::SIGKILL));
    assert_eq!(crash.signal_name(), Some("SIGKILL"));
    assert_eq!(crash.exitcode(), -libc::SIGKILL);
    assert_eq!(crash.code(), None);
    assert_eq!(crash.fault_code(), None, "no fault record: {crash}");
    assert!(
        crash.is_possible_oom_kill(),
        "a SIGKILL the library did not send"
    );
    assert!(!common::process_exists(crash.pid()), "the child was reaped");
}

#[bombsquad(start_method = "fork", backend = "file")]
fn shrinks_its_reply_fork(keep: i64) -> Vec<u8> {
    common::write_then_truncate(keep)
}

#[bombsquad(backend = "file")]
fn shrinks_its_reply_spawn(keep: i64) -> Vec<u8> {
    common::write_then_truncate(keep)
}

#[test]
fn a_reply_shorter_than_its_frame_claims_is_a_protocol_error() {
    common::watchdog();
    // Within the part read first, just past it, and well past it.
    for keep in [4096, HEAD_LEN + 1, 1 << 20] {
        for call in [shrinks_its_reply_fork, shrinks_its_reply_spawn] {
            assert_eq!(
                common::protocol_error(call(keep as i64)),
                format!(
                    "truncated frame: {} of {} payload bytes arrived",
                    keep - common::HEADER_LEN,
                    common::TRUNCATED_FRAME_LEN
                )
            );
        }
    }
}
