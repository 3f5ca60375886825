//! The tour: every outcome an isolated call can have, one line each.
//!
//! Run it with `cargo run --release --example quickstart`.

#![allow(
    clippy::undocumented_unsafe_blocks,
    reason = "crash tests call libc to fault on purpose"
)]

use bombsquad::{Error, bombsquad};

/// Python bombsquad's README example: a child killed by SIGKILL.
#[bombsquad]
fn killed_by_the_oom_killer() {
    // What the kernel OOM killer does; here the child does it to itself.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
}

/// Python bombsquad's other example: an exception (a panic) in the child.
#[bombsquad]
fn divide(a: i64, b: i64) -> i64 {
    a / b
}

/// A real segfault in C code: `strlen(NULL)`.
#[bombsquad(start_method = "fork", backend = "pipe")]
fn segfault_in_c() -> usize {
    unsafe { libc::strlen(std::ptr::null()) }
}

/// A call that never ends, bounded by a timeout.
#[bombsquad(timeout = "250ms")]
fn hangs() {
    std::thread::sleep(std::time::Duration::from_secs(3600));
}

/// A large result through each backend.
#[bombsquad(backend = "file")]
fn megabytes_via_file(n: usize) -> Vec<u8> {
    vec![42; n << 20]
}

#[bombsquad(backend = "pipe")]
fn megabytes_via_pipe(n: usize) -> Vec<u8> {
    vec![42; n << 20]
}

fn main() {
    // The library's own notes (where a re-raised panic happened in the
    // child, its backtrace) are `tracing` warnings at target "bombsquad",
    // printed to stderr only while no subscriber is installed. This
    // subscriber shows errors only: the tour keeps to one line per outcome.
    let errors_only = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::ERROR)
        .finish();
    tracing::subscriber::set_global_default(errors_only).unwrap();

    match killed_by_the_oom_killer() {
        Err(Error::NonzeroExitcode(e)) => {
            println!("caught SIGKILL:      exitcode {} ({e})", e.exitcode())
        }
        other => panic!("expected a SIGKILL, got {other:?}"),
    }

    println!("divide(10, 2):      {}", divide(10, 2).unwrap());
    // The re-raised panic goes through the panic hook like any other; keep
    // the tour to one line per outcome.
    std::panic::set_hook(Box::new(|_| {}));
    let panic = std::panic::catch_unwind(|| divide(10, 0)).unwrap_err();
    drop(std::panic::take_hook());
    let message = panic.downcast_ref::<String>().unwrap();
    println!("divide(10, 0):      re-raised in the parent: {message:?}");

    match segfault_in_c() {
        Err(Error::NonzeroExitcode(e)) => {
            println!("caught SIGSEGV:     exitcode {} ({e})", e.exitcode())
        }
        other => panic!("expected a SIGSEGV, got {other:?}"),
    }

    match hangs() {
        Err(e @ Error::Timeout { .. }) => println!("caught a timeout:   {e}"),
        other => panic!("expected a timeout, got {other:?}"),
    }

    println!(
        "file backend:       {} MiB back",
        megabytes_via_file(64).unwrap().len() >> 20
    );
    println!(
        "pipe backend:       {} MiB back",
        megabytes_via_pipe(64).unwrap().len() >> 20
    );
    println!("the parent is still alive");
}
