//! The warm call's fast paths (BENCHMARKS.md "Warm workers"): a request
//! read in one go by the worker whatever its size, a reply read without a
//! trailing `EAGAIN` read, a check-in that wakes a waiting caller only when
//! there is one, and large results copied out of the arena into memory
//! advised for huge pages.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bombsquad::{Task, Worker, WorkerOptions, bombsquad};

#[bombsquad(pool = 1)]
fn sum_of(bytes: Vec<u8>) -> u64 {
    bytes.iter().map(|&b| u64::from(b)).sum()
}

#[bombsquad(pool = 1)]
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn expected(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn requests_of_every_size_reach_the_worker_whole() {
    // Around the worker's first read (4 KiB), its kept buffer (1 MiB) and
    // well past both, small again after a large one.
    for len in [0, 1, 4079, 4080, 4096, 70_000, 1 << 20, (3 << 20) + 5, 3, 0] {
        let bytes: Vec<u8> = (0..len).map(|i| (i % 7) as u8).collect();
        let want: u64 = bytes.iter().map(|&b| u64::from(b)).sum();
        assert_eq!(sum_of(bytes).unwrap(), want, "a request of {len} bytes");
    }
}

#[test]
fn results_of_every_size_come_back_whole() {
    // Through the socket, at the arena's threshold, past the huge-page
    // advice's, and not a multiple of any page size.
    for len in [
        0,
        17,
        (1 << 20) - 1,
        1 << 20,
        (4 << 20) + 4097,
        9 << 20,
        100,
    ] {
        assert_eq!(
            pattern(len).unwrap(),
            expected(len),
            "a result of {len} bytes"
        );
    }
}

#[derive(Debug, Default)]
struct Slow;

#[bombsquad]
impl Task for Slow {
    type Input = u64;
    type Output = u64;
    type Error = String;

    fn run(&mut self, x: u64) -> Result<u64, String> {
        std::thread::sleep(std::time::Duration::from_millis(2));
        Ok(x * 2)
    }
}

#[test]
fn callers_beyond_the_workers_wait_and_are_all_served() {
    let worker = Arc::new(Worker::<Slow>::spawn_with(WorkerOptions::new().workers(2)).unwrap());
    let total = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..6u64)
        .map(|t| {
            let worker = Arc::clone(&worker);
            let total = Arc::clone(&total);
            std::thread::spawn(move || {
                for i in 0..20 {
                    let x = t * 100 + i;
                    assert_eq!(worker.call(x).unwrap(), Ok(x * 2));
                    total.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(total.load(Ordering::Relaxed), 120);
    assert_eq!(worker.restarts(), 0);
}

/// Prints far more than a pipe holds (the parent must relay it while it
/// waits), or crashes, or hangs, as asked.
#[bombsquad(pool = 1, stderr = "capture", timeout = "2s")]
fn behaves(how: u8) -> u64 {
    match how {
        0 => {
            let line = "x".repeat(1023);
            for _ in 0..512 {
                eprintln!("{line}"); // 512 KiB
            }
            7
        }
        1 => std::process::abort(),
        _ => loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        },
    }
}

#[test]
fn output_crash_and_timeout_are_seen_while_waiting() {
    assert_eq!(
        behaves(0).unwrap(),
        7,
        "output larger than a pipe is relayed"
    );
    match behaves(1) {
        Err(bombsquad::Error::NonzeroExitcode(exit)) => assert_ne!(exit.exitcode(), 0),
        other => panic!("expected a crash, got {other:?}"),
    }
    assert_eq!(behaves(0).unwrap(), 7, "a fresh worker after the crash");
    match behaves(2) {
        Err(bombsquad::Error::Timeout { .. }) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(behaves(0).unwrap(), 7, "a fresh worker after the timeout");
}
