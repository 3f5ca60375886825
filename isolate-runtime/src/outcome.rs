//! How a child ended, and what that means for the call.

use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::backend::{Reply, ReplyChannel};
use crate::child::ChildFailure;
use crate::classify::{self, OomWatch};
use crate::codec::{self, Codec, FrameKind};
use crate::error::{CodecStage, Error};
use crate::isolate::{Isolate, PanicMode};
use crate::panic::{PanicReport, message_of};
use crate::report::{CallReport, NonzeroExitcode};
use crate::sandbox::Sandbox;
use crate::stdio::Stderr;
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

/// Turns how the child ended, and what it sent, into the call's result,
/// runs the outcome callbacks, and re-raises a child's panic last.
#[track_caller]
pub(crate) fn conclude<R>(
    exit: Exit,
    reply: ReplyChannel,
    codec: Codec<R>,
    options: &Isolate,
    oom: &OomWatch,
) -> Result<R, Error> {
    conclude_with(exit, || reply.finish(), codec, options, oom)
}

/// [`conclude`], with the reply read by `read_reply` (only once the call
/// is known to have neither timed out nor sent a malformed reply).
#[track_caller]
pub(crate) fn conclude_with<R>(
    exit: Exit,
    read_reply: impl FnOnce() -> Result<Reply, String>,
    codec: Codec<R>,
    options: &Isolate,
    oom: &OomWatch,
) -> Result<R, Error> {
    // An unknown status (taken by someone else) counts as 0: a child that
    // sent its result always leaves with 0.
    let (pid, exitcode) = (exit.pid, exit.termination.map_or(0, exitcode));
    let result = judge(exit, read_reply, codec, options, oom);
    deliver(result, options, pid, exitcode)
}

/// Runs the outcome callbacks on `result`, then re-raises a child's panic
/// (in [`PanicMode::Resume`]) or returns it.
#[track_caller]
pub(crate) fn deliver<R>(
    result: Result<R, Error>,
    options: &Isolate,
    pid: u32,
    exitcode: i32,
) -> Result<R, Error> {
    let result = result.map_err(|e| e.of_function(options.name.as_deref()));
    if let Some(payload) = options.callbacks.run(&result, exitcode) {
        std::panic::resume_unwind(payload);
    }
    match result {
        Err(Error::Panicked {
            message,
            location,
            backtrace,
            ..
        }) if options.panic_mode == PanicMode::Resume && !cfg!(panic = "abort") => {
            // In a `panic = "abort"` build the parent never re-raises (it would abort).
            let report = PanicReport {
                message,
                location,
                backtrace,
            };
            crate::panic::resume(report, pid, options.name.as_deref())
        }
        other => other,
    }
}

/// Python's exit code: the code, or minus the signal.
fn exitcode(termination: Termination) -> i32 {
    match termination {
        Termination::Exited(code) => code,
        Termination::Signaled { signal, .. } => -signal,
    }
}

/// The call's result, a child panic as `Error::Panicked`.
///
/// An abnormal end (a signal, a nonzero code) always wins over any frame:
/// a crash after the reply was written is still a crash. A clean exit is
/// judged by the last frame, which supersedes earlier ones (a panic report
/// from a panic the function caught itself, a panic inside `Serialize`
/// followed by the encode failure). A fault record is never the result.
pub(crate) fn judge<R>(
    exit: Exit,
    read_reply: impl FnOnce() -> Result<Reply, String>,
    codec: Codec<R>,
    options: &Isolate,
    oom: &OomWatch,
) -> Result<R, Error> {
    let pid = exit.pid;
    let report = || CallReport {
        function: options.name.clone(),
        pid,
        wall_time: exit.wall_time,
        usage: exit.usage,
        stderr: Box::new(exit.stderr.clone()),
        sandbox: options.sandbox.as_ref().map(|_| Sandbox::support()),
        stderr_replayed: options.stderr == Stderr::Inherit,
    };
    if exit.timed_out {
        return Err(Error::Timeout {
            after: options.timeout.unwrap_or_default(),
            pid,
            report: Box::new(report()),
        });
    }
    if let Some(message) = exit.bad_reply {
        return Err(Error::Protocol { pid, message });
    }
    if let Some(error) = exit.bad_progress {
        return Err(error);
    }
    let protocol = |message: String| Error::Protocol { pid, message };
    // Read only now: a timed-out or lying child's output is never read.
    let bytes = read_reply().map_err(protocol)?;
    let (Some(termination), Some(usage)) = (exit.termination, exit.usage) else {
        // Someone else took the exit status (docs/FAULTS.md F6, F7): a complete
        // result is still the function's result; anything else cannot be
        // classified.
        return match final_result(&bytes) {
            Some(payload) => decode_result(bytes, payload, codec),
            None => Err(status_unavailable(report())),
        };
    };
    if termination != Termination::Exited(0) {
        // A crash is read from every frame and the reply's last bytes.
        let bytes = bytes.into_whole().map_err(protocol)?;
        let panic = codec::split_frames(&bytes)
            .ok()
            .and_then(|f| first_panic(&f));
        let diagnosis =
            classify::diagnose(termination, &bytes, &exit.stderr.bytes, usage, options, oom);
        return Err(Error::NonzeroExitcode(
            NonzeroExitcode::new(termination, panic, report()).with_diagnosis(diagnosis),
        ));
    }
    judge_frames(pid, bytes, codec)
}

/// The payload of the `Return` frame that ends `reply`, if one does.
fn final_result(reply: &Reply) -> Option<Range<usize>> {
    if let Some(payload) = reply.unread_result() {
        return Some(payload);
    }
    match codec::split_frames(reply).ok()?.last() {
        Some(&(FrameKind::Return, payload)) => Some(range_in(reply, payload)),
        _ => None,
    }
}

/// The call's result from the frames a child that did not crash sent: the
/// last one decides (it supersedes earlier ones: a panic report from a
/// panic the function caught itself, a panic inside `Serialize` followed
/// by the encode failure). Fault records, progress messages and padding
/// never do.
pub(crate) fn judge_frames<R>(pid: u32, bytes: Reply, codec: Codec<R>) -> Result<R, Error> {
    if let Some(payload) = bytes.unread_result() {
        // A `Return` frame left in the reply file ends it: it is the last.
        return decode_result(bytes, payload, codec);
    }
    let protocol = |message: String| Error::Protocol { pid, message };
    let frames = codec::split_frames(&bytes).map_err(protocol)?;
    let last = frames.iter().rev().find(|(kind, _)| {
        !matches!(
            kind,
            FrameKind::Fault | FrameKind::Progress | FrameKind::Padding
        )
    });
    let Some(&(kind, payload)) = last else {
        return Err(Error::ZeroExitcodeWithoutPayload {
            pid,
            function: None,
        });
    };
    match kind {
        FrameKind::Return => {
            // The codec takes the reply whole, so a `Vec<u8>` result can be
            // made from the reply's own buffer.
            let payload = range_in(&bytes, payload);
            drop(frames);
            decode_result(bytes, payload, codec)
        }
        FrameKind::Panic => {
            let report: PanicReport = codec::from_msgpack(payload).map_err(protocol)?;
            Err(Error::Panicked {
                message: report.message,
                location: report.location,
                backtrace: report.backtrace,
                function: None,
            })
        }
        FrameKind::Failure => Err(match codec::from_msgpack(payload).map_err(protocol)? {
            ChildFailure::Codec { stage, message } => Error::codec(stage, message),
            ChildFailure::UnknownFunction { message } => protocol(message),
            ChildFailure::Sandbox { reason } => Error::Sandbox { reason },
        }),
        kind => Err(protocol(format!("unexpected {kind:?} frame"))),
    }
}

/// Where `part`, a slice of `whole`, lies in it.
fn range_in(whole: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr().addr() - whole.as_ptr().addr();
    start..start + part.len()
}

fn status_unavailable(report: CallReport) -> Error {
    Error::StatusUnavailable {
        pid: report.pid,
        report: Box::new(report),
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
/// instead of unwinding through the caller (docs/FAULTS.md E4).
fn decode_result<R>(reply: Reply, payload: Range<usize>, codec: Codec<R>) -> Result<R, Error> {
    decode_guarded(|| (codec.decode)(reply, payload))
}

/// Decodes a result sent in two parts (see [`Codec::decode_parts`]), as
/// [`decode_result`] does.
pub(crate) fn decode_parts<R>(head: &[u8], tail: &[u8], codec: Codec<R>) -> Result<R, Error> {
    decode_guarded(|| (codec.decode_parts)(head, tail))
}

fn decode_guarded<R>(decode: impl FnOnce() -> Result<R, String>) -> Result<R, Error> {
    match catch_unwind(AssertUnwindSafe(decode)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(message)) => Err(Error::codec(CodecStage::DecodeResult, message)),
        Err(payload) => Err(Error::codec(
            CodecStage::DecodeResult,
            message_of(payload.as_ref()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{BytesCodec, CodecTag};

    fn frame(kind: FrameKind, payload: &[u8]) -> Vec<u8> {
        let mut frame = codec::header(kind, payload.len()).to_vec();
        frame.extend_from_slice(payload);
        frame
    }

    #[test]
    fn padding_never_decides_the_call() {
        let codec = (&&CodecTag::<Vec<u8>>::new()).__bombsquad_codec();
        let mut reply = frame(FrameKind::Padding, &[0; 3]);
        reply.extend_from_slice(&frame(FrameKind::Return, &[0xc4, 1, 9]));
        assert_eq!(judge_frames(4, Reply::Read(reply), codec).unwrap(), vec![9]);
        let padding_only = frame(FrameKind::Padding, &[0; 3]);
        match judge_frames(4, Reply::Read(padding_only), codec) {
            Err(Error::ZeroExitcodeWithoutPayload { pid, .. }) => assert_eq!(pid, 4),
            other => panic!("expected ZeroExitcodeWithoutPayload, got {other:?}"),
        }
    }
}
