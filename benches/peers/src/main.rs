//! The peers of bombsquad, each against its floor, measured in one process
//! in interleaved blocks (medians). Run by `examples/compare` (section
//! `peers`), which prints the table; on its own:
//!
//! ```text
//! cargo run --release --manifest-path benches/peers/Cargo.toml
//! ```
//!
//! Prints one line per case: `name<TAB>median seconds<TAB>floor<TAB>bytes`
//! (`floor` is `-` for a floor; `bytes` is the result size, 8 for a
//! trivial call). `PEERS_ROUNDS` scales the rounds (default 1).

// The floors are the ones examples/compare measures: the same file.
#[path = "../../../examples/compare/floors.rs"]
mod floors;

use std::time::{Duration, Instant};

const RAW_FORK: &str = "raw fork + pipe + waitpid";
const RAW_REEXEC: &str = "raw re-exec via Command + wait";
const BIG: usize = 64 << 20;

/// A trivial call in a rusty-fork child: the child re-runs `main` and
/// lands here, runs the empty body and exits.
fn rusty_fork_trivial() {
    rusty_fork::fork(
        "peers::rusty_fork_trivial",
        rusty_fork::rusty_fork_id!(),
        |_| {},
        |child, _| assert!(child.wait().unwrap().success()),
        || {},
    )
    .unwrap();
}

fn procspawn_trivial() {
    let value = procspawn::spawn((), |()| 42u64).join().unwrap();
    assert_eq!(value, 42);
}

fn procspawn_big() {
    let bytes = procspawn::spawn(BIG, floors::payload).join().unwrap();
    floors::check_payload(&bytes, BIG);
}

struct Case {
    name: &'static str,
    floor: &'static str,
    bytes: usize,
    run: fn(),
    samples: Vec<Duration>,
}

fn case(name: &'static str, floor: &'static str, bytes: usize, run: fn()) -> Case {
    Case {
        name,
        floor,
        bytes,
        run,
        samples: Vec::new(),
    }
}

fn interleave(cases: &mut [Case], rounds: usize, block: usize) {
    for _ in 0..rounds {
        for case in cases.iter_mut() {
            for _ in 0..block {
                let start = Instant::now();
                (case.run)();
                case.samples.push(start.elapsed());
            }
        }
    }
}

fn report(cases: &mut [Case]) {
    for case in cases {
        case.samples.sort_unstable();
        let median = case.samples[case.samples.len() / 2];
        println!(
            "{}\t{:.9}\t{}\t{}",
            case.name,
            median.as_secs_f64(),
            case.floor,
            case.bytes
        );
    }
}

fn main() {
    floors::exit_if_floor_child();
    procspawn::init();
    if std::env::var_os("RUSTY_FORK_OCCURS").is_some() {
        rusty_fork_trivial(); // the child: runs the body and exits
    }
    let scale: f64 = std::env::var("PEERS_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a small positive count"
    )]
    let rounds = |n: f64| ((n * scale).round() as usize).max(1);

    let mut trivial = [
        case(RAW_FORK, "-", 8, || assert_eq!(floors::raw_fork(), 42)),
        case(RAW_REEXEC, "-", 8, floors::raw_reexec),
        case("procspawn 1.0.2 spawn", RAW_REEXEC, 8, procspawn_trivial),
        case("rusty-fork 0.3.1 fork", RAW_REEXEC, 8, rusty_fork_trivial),
    ];
    interleave(&mut trivial, rounds(20.0), 10);
    report(&mut trivial);

    let mut big = [
        case("raw pipe 64 MiB", "-", BIG, || {
            floors::check_payload(&floors::raw_pipe(BIG), BIG);
        }),
        case("raw memfd 64 MiB", "-", BIG, || {
            floors::check_payload(&floors::raw_memfd(BIG), BIG);
        }),
        case(
            "procspawn 1.0.2 64 MiB Vec<u8>",
            "raw pipe 64 MiB",
            BIG,
            procspawn_big,
        ),
    ];
    interleave(&mut big, rounds(5.0), 1);
    report(&mut big);
}
