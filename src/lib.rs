//! Run a function call in a child process, so that a segfault in C code, an
//! `abort()`, an OOM kill or an `exit()` inside it cannot take the caller
//! down.
//!
//! Write `#[bombsquad]` on a function. Each call then runs in a child; the
//! arguments and the result cross the boundary as MessagePack; a panic in
//! the child is re-raised in the caller; a child killed by a signal or
//! exiting nonzero becomes [`Error::NonzeroExitcode`]. The wrapper keeps the
//! function's name, visibility, parameters and attributes, and returns
//! `Result<R, bombsquad::Error>`.
//!
//! Linux only.
//!
//! # Examples
//!
//! ```
//! use bombsquad::{Error, bombsquad};
//!
//! #[bombsquad]
//! fn divide(a: i64, b: i64) -> i64 {
//!     a / b
//! }
//!
//! #[bombsquad(start_method = "fork", backend = "pipe", timeout = "2s")]
//! fn risky() -> usize {
//!     unsafe { libc::strlen(std::ptr::null()) } // a real segfault in C
//! }
//!
//! assert_eq!(divide(10, 2).unwrap(), 5);
//!
//! match risky() {
//!     Err(Error::NonzeroExitcode(e)) => {
//!         assert_eq!(e.signal(), Some(libc::SIGSEGV));
//!         assert_eq!(e.exitcode(), -11); // minus the signal, as in Python
//!     }
//!     other => panic!("{other:?}"),
//! }
//! ```
//!
//! A panic in the child is re-raised in the caller with the child's message
//! as a `String` payload, so `#[should_panic(expected = "...")]` and
//! `catch_unwind` behave as if the call had run in-process:
//!
//! ```should_panic
//! # use bombsquad::bombsquad;
//! # #[bombsquad] fn divide(a: i64, b: i64) -> i64 { a / b }
//! divide(10, 0); // panics here: "attempt to divide by zero"
//! ```
//!
//! The closure form runs a block in a forked child, with no registration:
//!
//! ```
//! let numbers = vec![1, 2, 3];
//! assert_eq!(bombsquad::fork(|| numbers.iter().sum::<i32>()).unwrap(), 6);
//! ```
//!
//! # Options
//!
//! `#[bombsquad(start_method = .., backend = .., timeout = .., panic = ..)]`,
//! all optional, checked at compile time:
//!
//! | option | values | default |
//! |---|---|---|
//! | `start_method` | `"spawn"`: re-execute this binary and run the function before `main`; `"fork"`: fork and run it directly | `"spawn"` |
//! | `backend` | `"file"`: an unnamed temp file; `"pipe"`: a pipe drained while the child writes; `"shm"`: a memfd, sealed after the child exits and decoded from a read-only mapping | `"file"` |
//! | `timeout` | `"250ms"`, `"2s"`, `"1m"`, `"1h"`: then the child's process group is killed | none |
//! | `panic` | `"resume"`: re-raise in the caller; `"error"`: return [`Error::Panicked`] | `"resume"` |
//!
//! The same options exist at run time on the [`Isolate`] builder.
//!
//! # Fork or spawn
//!
//! - **spawn** (the default) re-executes `/proc/self/exe` with no arguments;
//!   a constructor finds the function by its registered name before `main`
//!   runs, so it works in binaries, examples, tests and doctests without
//!   touching `main`, and the user's `main` never starts in the child. The
//!   binary's other constructors do run. Arguments must be
//!   `Serialize + DeserializeOwned`, or shared references to such (`&T`,
//!   `&str`, `&[T]`, `&Path`), which the child rebuilds as owned values.
//!   Its cost does not grow with the parent's memory.
//! - **fork** is the fastest, and arguments need no serde at all (memory is
//!   copied). But in a multi-threaded parent the child can block forever on
//!   a lock another thread held at the fork (std's stdout lock included):
//!   use a timeout there. Its cost grows with the parent's resident memory.
//!   Under libtest's output capture, `print!` in a forked child is lost.
//!   A function that calls `std::process::exit` runs the parent's `atexit`
//!   handlers in the child; the library itself always leaves with `_exit`.
//!
//! Results must be `Serialize + DeserializeOwned` in both modes. A
//! `Vec<u8>` result travels as one MessagePack `bin` object.
//!
//! # Errors
//!
//! See [`Error`]: `NonzeroExitcode` (a signal or a nonzero exit code),
//! `ZeroExitcodeWithoutPayload` (exit 0 without a result: never `Ok`),
//! `Timeout`, `Panicked` (with `panic = "error"`), `Codec` (naming which of
//! the four encode/decode steps failed), `Spawn` (the OS refused a process,
//! pipe, socket or file), `Protocol` (malformed or truncated data from the
//! child) and `NestingTooDeep`.
//!
//! # What the child gets
//!
//! Its own process group (a timeout kills grandchildren too, and so does the
//! end of a call), stdin from `/dev/null`, no descriptors of the parent but
//! stdio (fork mode), `RLIMIT_CORE` 0, SIGKILL when its parent dies, and the
//! signal state of a fresh process. Isolated calls may nest 8 deep.

pub use isolate_macros::bombsquad;
pub use isolate_runtime::{
    Backend, CodecStage, Error, Isolate, Location, NonzeroExitcode, PanicMode, fork, jobs,
};

/// Not public API: used by code that `#[bombsquad]` generates.
#[doc(hidden)]
pub mod __private {
    pub use isolate_runtime::__private::*;
}
