//! Isolated functions calling isolated functions (docs/FAULTS.md G5).

#![allow(
    clippy::undocumented_unsafe_blocks,
    reason = "crash tests call libc to fault on purpose"
)]

use crate::common;

use bombsquad::{Error, bombsquad};

#[bombsquad(start_method = "spawn")]
fn spawned_pid() -> u32 {
    std::process::id()
}

#[bombsquad(start_method = "forkserver")]
fn forkserved_pid() -> u32 {
    std::process::id()
}

#[bombsquad(start_method = "fork", backend = "pipe")]
fn forked_pid() -> u32 {
    std::process::id()
}

/// The calling child's pid, then each start method's child's, called from
/// inside it.
fn own_and_nested() -> [u32; 4] {
    [
        std::process::id(),
        spawned_pid().unwrap(),
        forkserved_pid().unwrap(),
        forked_pid().unwrap(),
    ]
}

/// Every start method inside fork. A forked child finds the caller's fork
/// server handle, which it must neither use nor close (its descriptors
/// were closed at the fork, and their numbers may be reused by then).
#[bombsquad(start_method = "fork")]
fn every_mode_inside_fork() -> [u32; 4] {
    own_and_nested()
}

#[bombsquad(start_method = "spawn", backend = "pipe")]
fn every_mode_inside_spawn() -> [u32; 4] {
    own_and_nested()
}

#[bombsquad(start_method = "forkserver", backend = "pipe")]
fn every_mode_inside_forkserver() -> [u32; 4] {
    own_and_nested()
}

/// Recurses through isolated calls; returns how deep it got.
#[bombsquad(start_method = "fork")]
fn depth_fork(n: u32) -> Result<u32, String> {
    if n == 0 {
        return Ok(0);
    }
    match depth_fork(n - 1) {
        Ok(inner) => inner.map(|d| d + 1),
        Err(e) => Err(e.to_string()),
    }
}

#[bombsquad]
fn depth_spawn(n: u32) -> Result<u32, String> {
    if n == 0 {
        return Ok(0);
    }
    match depth_spawn(n - 1) {
        Ok(inner) => inner.map(|d| d + 1),
        Err(e) => Err(e.to_string()),
    }
}

fn assert_nested(pids: [u32; 4]) {
    let me = std::process::id();
    let mut distinct = pids.to_vec();
    distinct.push(me);
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 5, "{me} {pids:?}");
}

#[test]
fn every_mode_nests_in_every_other() {
    common::watchdog();
    assert_nested(every_mode_inside_fork().unwrap());
    assert_nested(every_mode_inside_spawn().unwrap());
    assert_nested(every_mode_inside_forkserver().unwrap());
}

#[test]
fn recursion_works_up_to_the_depth_limit() {
    common::watchdog();
    assert_eq!(depth_fork(5).unwrap(), Ok(5));
    assert_eq!(depth_spawn(3).unwrap(), Ok(3));
}

#[test]
fn recursion_past_the_limit_is_refused() {
    common::watchdog();
    let limit = Error::NestingTooDeep { limit: 8 }.to_string();
    assert_eq!(depth_fork(20).unwrap(), Err(limit.clone()));
    assert_eq!(depth_spawn(9).unwrap(), Err(limit));
}
