//! The isolated functions measured, one per start method and backend, and
//! the payload section (`Vec<u8>` results against the raw transports).

use bombsquad::{Error, bombsquad};

use crate::bench::{self, Case, Plan, gbps, interleave, show, show_size};
use crate::{Config, floors};

/// An isolated call with an 8-byte result.
pub struct Trivial {
    pub name: &'static str,
    pub fork: bool,
    pub run: fn() -> Result<u64, Error>,
}

/// An isolated call returning `len` bytes.
pub struct Bytes {
    pub name: &'static str,
    pub fork: bool,
    pub run: fn(usize) -> Result<Vec<u8>, Error>,
}

macro_rules! calls {
    ($($trivial:ident, $bytes:ident: $start:literal, $backend:literal;)*) => {
        $(
            #[bombsquad(start_method = $start, backend = $backend)]
            fn $trivial() -> u64 {
                42
            }

            #[bombsquad(start_method = $start, backend = $backend)]
            fn $bytes(len: usize) -> Vec<u8> {
                floors::payload(len)
            }
        )*

        pub const TRIVIAL: &[Trivial] = &[$(Trivial {
            name: concat!($start, "-mode call, ", $backend, " backend"),
            fork: matches!($start.as_bytes(), b"fork"),
            run: $trivial,
        }),*];

        pub const BYTES: &[Bytes] = &[$(Bytes {
            name: concat!($start, "-mode call, ", $backend, " backend"),
            fork: matches!($start.as_bytes(), b"fork"),
            run: $bytes,
        }),*];
    };
}

calls! {
    fork_pipe, bytes_fork_pipe: "fork", "pipe";
    fork_file, bytes_fork_file: "fork", "file";
    fork_shm, bytes_fork_shm: "fork", "shm";
    spawn_pipe, bytes_spawn_pipe: "spawn", "pipe";
    spawn_file, bytes_spawn_file: "spawn", "file";
    spawn_shm, bytes_spawn_shm: "spawn", "shm";
}

/// A fork-server call: a fork of the small server process, with spawn's
/// semantics. Measured against the raw fork floor.
#[bombsquad(start_method = "forkserver", backend = "pipe")]
pub fn forkserver_pipe() -> u64 {
    42
}

/// The result sizes measured, up to `max`.
pub fn sizes(max: usize) -> Vec<usize> {
    [1 << 10, 1 << 20, 64 << 20, 1 << 30]
        .into_iter()
        .filter(|&size| size <= max)
        .collect()
}

/// Rounds and samples per size: enough samples for a median, within a
/// few seconds per size.
fn plan_for(size: usize) -> Plan {
    match size {
        s if s <= 1 << 10 => Plan {
            rounds: 10,
            block: 10,
        },
        s if s <= 1 << 20 => Plan {
            rounds: 10,
            block: 5,
        },
        s if s <= 64 << 20 => Plan {
            rounds: 7,
            block: 1,
        },
        _ => Plan {
            rounds: 3,
            block: 1,
        },
    }
}

/// `Vec<u8>` results: fork mode on every backend (spawn mode at 64 MiB
/// too; at 1 GiB it would add a minute and show the same) against the raw
/// transports into fresh memory and memcpy.
pub fn payload(config: &Config) {
    println!("\n== Vec<u8> results into fresh memory, medians; GB/s = 10^9 bytes/s");
    for size in sizes(config.max_size) {
        let plan = config.scale(plan_for(size));
        let source = floors::payload(size);
        let check = move |bytes: &[u8]| floors::check_payload(bytes, size);
        let mut cases = vec![
            Case::new("raw pipe (1 MiB capacity)", move || {
                check(&floors::raw_pipe(size));
            }),
            Case::new("raw temp file (O_TMPFILE)", move || {
                check(&floors::raw_file(size));
            }),
            Case::new("raw memfd", move || check(&floors::raw_memfd(size))),
            Case::new("in-process memcpy", || check(&floors::memcpy(&source))),
        ];
        let raw = cases.len() - 1;
        for call in BYTES.iter().filter(|c| c.fork || size == 64 << 20) {
            cases.push(Case::new(call.name, move || {
                check(&(call.run)(size).unwrap());
            }));
        }
        interleave(&mut cases, plan);
        let best = cases[..raw]
            .iter()
            .map(Case::median)
            .min()
            .expect("raw cases");
        println!(
            "\n{} ({} rounds x {}): {:<32} {:>10} {:>9} {:>12}",
            show_size(size),
            plan.rounds,
            plan.block,
            "case",
            "median",
            "GB/s",
            "vs best raw"
        );
        for case in &cases {
            println!(
                "  {:<50} {:>10} {:>9.2} {:>11.2}x",
                case.name,
                show(case.median()),
                gbps(size, case.median()),
                bench::ratio(best, case.median()),
            );
        }
    }
}
