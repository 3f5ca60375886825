//! How a child ended, and what that means for the call.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use nix::sys::signal::Signal;

use crate::backend::ReplyChannel;
use crate::child::ChildFailure;
use crate::codec::{self, Codec, FrameKind};
use crate::error::{CodecStage, Error, Location};
use crate::isolate::{Isolate, PanicMode};
use crate::panic::{PanicReport, message_of};
use crate::supervise::Exit;

/// How the child process ended, from its wait status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Termination {
    /// `WIFEXITED`: the low 8 bits of the exit code.
    Exited(i32),
    /// `WIFSIGNALED`: the signal, and `WCOREDUMP`.
    Signaled { signal: i32, core_dumped: bool },
}

impl Termination {
    pub(crate) fn from_wait_status(status: i32) -> Self {
        if libc::WIFSIGNALED(status) {
            Self::Signaled {
                signal: libc::WTERMSIG(status),
                core_dumped: libc::WCOREDUMP(status),
            }
        } else {
            Self::Exited(libc::WEXITSTATUS(status))
        }
    }
}

/// A child that was killed by a signal or exited with a nonzero code.
///
/// [`exitcode`](Self::exitcode) follows Python's `multiprocessing`: the exit
/// code, or minus the signal number (-9 for SIGKILL, -11 for SIGSEGV).
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let err = bombsquad::fork(|| -> u8 { std::process::abort() }).unwrap_err();
/// let bombsquad::Error::NonzeroExitcode(e) = err else { panic!("{err}") };
/// assert_eq!(e.signal(), Some(libc::SIGABRT));
/// assert_eq!(e.exitcode(), -6);
/// assert_eq!(e.signal_name(), Some("SIGABRT"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct NonzeroExitcode {
    pid: u32,
    termination: Termination,
    panic: Option<PanicReport>,
}

impl NonzeroExitcode {
    pub(crate) fn new(pid: u32, termination: Termination, panic: Option<PanicReport>) -> Self {
        Self {
            pid,
            termination,
            panic,
        }
    }

    /// The exit code, or minus the signal number when a signal killed the
    /// child (-9, -11, -6), as in Python.
    #[must_use]
    pub fn exitcode(&self) -> i32 {
        match self.termination {
            Termination::Exited(code) => code,
            Termination::Signaled { signal, .. } => -signal,
        }
    }

    /// The exit code, when the child exited (only its low 8 bits survive).
    #[must_use]
    pub fn code(&self) -> Option<i32> {
        match self.termination {
            Termination::Exited(code) => Some(code),
            Termination::Signaled { .. } => None,
        }
    }

    /// The signal that killed the child, if one did.
    #[must_use]
    pub fn signal(&self) -> Option<i32> {
        match self.termination {
            Termination::Exited(_) => None,
            Termination::Signaled { signal, .. } => Some(signal),
        }
    }

    /// The name of the signal that killed the child ("SIGSEGV").
    #[must_use]
    pub fn signal_name(&self) -> Option<&'static str> {
        self.signal()
            .and_then(|s| Signal::try_from(s).ok())
            .map(Signal::as_str)
    }

    /// Whether the kernel wrote a core dump (children run with
    /// `RLIMIT_CORE` 0, so normally `false`).
    #[must_use]
    pub fn core_dumped(&self) -> bool {
        matches!(
            self.termination,
            Termination::Signaled {
                core_dumped: true,
                ..
            }
        )
    }

    /// The child's process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The message of the first panic the child reported before it died: a panic
    /// while unwinding, or any panic in a `panic = "abort"` build.
    #[must_use]
    pub fn panic_message(&self) -> Option<&str> {
        self.panic.as_ref().map(|p| p.message.as_str())
    }

    /// Where that panic happened.
    #[must_use]
    pub fn panic_location(&self) -> Option<&Location> {
        self.panic.as_ref().and_then(|p| p.location.as_ref())
    }
}

/// What a signal usually means when it kills an isolated call.
fn signal_meaning(signal: i32) -> &'static str {
    match signal {
        libc::SIGSEGV => "segmentation fault: an invalid memory access",
        libc::SIGBUS => "bus error: a bad memory access, such as a truncated mapped file",
        libc::SIGILL => "illegal instruction",
        libc::SIGFPE => "arithmetic fault, such as an integer division by zero in C",
        libc::SIGABRT => "aborted: abort(), a failed allocation or a panic that could not unwind",
        libc::SIGKILL => "possibly the OOM killer",
        libc::SIGTERM => "terminated",
        libc::SIGINT => "interrupted",
        libc::SIGXCPU => "CPU time limit exceeded",
        libc::SIGXFSZ => "file size limit exceeded",
        libc::SIGSYS => "bad system call",
        libc::SIGPIPE => "wrote to a pipe with no reader",
        _ => "killed by a signal",
    }
}

impl fmt::Display for NonzeroExitcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the isolated call (pid {}) ", self.pid)?;
        match self.termination {
            Termination::Exited(code) => write!(f, "exited with code {code}")?,
            Termination::Signaled { signal, .. } => {
                let name = self.signal_name().unwrap_or("an unknown signal");
                write!(f, "was killed by {name} ({})", signal_meaning(signal))?;
            }
        }
        if self.core_dumped() {
            f.write_str(", core dumped")?;
        }
        if let Some(panic) = &self.panic {
            write!(f, ", after panicking")?;
            if let Some(location) = &panic.location {
                write!(f, " at {location}")?;
            }
            write!(f, ": {}", panic.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for NonzeroExitcode {}

/// Turns how the child ended, and what it sent, into the call's result.
///
/// An abnormal end (a signal, a nonzero code) always wins over any frame:
/// a crash after the reply was written is still a crash. A clean exit is
/// judged by the last frame, which supersedes earlier ones (a panic report
/// from a panic the function caught itself, a panic inside `Serialize`
/// followed by the encode failure).
#[track_caller]
pub(crate) fn conclude<R>(
    exit: Exit,
    reply: ReplyChannel,
    codec: Codec<R>,
    options: &Isolate,
) -> Result<R, Error> {
    let pid = exit.pid;
    if exit.timed_out {
        return Err(Error::Timeout {
            after: options.timeout.unwrap_or_default(),
            pid,
        });
    }
    if let Some(message) = exit.bad_reply {
        return Err(Error::Protocol { pid, message });
    }
    let protocol = |message: String| Error::Protocol { pid, message };
    // Read only now: a timed-out or lying child's output is never read.
    let bytes = reply.finish().map_err(protocol)?;
    let frames = codec::split_frames(&bytes);
    if exit.termination != Termination::Exited(0) {
        let panic = frames.ok().and_then(|f| first_panic(&f));
        return Err(Error::NonzeroExitcode(NonzeroExitcode::new(
            pid,
            exit.termination,
            panic,
        )));
    }
    let frames = frames.map_err(protocol)?;
    let Some(&(kind, payload)) = frames.last() else {
        return Err(Error::ZeroExitcodeWithoutPayload { pid });
    };
    match kind {
        FrameKind::Return => decode_result(payload, codec),
        FrameKind::Panic => {
            let report: PanicReport = codec::from_msgpack(payload).map_err(protocol)?;
            Err(panicked(report, pid, options.panic_mode))
        }
        FrameKind::Failure => Err(match codec::from_msgpack(payload).map_err(protocol)? {
            ChildFailure::Codec { stage, message } => Error::codec(stage, message),
            ChildFailure::UnknownFunction { message } => protocol(message),
        }),
        FrameKind::Call | FrameKind::Args => Err(protocol(format!("unexpected {kind:?} frame"))),
    }
}

/// The panic that started a fatal cascade: a panic while unwinding reports
/// the first panic, the one in the destructor, then std's "panic in a
/// destructor during cleanup" before it aborts.
fn first_panic(frames: &[(FrameKind, &[u8])]) -> Option<PanicReport> {
    let (_, payload) = frames.iter().find(|(kind, _)| *kind == FrameKind::Panic)?;
    codec::from_msgpack(payload).ok()
}

/// Decodes the result; a panicking user `Deserialize` becomes a codec error
/// instead of unwinding through the caller (FAULTS.md E4).
fn decode_result<R>(payload: &[u8], codec: Codec<R>) -> Result<R, Error> {
    match catch_unwind(AssertUnwindSafe(|| (codec.decode)(payload))) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(message)) => Err(Error::codec(CodecStage::DecodeResult, message)),
        Err(payload) => Err(Error::codec(
            CodecStage::DecodeResult,
            message_of(payload.as_ref()),
        )),
    }
}

/// A panic in the child: re-raised in the caller, or returned as an error.
/// In a `panic = "abort"` build the parent never re-raises (it would abort).
#[track_caller]
fn panicked(report: PanicReport, pid: u32, mode: PanicMode) -> Error {
    if mode == PanicMode::Resume && !cfg!(panic = "abort") {
        crate::panic::resume(report, pid);
    }
    Error::Panicked {
        message: report.message,
        location: report.location,
        backtrace: report.backtrace,
    }
}
