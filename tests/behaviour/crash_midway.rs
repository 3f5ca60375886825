//! A child that crashes halfway through a large result (docs/FAULTS.md C8):
//! `NonzeroExitcode` with SIGSEGV in every start method x backend
//! combination, no hang, and the partial frame is never decoded.

#![allow(
    clippy::undocumented_unsafe_blocks,
    reason = "crash tests call libc to fault on purpose"
)]

use crate::common;

use std::time::{Duration, Instant};

use bombsquad::{Backend, Error, Isolate, bombsquad};
use serde::ser::SerializeSeq as _;
use serde::{Deserialize, Serialize};

const MIB: usize = 1 << 20;

/// Serializes 32 chunks of 1 MiB, then segfaults in the 33rd.
#[derive(Debug, Deserialize)]
pub struct CrashesMidway;

impl Serialize for CrashesMidway {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let chunk = vec![0xA5u8; MIB];
        let mut seq = serializer.serialize_seq(Some(64))?;
        for _ in 0..32 {
            seq.serialize_element(&Chunk(&chunk))?;
        }
        unsafe { libc::strlen(std::ptr::null()) };
        seq.end()
    }
}

/// A MessagePack bin, not a sequence of integers.
struct Chunk<'a>(&'a [u8]);

impl Serialize for Chunk<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// Writes a frame header announcing 64 MiB and 32 MiB of it to the reply
/// channel, then segfaults: a partial frame really is in the channel.
fn write_half_a_frame_then_crash() -> Vec<u8> {
    let fd = common::reply_fd_in_child();
    common::write_raw(
        fd,
        &common::frame_header(common::RETURN_FRAME, 64 * MIB as u64),
    );
    let chunk = vec![0x91u8; MIB]; // a MessagePack fixarray header, over and over
    for _ in 0..32 {
        common::write_raw(fd, &chunk);
    }
    unsafe { libc::strlen(std::ptr::null()) };
    Vec::new()
}

#[bombsquad(backend = "pipe")]
fn crash_in_serialize_pipe() -> CrashesMidway {
    CrashesMidway
}

#[bombsquad(backend = "file")]
fn crash_in_serialize_file() -> CrashesMidway {
    CrashesMidway
}

#[bombsquad(backend = "pipe")]
fn half_a_frame_pipe() -> Vec<u8> {
    write_half_a_frame_then_crash()
}

#[bombsquad(backend = "file")]
fn half_a_frame_file() -> Vec<u8> {
    write_half_a_frame_then_crash()
}

fn assert_sigsegv<T: std::fmt::Debug>(what: &str, result: Result<T, Error>) {
    match result {
        Err(Error::NonzeroExitcode(exit)) => {
            assert_eq!(exit.signal(), Some(libc::SIGSEGV), "{what}");
            assert_eq!(exit.exitcode(), -libc::SIGSEGV, "{what}");
            assert_eq!(exit.code(), None, "{what}");
        }
        other => panic!("{what}: expected death by SIGSEGV, got {other:?}"),
    }
}

#[test]
fn a_crash_halfway_through_a_large_result_is_sigsegv_everywhere() {
    common::watchdog();
    let started = Instant::now();
    for backend in [Backend::Pipe, Backend::File] {
        let fork = Isolate::new()
            .backend(backend)
            .timeout(Duration::from_secs(60));
        assert_sigsegv(
            &format!("fork {backend:?} serialize"),
            fork.fork(|| CrashesMidway),
        );
        assert_sigsegv(
            &format!("fork {backend:?} half a frame"),
            fork.fork(write_half_a_frame_then_crash),
        );
    }
    assert_sigsegv("spawn pipe serialize", crash_in_serialize_pipe());
    assert_sigsegv("spawn file serialize", crash_in_serialize_file());
    assert_sigsegv("spawn pipe half a frame", half_a_frame_pipe());
    assert_sigsegv("spawn file half a frame", half_a_frame_file());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}
