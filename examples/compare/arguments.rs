//! A 64 MiB `Vec<u8>` argument against a 64 MiB `Vec<u8>` result, both
//! spawn mode through the pipe backend, interleaved in one run: what the
//! arguments' `bin` path leaves of the gap.

use bombsquad::bombsquad;

use crate::bench::{Case, Plan, interleave, ratio, show};
use crate::{Config, floors};

const SIZE: usize = 64 << 20;

/// The target: an argument costs at most 1.5x the same result.
const TARGET: f64 = 1.5;

#[bombsquad(start_method = "spawn", backend = "pipe")]
fn takes_bytes(bytes: Vec<u8>) -> u64 {
    bytes.len() as u64
}

#[bombsquad(start_method = "spawn", backend = "pipe")]
fn returns_bytes(len: usize) -> Vec<u8> {
    floors::payload(len)
}

pub fn arguments(config: &Config) {
    if config.max_size < SIZE {
        return;
    }
    let plan = config.scale(Plan {
        rounds: 9,
        block: 1,
    });
    println!(
        "\n== 64 MiB Vec<u8> argument vs result, spawn mode, pipe backend, {} rounds, medians",
        plan.rounds
    );
    let mut cases = vec![
        Case::new("64 MiB result", || {
            floors::check_payload(&returns_bytes(SIZE).unwrap(), SIZE);
        }),
        Case::new("64 MiB argument", || {
            // Made outside the child, as the result is made inside it.
            assert_eq!(takes_bytes(floors::payload(SIZE)).unwrap(), SIZE as u64);
        }),
    ];
    interleave(&mut cases, plan);
    let result = cases[0].median();
    for case in &cases {
        println!(
            "{:<40} {:>12} {:>12.2}x",
            case.name,
            show(case.median()),
            ratio(case.median(), result)
        );
    }
    let ratio = ratio(cases[1].median(), result);
    println!(
        "argument / result: {ratio:.2}x (target <= {TARGET}x): {}",
        if ratio <= TARGET { "met" } else { "not met" }
    );
}
