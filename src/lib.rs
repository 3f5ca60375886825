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
//! `#[bombsquad(start_method = .., backend = .., timeout = .., panic = ..,
//! memory = .., cpu = .., stack_size = .., stderr = ..)]`, all optional,
//! checked at compile time:
//!
//! | option | values | default |
//! |---|---|---|
//! | `start_method` | `"forkserver"`: a small server process forks the child, with spawn's semantics, at a cost that does not grow with the caller ([`start_forkserver`]); `"spawn"`: re-execute this binary and run the function before `main`; `"fork"`: fork and run it directly | `"forkserver"` |
//! | `backend` | `"file"`: an unnamed temp file; `"pipe"`: a pipe drained while the child writes; `"shm"`: a memfd, sealed after the child exits and decoded from a read-only mapping | `"file"` |
//! | `timeout` | `"250ms"`, `"2s"`, `"1m"`, `"1h"`: then the child's process group is killed | none |
//! | `panic` | `"resume"`: re-raise in the caller; `"error"`: return [`Error::Panicked`] | `"resume"` |
//! | `memory` | `"256MiB"`: what the function may allocate ([`Isolate::memory`]); `"256MB"` is decimal, see below | none |
//! | `cpu` | `"10s"`: CPU time, whole seconds ([`Isolate::cpu`]) | none |
//! | `stack_size` | `"64MiB"`: the stack of the function's thread ([`Isolate::stack_size`]) | the thread's own |
//! | `stderr` | `"inherit"`, `"null"`, `"capture"`, or a file path ([`Stderr`]) | `"inherit"` |
//! | `pool` | `4`: keep this many warm workers for the function (see below) | none: a child per call |
//! | `max_calls` | `1000`: recycle a pool's worker after this many calls ([`WorkerOptions::max_calls`]) | never |
//! | `retries` | `2`: re-run a call whose worker crashed ([`WorkerOptions::retries`]) | 0 |
//! | `max_rss_growth` | `"300MiB"`: recycle a worker whose memory grew this much ([`WorkerOptions::max_rss_growth`]) | never |
//! | `crate` | `"my_bombsquad"`: the path of this crate, for a renamed dependency (see below) | `"::bombsquad"` |
//!
//! Sizes are a whole number and a unit, spelled out as systemd's size
//! settings are: `B` is bytes; `KiB`, `MiB`, `GiB`, `TiB` are powers of 1024
//! (`"256MiB"` is 268 435 456 bytes); `KB`, `MB`, `GB`, `TB` are powers of
//! 1000 (`"256MB"` is 256 000 000 bytes, about 244.1 MiB). Durations are
//! `ms`, `s`, `m` or `h`.
//!
//! The same options exist at run time on the [`Isolate`] builder. For
//! values known only at run time (read from configuration),
//! [`Isolate::scope`] applies a builder's options to every `#[bombsquad]`
//! call the thread makes inside a closure, over the attribute's; scopes
//! nest (the inner one wins) and other threads are untouched. A
//! `start_method = "spawn"` or `"forkserver"` function runs under any
//! [`StartMethod`]; a `"fork"` one only forks. A `pool = N` function takes
//! per call only `timeout`, `panic`, `name` and the callbacks: the other
//! options are fixed when its workers start. A combination that cannot
//! work is [`Error::InvalidOptions`] at the call, never ignored.
//!
//! ```
//! use std::time::Duration;
//! use bombsquad::{Error, Isolate, StartMethod, bombsquad};
//!
//! #[bombsquad(timeout = "1h")]
//! fn slow() {
//!     std::thread::sleep(Duration::from_secs(60));
//! }
//!
//! let configured = Isolate::new()
//!     .timeout(Duration::from_millis(100))
//!     .start_method(StartMethod::Forkserver);
//! let result = configured.scope(|| slow());
//! assert!(matches!(result, Err(Error::Timeout { .. })));
//! ```
//!
//! # Warm workers
//!
//! A one-shot child costs a new process per call (about 0.25 ms from the
//! fork server, 1.3 ms spawned, on the project's VM). With `pool = N`, a
//! function keeps N worker processes (started on its first call, with
//! spawn's semantics) that serve call after call; a warm call costs one
//! round trip over two pipes. Calls from any number of threads are served
//! N at a time, the rest wait.
//!
//! ```
//! use bombsquad::{bombsquad, Error};
//!
//! #[bombsquad(pool = 2, timeout = "5s")]
//! fn parse(text: String) -> usize {
//!     text.split_whitespace().count() // imagine a crash-prone C parser
//! }
//!
//! # fn main() -> Result<(), Error> {
//! assert_eq!(parse("three little words".into())?, 3);
//! assert_eq!(parse("warm now".into())?, 2); // the same worker process
//! # Ok(()) }
//! ```
//!
//! A crash, a timeout or a memory kill fails only the call its worker was
//! running (with the same [`NonzeroExitcode`] report as a one-shot call,
//! quoting that call's stderr); the worker is replaced, queued calls go to
//! healthy ones, and the pool never becomes unusable. A worker killed while
//! idle is noticed and replaced before the next call is sent to it. A worker
//! that dies five times in a row while starting makes the pool return
//! [`Error::WorkerStartup`] for 10 s instead of restarting it in a storm.
//! Workers are started by a library thread that lives as long as the
//! process, so they survive the thread that first called (a test thread).
//! [`shutdown_pools`] ends every function's pool.
//!
//! Per call: `timeout`, `stderr` and `cpu` apply to each call; `memory`
//! limits the worker as a whole. A result of 1 MiB or more comes back
//! through a memory area shared with the worker and kept across calls.
//! A pool belongs to the process that made it: used in a forked copy, it
//! returns [`Error::PoolInForkedChild`].
//!
//! For state that lives across calls (a loaded model, an open library),
//! implement [`Task`] and run it with [`Worker`]; for a worker written in
//! another language, [`RemoteWorker`] speaks the protocol in `PROTOCOL.md`.
//!
//! # Crash reports and limits
//!
//! A [`NonzeroExitcode`] explains the crash: "risky (pid 42) was killed by
//! SIGSEGV: segmentation fault, address 0x0 not mapped, after 3 ms, peak RSS
//! 2.1 MiB". Every child installs a fault handler that sends the parent the
//! `si_code` and address of a SIGSEGV, SIGBUS, SIGILL or SIGFPE, then dies
//! by the signal all the same ([`NonzeroExitcode::fault_address`]). An
//! allocation failure under `memory = ".."` ([`NonzeroExitcode::is_oom`]),
//! a stack overflow ([`NonzeroExitcode::is_stack_overflow`]) and a CPU
//! limit (`cpu = ".."`, [`NonzeroExitcode::is_cpu_limit`]) are recognised
//! and named; a SIGKILL nobody here sent is "possibly the OOM killer", with
//! the cgroup's `oom_kill` counter as evidence when it can be read. Every
//! child sets its `oom_score_adj` to 1000. See [`Isolate::memory`] for why
//! the limit is `RLIMIT_DATA`, and [`Isolate::on_success`] for the outcome
//! callbacks.
//!
//! # Forkserver, spawn or fork
//!
//! - **forkserver** (the default): one small server per process, a fresh
//!   execution of this binary stopped in a constructor before `main`,
//!   forks each call's child, so a call costs a fork of a small process
//!   however large the caller has grown. Its semantics are spawn's: the
//!   function is found by its registered name, the arguments are encoded,
//!   and each call sees the caller's environment, working directory and
//!   umask as they are at the call. No child has more than its caller: a
//!   call made after the calling thread gave up credentials, capabilities,
//!   `no_new_privs`, seccomp filters or CPUs since the server started is
//!   spawned instead. Resource limits and the cgroup are the server's,
//!   from its start: a caller that changes those after its first call, and
//!   wants its children to follow, uses spawn. The
//!   caller supervises each child itself (a pidfd, group kills, reports);
//!   the server dies with its caller, and a process forked from the caller
//!   starts its own ([`start_forkserver`] starts it ahead of the first call).
//! - **spawn** re-executes `/proc/self/exe` with no arguments for each call;
//!   a constructor finds the function by its registered name before `main`
//!   runs, so it works in binaries, examples, tests and doctests without
//!   touching `main`, and the user's `main` never starts in the child. The
//!   binary's other constructors do run. Its cost does not grow with the
//!   parent's memory, but is a whole program's start.
//! - In both, arguments must be `Serialize + DeserializeOwned`, or shared
//!   references to such (`&T`, `&str`, `&[T]`, `&Path`), which the child
//!   rebuilds as owned values.
//! - **fork** forks the caller, and arguments need no serde at all (memory is
//!   copied). The library never forks while one of its own threads holds
//!   a lock a child could need (its replay of other calls' output, its
//!   re-raise of their panics, its panic hook, its diagnostics): those wait
//!   for the fork, and the fork for them. But in a multi-threaded parent
//!   the child can still block forever on a lock *your* code held on
//!   another thread at the fork (a `Mutex` of yours, or std's stdout lock
//!   while a thread of yours is inside `println!`): use a timeout there; a
//!   fork-mode call without one in a multi-threaded process warns once
//!   (see [Diagnostics](#diagnostics)). Its cost grows with the
//!   parent's resident memory.
//!   Under libtest's output capture, `print!` in a forked child is lost.
//!   A function that calls `std::process::exit` runs the parent's `atexit`
//!   handlers in the child; the library itself always leaves with `_exit`.
//!
//! Results must be `Serialize + DeserializeOwned` in every mode. A
//! `Vec<u8>` result travels as one MessagePack `bin` object.
//!
//! # Progress
//!
//! An isolated function may take one [`Progress<M>`](Progress) parameter
//! and [`send`](Progress::send) messages that the caller receives while
//! the call runs: in order, and every one before the result, under every
//! start method and backend, and from a pool's warm worker (on its answer
//! pipe).
//! The caller passes [`Progress::new`] with a
//! callback, which runs on the calling thread as each message arrives (so
//! it need not be `Send` for a blocking call),
//! [`Progress::channel`] for an iterator another thread reads, or
//! [`Progress::ignore`].
//!
//! ```
//! use bombsquad::{Progress, bombsquad};
//!
//! #[bombsquad]
//! fn crunch(n: u32, progress: Progress<u32>) -> u64 {
//!     for i in 0..n {
//!         progress.send(i); // then the work
//!     }
//!     42
//! }
//!
//! // Callback form: on the calling thread, as each message arrives.
//! let total = crunch(3, Progress::new(|step: u32| println!("step {step}")));
//! assert_eq!(total.unwrap(), 42);
//!
//! // Iterator form: another thread reads while the call runs.
//! let (progress, messages) = Progress::channel();
//! let (total, steps) = std::thread::scope(|s| {
//!     let reader = s.spawn(|| messages.collect::<Vec<u32>>());
//!     (crunch(3, progress), reader.join().unwrap())
//! });
//! assert_eq!((total.unwrap(), steps), (42, vec![0, 1, 2]));
//! ```
//!
//! Messages cross as MessagePack (`M: Serialize + DeserializeOwned`) on a
//! pipe of their own, made only for functions that take a `Progress`; a
//! child that sends faster than the callback takes them waits on that pipe.
//! A child that crashes has its messages up to the crash delivered, then
//! the call returns its error. A message that does not decode in the caller
//! fails the call with [`Error::Codec`] ([`CodecStage::DecodeProgress`]) and
//! a malformed one with [`Error::Protocol`]; the child is killed. A
//! callback that panics ends the call: the child's process group is killed
//! and the child reaped, then the panic continues in the caller. A nested
//! isolated function may pass its `Progress` on to the one it calls. The
//! closure forms ([`fork`], [`Isolate::fork`]) carry no progress.
//!
//! # Errors
//!
//! See [`Error`]: `NonzeroExitcode` (a signal or a nonzero exit code),
//! `ZeroExitcodeWithoutPayload` (exit 0 without a result: never `Ok`),
//! `Timeout`, `Panicked` (with `panic = "error"`), `Codec` (naming which of
//! the encode/decode steps failed), `Spawn` (the OS refused a process,
//! pipe, socket or file), `Protocol` (malformed or truncated data from the
//! child), `StatusUnavailable` (the child ended without a result and its exit
//! status was taken by someone else: the host ignores `SIGCHLD` or reaps
//! with `waitpid(-1)`; a complete result is still `Ok`), `InvalidOptions`
//! (nothing was started: options that cannot work together, or a malformed
//! `BOMBSQUAD_MAX_CHILDREN`) and `NestingTooDeep`.
//!
//! # Isolating tests
//!
//! `#[bombsquad]` above `#[test]` runs the test body in a child. A crash
//! fails that test alone, with a panic naming the test and the signal
//! ("test parses_input (pid 42) was killed by SIGSEGV: segmentation fault,
//! ..."); the child's stderr is shown once, replayed with the test's output
//! (or, with `stderr = "capture"`, at the end of the message); a panic
//! fails it as in-process, so
//! `#[should_panic(expected = "...")]` works; `-> Result<(), E>` tests
//! work; `timeout` fails a hanging test; `#[ignore]` and other attributes
//! stay on the test.
//!
//! ```no_run
//! use bombsquad::bombsquad;
//!
//! #[bombsquad(timeout = "10s")]
//! #[test]
//! #[should_panic(expected = "was killed by SIGSEGV")]
//! fn a_segfault_fails_only_this_test() {
//!     unsafe { libc::strlen(std::ptr::null()) };
//! }
//!
//! #[bombsquad]
//! #[test]
//! fn returns_a_result() -> Result<(), std::num::ParseIntError> {
//!     assert_eq!("42".parse::<i32>()?, 42);
//!     Ok(())
//! }
//! # fn main() {}
//! ```
//!
//! Nothing reads libtest's arguments: filters, `--exact`, `--ignored`,
//! `--include-ignored`, `--nocapture` and `cargo nextest run` behave as for
//! any test. A spawned child's output is replayed through `print!` and
//! `eprint!`, so libtest shows it only for failing tests; in fork mode a
//! child's `println!` is lost under libtest's capture (raw writes to fd 1
//! and 2 are kept). Write `#[bombsquad]` above `#[test]`: below it, the
//! test is recognized only by its `#[should_panic]` or `#[ignore]`, and
//! otherwise fails through the `Result<(), Error>` the isolated function
//! returns. The README has the details and the rusty-fork migration.
//!
//! Isolated functions work inside doctests too; this one re-executes the
//! doctest's own binary:
//!
//! ```
//! use bombsquad::{Error, bombsquad};
//!
//! #[bombsquad(backend = "pipe")]
//! fn length_in_c(text: Option<String>) -> usize {
//!     let text = text.map(|t| std::ffi::CString::new(t).unwrap());
//!     let pointer = text.as_ref().map_or(std::ptr::null(), |t| t.as_ptr());
//!     unsafe { libc::strlen(pointer) }
//! }
//!
//! assert_eq!(length_in_c(Some("four".into())).unwrap(), 4);
//! match length_in_c(None) {
//!     Err(Error::NonzeroExitcode(e)) => assert_eq!(e.signal_name(), Some("SIGSEGV")),
//!     other => panic!("{other:?}"),
//! }
//! ```
//!
//! # Set-up in children that never run `main`
//!
//! A spawned child, a fork server's child and a pool's worker start this
//! binary again and run the function before `main` would start, so nothing
//! `main` does happens in them: a `OnceLock` or static set in `main` is
//! empty there, a logger installed in `main` is not installed, and
//! `std::env::args()` holds only the executable's path (the environment
//! and the working directory are the caller's). A forked child is a copy of
//! the caller and has all of it.
//!
//! Write that set-up in a function marked `#[bombsquad::child_init]`: it
//! runs in each such child before the function (once per worker, as the
//! worker starts), after the child's own set-up, so under its limits and
//! within the call's timeout. It takes no arguments and returns `()`; a
//! panic in it is the call's panic. Several run in no particular order.
//!
//! ```
//! use std::sync::OnceLock;
//!
//! static GREETING: OnceLock<String> = OnceLock::new();
//!
//! #[bombsquad::child_init]
//! fn set_up() {
//!     GREETING.set("hello from the child".to_owned()).unwrap();
//! }
//!
//! #[bombsquad::bombsquad]
//! fn greet() -> Option<String> {
//!     GREETING.get().cloned()
//! }
//!
//! assert_eq!(greet().unwrap().as_deref(), Some("hello from the child"));
//! assert_eq!(GREETING.get(), None); // the caller never runs it
//! ```
//!
//! # Renamed dependency
//!
//! Generated code names the crate `::bombsquad`. Under another name
//! (`my_bombsquad = { package = "bombsquad", .. }` in Cargo.toml), say
//! which: `#[my_bombsquad::bombsquad(crate = "my_bombsquad")]`, and
//! `#[my_bombsquad::child_init(crate = "my_bombsquad")]`.
//!
//! # What the child gets
//!
//! Its own process group (a timeout kills grandchildren too, and so does the
//! end of a call; Ctrl-C at a terminal reaches the parent only), stdin from
//! `/dev/null`, no descriptors of the parent but stdio (in both modes, even
//! those opened without `O_CLOEXEC`), `RLIMIT_CORE` 0, SIGKILL when its
//! parent dies, and the signal state of a fresh process: an empty signal
//! mask and no handlers of the parent (ignored signals stay ignored, as
//! across `exec`). Isolated calls may nest 8 deep.
//!
//! The library signals and reaps each child through its pidfd, never by
//! pid number, so a kill can never reach a process that reused the pid.
//!
//! # Async callers
//!
//! With the feature `tokio`, an isolated function may be an `async fn`: its
//! wrapper returns a `Send + 'static` future of `Result<R, Error>`, awaited
//! on tokio's reactor without blocking an executor thread (no thread per
//! call); the body runs in the child on a fresh current-thread tokio
//! runtime, or on none when it has nothing to wait for (no `.await`);
//! dropping the future kills the child's process group and reaps it.
//! Spawn, forkserver and `pool = N` (forking from a runtime's threads is
//! refused at compile time). The README's "Async callers" has an example.
//!
//! # Concurrency
//!
//! At most twice as many one-shot children as there are CPUs run at once
//! per process: a call over the cap waits, silently, until another call's
//! child is reaped; it never fails for it, and its timeout starts only when
//! its child does. [`set_max_children`] changes the cap (waiting calls
//! included); before that, `BOMBSQUAD_MAX_CHILDREN` does, read at the
//! first call, and a value that is not a positive whole number fails every
//! one-shot call with [`Error::InvalidOptions`]. Calls that wait on each
//! other's results could deadlock under a cap smaller than their number:
//! raise it for them.
//!
//! # Diagnostics
//!
//! What the library itself has to say (where in the child a re-raised panic
//! happened and its backtrace, the fork-mode warning, a refusing child, and
//! at `INFO` a lost pool worker) are [`tracing`](https://docs.rs/tracing)
//! events at target `bombsquad`: a subscriber redirects them, and its
//! filter silences them (`bombsquad=off`). While no subscriber is
//! installed, for the process or the thread, the warnings go to stderr
//! through `eprintln!`, so libtest shows them with a failing test as
//! before.

#[cfg(not(target_os = "linux"))]
compile_error!(
    "bombsquad runs on Linux only: it relies on pidfds, close_range, /proc/self/exe and Linux \
     process semantics; build for a Linux target (a container or a VM on other systems)"
);

#[cfg(target_os = "linux")]
mod testing;

pub use isolate_macros::{bombsquad, child_init};
/// Supervises arbitrary commands as jobs (feature `jobs`).
#[cfg(all(feature = "jobs", target_os = "linux"))]
pub use isolate_runtime::jobs;
#[cfg(target_os = "linux")]
pub use isolate_runtime::{
    Backend, CallReport, ChildFn, CodecStage, Error, Isolate, Location, NonzeroExitcode, PanicMode,
    Progress, ProgressMessages, RemoteWorker, Sandbox, SandboxSupport, StartMethod, Stderr, Task,
    Worker, WorkerOptions, fork, set_max_children, shutdown_pools, start_forkserver,
};

/// The README: every Rust snippet in it runs as a doctest of this item, so
/// none can go stale.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Not public API: used by code that `#[bombsquad]` generates.
#[cfg(target_os = "linux")]
#[doc(hidden)]
pub mod __private {
    pub use isolate_runtime::__private::*;

    pub use crate::testing::{TestFailure, TestOutcome, TestReturn, finish_test};
}
