//! docs/FAULTS.md B4: in a `panic = "abort"` build the child aborts on a panic
//! and the parent, the same binary, must not re-raise (it would abort too):
//! the call returns `NonzeroExitcode` with SIGABRT and the panic message.
//!
//! Run it with `cargo run --profile panic-abort --example panic_abort`;
//! it checks itself and exits nonzero on any surprise.

#![allow(
    clippy::undocumented_unsafe_blocks,
    reason = "crash tests call libc to fault on purpose"
)]

use bombsquad::{Error, bombsquad};

#[bombsquad(start_method = "spawn")]
fn panics_spawned() -> u8 {
    panic!("abort build panic")
}

#[bombsquad]
fn panics_forkserved() -> u8 {
    panic!("abort build panic")
}

#[bombsquad(start_method = "fork", backend = "pipe")]
fn panics_forked() -> u8 {
    panic!("abort build panic")
}

fn main() {
    if !cfg!(panic = "abort") {
        eprintln!("build this example with `--profile panic-abort`");
        std::process::exit(1);
    }
    for (mode, result) in [
        ("forkserver", panics_forkserved()),
        ("spawn", panics_spawned()),
        ("fork", panics_forked()),
    ] {
        match result {
            Err(Error::NonzeroExitcode(e))
                if e.signal() == Some(libc::SIGABRT)
                    && e.panic_message() == Some("abort build panic") =>
            {
                println!("{mode}: {e}");
            }
            other => {
                eprintln!(
                    "{mode}: expected NonzeroExitcode(SIGABRT) with the panic, got {other:?}"
                );
                std::process::exit(1);
            }
        }
    }
}
