//! Spawn-mode arguments: encoded in the parent, rebuilt owned in the child,
//! and the failures of both steps (docs/FAULTS.md A11, A12).

#![allow(
    clippy::undocumented_unsafe_blocks,
    reason = "crash tests call libc to fault on purpose"
)]

mod common;

use common::{PanicsInDeserialize, RefusesToSerialize};

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
