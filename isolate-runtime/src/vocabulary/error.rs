//! The error every isolated call can return.

use std::fmt;
use std::io;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::vocabulary::report::{CallReport, NonzeroExitcode, human_bytes, human_duration};

/// Why an isolated call did not return a value.
///
/// `NonzeroExitcode` is a tuple variant; every other variant is a struct
/// variant, so `Error::Timeout { .. }` matches whatever fields are added later.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The child was killed by a signal or exited with a nonzero code.
    #[error(transparent)]
    NonzeroExitcode(NonzeroExitcode),

    /// The child exited with code 0 but never sent a result: the function
    /// called `std::process::exit(0)` or `libc::_exit(0)`, closed the
    /// channel, or exited with a code whose low 8 bits are 0 (`exit(256)`).
    #[error(
        "{} (pid {pid}) exited with code 0 without sending a result; \
         does it call std::process::exit?",
        subject(function.as_deref())
    )]
    ZeroExitcodeWithoutPayload {
        /// The child's process id.
        pid: u32,
        /// The isolated function's name (`None` for a closure run without
        /// [`Isolate::name`](crate::Isolate::name)).
        function: Option<String>,
    },

    /// The call ran longer than its `timeout`; the child's process group was
    /// killed with SIGKILL and reaped.
    #[error(
        "{} did not finish within {after:?}; its process group was killed{}",
        report.subject(),
        costs(report)
    )]
    Timeout {
        /// The configured timeout.
        after: Duration,
        /// The child's process id.
        pid: u32,
        /// What was observed of the child: CPU time, peak memory, stderr.
        report: Box<CallReport>,
    },

    /// The function panicked and the call was made with `panic = "error"`.
    #[error(
        "{} panicked{}: {message}",
        subject(function.as_deref()),
        at(location.as_ref())
    )]
    Panicked {
        /// The panic message (truncated to 64 KiB).
        message: String,
        /// Where the panic happened in the child, when known.
        location: Option<Location>,
        /// The child's backtrace, when `RUST_BACKTRACE` asked for one.
        backtrace: Option<String>,
        /// The isolated function's name (`None` for a closure run without
        /// [`Isolate::name`](crate::Isolate::name)).
        function: Option<String>,
    },

    /// Encoding or decoding the arguments, the result or a progress message
    /// failed.
    #[error("could not {stage}: {message}")]
    Codec {
        /// Which encode/decode step failed.
        stage: CodecStage,
        /// What the serializer said (or the panic message of a user impl).
        message: String,
    },

    /// The operating system refused to start the child or to create its
    /// channel (pipe, temp file, socket, process).
    #[error("could not {what}: {source}")]
    Spawn {
        /// What was being created.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// The child sent malformed or truncated data: a bad frame header, a
    /// frame cut short, a frame whose checksum does not match its bytes
    /// (never decoded as a value), a frame for another call, or, for a
    /// pool's worker, bytes in its channel before the request was sent (a
    /// second answer to an earlier call; the request was not sent). A
    /// worker that sent it is killed and replaced.
    #[error("{} (pid {pid}) sent a malformed reply: {message}", subject(function.as_deref()))]
    Protocol {
        /// The child's process id.
        pid: u32,
        /// What was wrong with the data.
        message: String,
        /// The isolated function's name (`None` for a closure run without
        /// [`Isolate::name`](crate::Isolate::name)).
        function: Option<String>,
    },

    /// The child ended without sending a complete result, and its exit
    /// status was taken by someone else, so how it ended is unknown: the
    /// host set `SIGCHLD` to `SIG_IGN` (the kernel reaps children at once)
    /// or another part of the process reaps with `waitpid(-1)`. The call
    /// never hangs on it (the pidfd still reports the exit). A child that
    /// did send its complete result returns `Ok` regardless.
    #[error(
        "{} ended without a result and its exit status was taken by someone else \
         (SIGCHLD ignored, or another waitpid(-1) in this process); how it ended is unknown{}",
        report.subject(),
        costs(report)
    )]
    StatusUnavailable {
        /// The child's process id.
        pid: u32,
        /// What was observed of the child (no resource usage: that came
        /// with the exit status).
        report: Box<CallReport>,
    },

    /// The child's reply was larger than the call accepts
    /// ([`Isolate::max_result`](crate::Isolate::max_result)): the parent
    /// stopped reading at the announced size, killed the child's process
    /// group and never allocated the reply. Raise the limit if results this
    /// large are expected.
    #[error(
        "the isolated call's reply is {} ({size} bytes), more than its max_result of {} \
         ({limit} bytes); raise Isolate::max_result if results this large are expected",
        human_bytes(*size),
        human_bytes(*limit)
    )]
    ResultTooLarge {
        /// The reply's size in bytes, as the child announced or wrote it.
        size: u64,
        /// The limit it went over.
        limit: u64,
    },

    /// The call's options cannot work together, or a setting it depends on
    /// is malformed; nothing was started. The message names the option and
    /// what to change: a start method an [`Isolate::scope`] asks for that
    /// the function cannot use (a `start_method = "fork"` function is not
    /// registered for spawn or forkserver; a pool's workers are always
    /// spawned), an option a pool's workers take only when they start, a
    /// start method other than fork on [`Isolate::fork`], or a malformed
    /// `BOMBSQUAD_MAX_CHILDREN`.
    ///
    /// [`Isolate::scope`]: crate::Isolate::scope
    /// [`Isolate::fork`]: crate::Isolate::fork
    #[error("{message}")]
    InvalidOptions {
        /// What is wrong and what to change.
        message: String,
    },

    /// Isolated calls were nested deeper than the limit (a fork-bomb guard).
    #[error(
        "isolated calls are nested more than {limit} deep; is the function recursing through #[bombsquad]?"
    )]
    NestingTooDeep {
        /// The maximum depth.
        limit: u32,
    },

    /// The call asked for a [`Sandbox`](crate::Sandbox) that could not be
    /// applied: this kernel lacks what the policy needs (see
    /// [`Sandbox::support`](crate::Sandbox::support)), a path it names does
    /// not exist, or the child could not apply it. The function did not run.
    #[error(
        "the sandbox cannot be applied: {reason}; the function did not run \
         (Sandbox::best_effort() runs it with what this kernel supports)"
    )]
    Sandbox {
        /// What is missing or failed, in words.
        reason: String,
    },

    /// A pool's workers failed to start several times in a row (their init
    /// crashed, the program is broken); the pool refuses calls for 10 s
    /// instead of restarting them in a storm, then tries again.
    #[error(
        "the worker failed to start {attempts} times in a row; the pool refuses calls \
         for 10 s. The last attempt: {reason}"
    )]
    WorkerStartup {
        /// Start attempts that failed in a row.
        attempts: u32,
        /// How the last attempt's process ended, Python-style: its exit
        /// code, or minus the signal that killed it; `None` if it did not
        /// end by itself (a timeout of the handshake).
        exitcode: Option<i32>,
        /// The last failure, in words.
        reason: String,
        /// The end of the last attempt's stderr.
        stderr_tail: Vec<u8>,
    },

    /// The pool was shut down: before this call, or while it ran (its
    /// worker was asked to leave, then killed after the grace period).
    #[error("the worker pool was shut down")]
    PoolClosed,

    /// The pool was used in a process forked from the one that made it; its
    /// workers belong to that process (docs/FAULTS.md F9). Make a pool in the
    /// child instead.
    #[error(
        "this worker pool belongs to process {owner} and was used in a process forked from it; \
         make a new pool in the forked process"
    )]
    PoolInForkedChild {
        /// The process that made the pool.
        owner: u32,
    },
}

/// " (CPU time 1.2 s, peak RSS 2.1 MiB)": whether it spun or waited.
fn costs(report: &CallReport) -> String {
    match (report.user_time(), report.system_time(), report.peak_rss()) {
        (Some(user), Some(system), Some(rss)) => format!(
            " (CPU time {}, peak RSS {})",
            human_duration(user + system),
            human_bytes(rss)
        ),
        _ => String::new(),
    }
}

/// The function's name, or "the isolated call" when it has none.
fn subject(function: Option<&str>) -> &str {
    function.unwrap_or("the isolated call")
}

fn at(location: Option<&Location>) -> String {
    location.map(|l| format!(" at {l}")).unwrap_or_default()
}

/// The places where arguments, results and progress messages are encoded
/// or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CodecStage {
    /// Encoding the arguments in the parent (nothing was started).
    EncodeArguments,
    /// Decoding the arguments in the child (the function never ran).
    DecodeArguments,
    /// Encoding the result in the child (the function did run).
    EncodeResult,
    /// Decoding the result in the parent (the function did run).
    DecodeResult,
    /// Decoding a [`Progress`](crate::Progress) message in the parent (the
    /// function was running; its child was killed).
    DecodeProgress,
}

impl fmt::Display for CodecStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::EncodeArguments => "encode the arguments in the parent",
            Self::DecodeArguments => "decode the arguments in the child",
            Self::EncodeResult => "encode the result in the child",
            Self::DecodeResult => "decode the result in the parent",
            Self::DecodeProgress => "decode a progress message in the parent",
        })
    }
}

/// A source location in the child, as `std::panic::Location` gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// The source file.
    pub file: String,
    /// The line, from 1.
    pub line: u32,
    /// The column, from 1.
    pub column: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

impl Error {
    pub(crate) fn spawn(what: impl Into<String>, source: impl Into<io::Error>) -> Self {
        Self::Spawn {
            what: what.into(),
            source: source.into(),
        }
    }

    /// Names the function in the errors made before its name was at hand
    /// (from the reply's frames alone).
    pub(crate) fn of_function(mut self, name: Option<&str>) -> Self {
        if let Self::ZeroExitcodeWithoutPayload { function, .. }
        | Self::Panicked { function, .. }
        | Self::Protocol { function, .. } = &mut self
            && function.is_none()
        {
            *function = name.map(str::to_owned);
        }
        self
    }

    /// A malformed reply from `pid`; the function is named later
    /// ([`Error::of_function`]).
    pub(crate) fn protocol(pid: u32, message: impl Into<String>) -> Self {
        Self::Protocol {
            pid,
            message: message.into(),
            function: None,
        }
    }

    pub(crate) fn codec(stage: CodecStage, message: impl Into<String>) -> Self {
        Self::Codec {
            stage,
            message: message.into(),
        }
    }
}
