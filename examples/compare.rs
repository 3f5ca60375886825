//! Trivial-call cost against the floors the kernel allows, measured in the
//! same run, in interleaved blocks, as medians (DESIGN.md "Performance
//! floors"):
//!
//! - fork-mode call vs raw `fork` + 8 bytes through a pipe + `waitpid`;
//! - spawn-mode call vs `Command` re-executing this binary + wait.
//!
//! Run it with `cargo run --release --example compare`.

#![allow(
    clippy::undocumented_unsafe_blocks,
    reason = "the raw floor forks with libc on purpose"
)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bombsquad::bombsquad;

/// Set in the environment of the raw re-exec floor: exit at once.
const FLOOR_CHILD: &str = "COMPARE_FLOOR_CHILD";
const ROUNDS: usize = 20;
const BLOCK: usize = 25;

#[bombsquad(start_method = "fork", backend = "pipe")]
fn forked_trivial() -> u64 {
    42
}

#[bombsquad(backend = "pipe")]
fn spawned_trivial() -> u64 {
    42
}

/// fork, the child writes 8 bytes to a pipe and `_exit`s, the parent reads
/// them and reaps it.
fn raw_fork_floor() {
    let mut fds = [0; 2];
    unsafe {
        assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), 0);
        let pid = libc::fork();
        if pid == 0 {
            let value = 42u64.to_le_bytes();
            libc::write(fds[1], value.as_ptr().cast(), 8);
            libc::_exit(0);
        }
        libc::close(fds[1]);
        let mut value = [0u8; 8];
        assert_eq!(libc::read(fds[0], value.as_mut_ptr().cast(), 8), 8);
        libc::close(fds[0]);
        let mut status = 0;
        libc::waitpid(pid, &raw mut status, 0);
    }
}

fn raw_reexec_floor() {
    let status = Command::new("/proc/self/exe")
        .env(FLOOR_CHILD, "1")
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
}

struct Case {
    name: &'static str,
    run: Box<dyn Fn()>,
    samples: Vec<Duration>,
}

fn case(name: &'static str, run: impl Fn() + 'static) -> Case {
    Case {
        name,
        run: Box::new(run),
        samples: Vec::new(),
    }
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn main() {
    if std::env::var_os(FLOOR_CHILD).is_some() {
        std::process::exit(0);
    }
    let mut cases = [
        case("raw fork + pipe + waitpid", raw_fork_floor),
        case("fork-mode call", || {
            assert_eq!(forked_trivial().unwrap(), 42)
        }),
        case("raw re-exec via Command + wait", raw_reexec_floor),
        case("spawn-mode call", || {
            assert_eq!(spawned_trivial().unwrap(), 42)
        }),
    ];
    for _ in 0..ROUNDS {
        for case in &mut cases {
            for _ in 0..BLOCK {
                let start = Instant::now();
                (case.run)();
                case.samples.push(start.elapsed());
            }
        }
    }
    let medians: Vec<Duration> = cases.iter_mut().map(|c| median(&mut c.samples)).collect();
    println!("{:<34} {:>12} {:>14}", "case", "median", "vs its floor");
    for (i, case) in cases.iter().enumerate() {
        let floor = medians[i - i % 2];
        let ratio = medians[i].as_secs_f64() / floor.as_secs_f64();
        println!(
            "{:<34} {:>9.1} µs {:>13.2}x",
            case.name,
            medians[i].as_secs_f64() * 1e6,
            ratio
        );
    }
}
