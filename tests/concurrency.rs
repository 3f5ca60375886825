//! Many threads calling at once (docs/FAULTS.md G1): every result reaches its own
//! caller, nothing deadlocks, the concurrency cap holds (callers block, never
//! fail), and descriptors and zombies are back to baseline. Each runs as a
//! scenario subprocess, so the counts see only its own children.

#![allow(
    clippy::undocumented_unsafe_blocks,
    reason = "crash tests call libc to abort on purpose"
)]

mod common;

use common::scenario;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bombsquad::{Backend, Error, Isolate, bombsquad};

/// A cheap deterministic hash: the token's fate and its sleep.
fn mix(token: u32) -> u32 {
    let mut x = token.wrapping_mul(0x9E37_79B9) ^ 0x5bd1_e995;
    x ^= x >> 15;
    x = x.wrapping_mul(0x2c1b_3c6d);
    x ^ (x >> 12)
}

fn nap(token: u32) {
    std::thread::sleep(Duration::from_micros(u64::from(mix(token) % 5000)));
}

#[bombsquad(backend = "pipe")]
fn echo(token: u32) -> u32 {
    nap(token);
    token
}

#[bombsquad(backend = "file", panic = "error")]
fn panics(token: u32) -> u32 {
    panic!("token {token} panicked")
}

#[bombsquad(backend = "file")]
fn aborts(token: u32) -> u32 {
    nap(token);
    std::process::abort()
}

/// Samples this process's children until stopped; returns the most seen.
fn watch_children(stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut most = 0;
        while !stop.load(Ordering::Relaxed) {
            most = most.max(common::call_children_at_once(std::process::id()));
            std::thread::sleep(Duration::from_millis(10));
        }
        most
    })
}

fn check_one(token: u32) {
    let fate = mix(token) % 100;
    let fork = Isolate::new()
        .backend(if token.is_multiple_of(2) {
            Backend::Pipe
        } else {
            Backend::File
        })
        .timeout(Duration::from_secs(30));
    match fate {
        0..10 => match panics(token) {
            Err(Error::Panicked { message, .. }) => {
                assert_eq!(message, format!("token {token} panicked"));
            }
            other => panic!("{token}: {other:?}"),
        },
        10..15 => {
            let result = if token.is_multiple_of(2) {
                aborts(token)
            } else {
                fork.fork(|| -> u32 { std::process::abort() })
            };
            match result {
                Err(Error::NonzeroExitcode(exit)) => {
                    assert_eq!(exit.signal(), Some(libc::SIGABRT), "{token}");
                }
                other => panic!("{token}: {other:?}"),
            }
        }
        15..20 => {
            let result = fork
                .clone()
                .timeout(Duration::from_millis(50))
                .fork(|| std::thread::sleep(Duration::from_secs(30)));
            match result {
                Err(Error::Timeout { after, .. }) => {
                    assert_eq!(after, Duration::from_millis(50), "{token}");
                }
                other => panic!("{token}: {other:?}"),
            }
        }
        _ if token.is_multiple_of(2) => assert_eq!(echo(token).unwrap(), token),
        _ => assert_eq!(
            fork.fork(|| {
                nap(token);
                token
            })
            .unwrap(),
            token
        ),
    }
}

/// G1: 32 threads x 32 calls with mixed outcomes.
#[test]
fn thousand_calls_scenario() {
    if !scenario::is("thousand_calls_scenario") {
        return;
    }
    common::watchdog();
    for token in 0..20 {
        check_one(token); // warm-up: every kind once, lazily opened fds
    }
    let fds = common::open_fds();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_children(stop.clone());
    let done = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for thread in 0..32u32 {
            let done = &done;
            scope.spawn(move || {
                for call in 0..32 {
                    check_one(1000 + thread * 32 + call);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    stop.store(true, Ordering::Relaxed);
    let most = watcher.join().unwrap();
    let cap = 2 * std::thread::available_parallelism().unwrap().get();
    assert_eq!(done.load(Ordering::Relaxed), 1024);
    assert!(
        most <= cap,
        "{most} children at once, over the cap of {cap}"
    );
    assert_eq!(common::open_fds(), fds, "descriptors leaked");
    assert_eq!(common::zombie_children(), Vec::<i32>::new(), "zombies");
    assert_eq!(common::call_children(std::process::id()), Vec::new());
    eprintln!("at most {most} children at once (cap {cap})");
    eprintln!("SCENARIO PASSED");
}

#[test]
fn a_thousand_calls_from_32_threads_each_get_their_own_result() {
    common::watchdog();
    let mut command = scenario::command("thousand_calls_scenario");
    // A captured backtrace costs a panicking child ~0.2 s in a debug build.
    command.env("RUST_BACKTRACE", "0");
    let output = scenario::run(command);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("SCENARIO PASSED"), "{stderr}");
}

/// Eight threads each make a 100 ms call (and, with `spawned`, a spawned
/// one first); asserts that at most two children ran at once.
fn eight_threads_run_two_children_at_most(spawned: bool) {
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_children(stop.clone());
    std::thread::scope(|scope| {
        for thread in 0..8u32 {
            scope.spawn(move || {
                if spawned {
                    assert_eq!(echo(thread).unwrap(), thread);
                }
                let value = Isolate::new().timeout(Duration::from_secs(30)).fork(|| {
                    std::thread::sleep(Duration::from_millis(100));
                    thread
                });
                assert_eq!(value.unwrap(), thread);
            });
        }
    });
    stop.store(true, Ordering::Relaxed);
    assert_eq!(watcher.join().unwrap(), 2);
}

/// Runs the scenario `name` with `BOMBSQUAD_MAX_CHILDREN` set to `cap`.
fn run_with_max_children(name: &str, cap: &str) {
    common::watchdog();
    let mut command = scenario::command(name);
    command.env("BOMBSQUAD_MAX_CHILDREN", cap);
    let output = scenario::run(command);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("SCENARIO PASSED"), "{stderr}");
}

/// The cap from `BOMBSQUAD_MAX_CHILDREN`: 8 threads, at most 2 children.
#[test]
fn max_children_scenario() {
    if !scenario::is("max_children_scenario") {
        return;
    }
    common::watchdog();
    eight_threads_run_two_children_at_most(false);
    eprintln!("SCENARIO PASSED");
}

#[test]
fn bombsquad_max_children_caps_concurrent_children() {
    run_with_max_children("max_children_scenario", "2");
}

/// The cap from `bombsquad::set_max_children`: 8 threads, at most 2
/// children, whatever the environment says.
#[test]
fn set_max_children_scenario() {
    if !scenario::is("set_max_children_scenario") {
        return;
    }
    common::watchdog();
    bombsquad::set_max_children(2);
    eight_threads_run_two_children_at_most(true);
    eprintln!("SCENARIO PASSED");
}

#[test]
fn set_max_children_caps_concurrent_children() {
    run_with_max_children("set_max_children_scenario", "16");
}

/// A malformed `BOMBSQUAD_MAX_CHILDREN` fails every one-shot call with a
/// message that says what to write, until `set_max_children` decides.
#[test]
fn malformed_max_children_scenario() {
    if !scenario::is("malformed_max_children_scenario") {
        return;
    }
    common::watchdog();
    let cpus = std::thread::available_parallelism().unwrap().get();
    let expected = format!(
        "BOMBSQUAD_MAX_CHILDREN=\"banana\" is not a positive whole number: set it to how many \
         isolated calls may have a child running at once (unset, the cap is twice the CPUs: \
         {}), or call bombsquad::set_max_children",
        2 * cpus
    );
    for _ in 0..2 {
        match echo(1) {
            Err(Error::InvalidOptions { message }) => assert_eq!(message, expected),
            other => panic!("expected InvalidOptions, got {other:?}"),
        }
        match bombsquad::fork(|| 1) {
            Err(Error::InvalidOptions { message }) => assert_eq!(message, expected),
            other => panic!("expected InvalidOptions, got {other:?}"),
        }
    }
    bombsquad::set_max_children(3);
    assert_eq!(echo(1).unwrap(), 1);
    assert_eq!(bombsquad::fork(|| 2).unwrap(), 2);
    eprintln!("SCENARIO PASSED");
}

#[test]
fn a_malformed_max_children_is_refused_at_the_call() {
    run_with_max_children("malformed_max_children_scenario", "banana");
}
