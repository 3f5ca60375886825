//! Spawn-mode arguments: encoded in the parent, rebuilt owned in the child,
//! and the failures of both steps (docs/FAULTS.md A11, A12).

#![allow(
    clippy::undocumented_unsafe_blocks,
    reason = "crash tests call libc to fault on purpose"
)]
#![allow(
    clippy::ptr_arg,
    reason = "&Vec<u8> arguments, as users write them, take the bin path"
)]

use crate::common;

use crate::common::{PanicsInDeserialize, RefusesToSerialize};

use std::path::{Path, PathBuf};

use bombsquad::{CodecStage, Error, bombsquad};

/// The side effect that proves a function ran.
fn touch(path: &Path) {
    std::fs::write(path, b"ran").unwrap();
}

#[bombsquad]
fn takes_unserializable(_value: RefusesToSerialize, witness: PathBuf) {
    touch(&witness);
}

#[bombsquad]
fn takes_undecodable(_value: PanicsInDeserialize, witness: PathBuf) {
    touch(&witness);
}

#[bombsquad]
fn borrowed(text: &str, numbers: &[u32], path: &Path, pair: &(u8, String)) -> String {
    format!(
        "{text}:{}:{}:{}{}",
        numbers.iter().sum::<u32>(),
        path.display(),
        pair.0,
        pair.1
    )
}

#[bombsquad]
fn patterns((a, b): (i32, i32), mut c: i32) -> i32 {
    c += a * b;
    c
}

fn witness_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("bombsquad-witness-{name}-{}", std::process::id()))
}

#[test]
fn an_argument_that_fails_to_encode_never_runs_the_function() {
    common::watchdog();
    let witness = witness_path("encode");
    match takes_unserializable(RefusesToSerialize, witness.clone()) {
        Err(Error::Codec { stage, message }) => {
            assert_eq!(stage, CodecStage::EncodeArguments);
            assert_eq!(message, "refuses to serialize");
        }
        other => panic!("expected a codec error, got {other:?}"),
    }
    // That no descriptor, child or temp file is left is checked in
    // tests/leaks.rs, a binary where no other test runs meanwhile.
    assert!(!witness.exists(), "the function never ran");
}

#[test]
fn an_argument_that_fails_to_decode_in_the_child_never_runs_the_function() {
    common::watchdog();
    let witness = witness_path("decode");
    match takes_undecodable(PanicsInDeserialize(1), witness.clone()) {
        Err(Error::Codec { stage, message }) => {
            assert_eq!(stage, CodecStage::DecodeArguments);
            assert_eq!(message, "deserialize panicked");
        }
        other => panic!("expected a codec error, got {other:?}"),
    }
    assert!(!witness.exists(), "the function never ran");
}

#[test]
fn shared_references_are_rebuilt_owned() {
    common::watchdog();
    let got = borrowed("t", &[1, 2, 3], Path::new("/x/y"), &(4, "z".into())).unwrap();
    assert_eq!(got, "t:6:/x/y:4z");
}

#[test]
fn pattern_and_mut_parameters_work() {
    common::watchdog();
    assert_eq!(patterns((3, 4), 5).unwrap(), 17);
}

/// What a child saw of its byte arguments: each one's length and a sum
/// that depends on every byte and its place.
fn fingerprint(parts: &[&[u8]]) -> Vec<(usize, u64)> {
    parts
        .iter()
        .map(|bytes| {
            let sum = bytes.iter().enumerate().fold(0u64, |acc, (i, &b)| {
                acc.wrapping_mul(31).wrapping_add(b as u64 ^ i as u64)
            });
            (bytes.len(), sum)
        })
        .collect()
}

#[bombsquad]
fn bytes_spawned(
    owned: Vec<u8>,
    slice: &[u8],
    vec: &Vec<u8>,
    tag: u16,
) -> (Vec<(usize, u64)>, u16) {
    (fingerprint(&[&owned, slice, vec]), tag)
}

#[bombsquad(start_method = "forkserver")]
fn bytes_forkserved(
    owned: Vec<u8>,
    slice: &[u8],
    vec: &Vec<u8>,
    tag: u16,
) -> (Vec<(usize, u64)>, u16) {
    (fingerprint(&[&owned, slice, vec]), tag)
}

#[bombsquad(pool = 1)]
fn bytes_pooled(owned: Vec<u8>, slice: &[u8], vec: &Vec<u8>, tag: u16) -> (Vec<(usize, u64)>, u16) {
    (fingerprint(&[&owned, slice, vec]), tag)
}

/// What the child saw, as the functions above return it.
type Seen = Result<(Vec<(usize, u64)>, u16), bombsquad::Error>;
type BytesCall = fn(Vec<u8>, &[u8], &Vec<u8>, u16) -> Seen;

/// Byte arguments of every size and form (`Vec<u8>`, `&[u8]`, `&Vec<u8>`)
/// arrive byte-exact beside other arguments, under every start method and
/// in a pool. They take the `bin` path; `args.rs`'s unit tests pin the
/// encoding itself.
#[test]
fn byte_arguments_arrive_whole_under_every_start_method_and_in_pools() {
    common::watchdog();
    for len in [0usize, 1, 255, 256, 65_535, 65_536, 3 << 20] {
        let owned: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let slice: Vec<u8> = (0..len / 2).map(|i| (i % 13) as u8).collect();
        let vec: Vec<u8> = vec![0xff; len / 3];
        let expected = (fingerprint(&[&owned, &slice, &vec]), 9);
        let calls: [(&str, BytesCall); 3] = [
            ("spawn", bytes_spawned),
            ("forkserver", bytes_forkserved),
            ("pool", bytes_pooled),
        ];
        for (how, call) in calls {
            assert_eq!(
                call(owned.clone(), &slice, &vec, 9).unwrap(),
                expected,
                "{how} {len}"
            );
        }
        // A spawn-mode function forked by a scope runs the same entry.
        let forked = bombsquad::Isolate::new()
            .start_method(bombsquad::StartMethod::Fork)
            .scope(|| bytes_spawned(owned.clone(), &slice, &vec, 9))
            .unwrap();
        assert_eq!(forked, expected, "fork {len}");
    }
}
