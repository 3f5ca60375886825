//! Isolated functions calling isolated functions (docs/FAULTS.md G5).

#![allow(
    clippy::undocumented_unsafe_blocks,
    reason = "crash tests call libc to fault on purpose"
)]

use crate::common;

use bombsquad::{Error, bombsquad};

#[bombsquad]
fn spawned_pid() -> u32 {
    std::process::id()
}

#[bombsquad(start_method = "fork", backend = "pipe")]
fn forked_pid() -> u32 {
    std::process::id()
}

/// Spawn inside fork: (outer child pid, inner child pid, inner's parent).
#[bombsquad(start_method = "fork")]
fn spawn_inside_fork() -> (u32, u32) {
    (std::process::id(), spawned_pid().unwrap())
}

/// Fork inside spawn.
#[bombsquad(backend = "pipe")]
fn fork_inside_spawn() -> (u32, u32) {
    (std::process::id(), forked_pid().unwrap())
}

/// Spawn inside spawn.
#[bombsquad]
fn spawn_inside_spawn() -> (u32, u32) {
    (std::process::id(), spawned_pid().unwrap())
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

fn assert_nested((outer, inner): (u32, u32)) {
    let me = std::process::id();
    assert!(
        outer != me && inner != me && inner != outer,
        "{me} {outer} {inner}"
    );
}

#[test]
fn every_mode_nests_in_every_other() {
    common::watchdog();
    assert_nested(spawn_inside_fork().unwrap());
    assert_nested(fork_inside_spawn().unwrap());
    assert_nested(spawn_inside_spawn().unwrap());
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
