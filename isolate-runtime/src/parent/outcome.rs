//! How a child ended, and what that means for the call.

use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::child::ChildFailure;
use crate::options::isolate::{Isolate, PanicMode};
use crate::options::sandbox::Sandbox;
use crate::parent::backend::{Reply, ReplyChannel, Verdict};
use crate::parent::classify::{self, OomWatch};
use crate::parent::stdio::Stderr;
use crate::parent::supervise::Exit;
use crate::vocabulary::error::{CodecStage, Error};
use crate::vocabulary::panic_report::{PanicReport, message_of};
use crate::vocabulary::report::{CallReport, NonzeroExitcode};
use crate::vocabulary::termination::Termination;
use crate::wire::codec::{self, Codec, PartsError};
use crate::wire::{Frame, FrameError, FrameKind};

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
    read_reply: impl FnOnce() -> Result<Reply, FrameError>,
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
            crate::child::panic::resume(report, pid, options.name.as_deref())
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
    read_reply: impl FnOnce() -> Result<Reply, FrameError>,
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
    if let Some(refusal) = exit.bad_reply {
        return Err(refusal.into_error(pid));
    }
    if let Some(error) = exit.bad_progress {
        return Err(error);
    }
    // Read only now: a timed-out or lying child's output is never read.
    let reply = read_reply();
    let (Some(termination), Some(usage)) = (exit.termination, exit.usage) else {
        // Someone else took the exit status (docs/FAULTS.md F6, F7): a complete
        // result is still the function's result; anything else cannot be
        // classified.
        let reply = reply.map_err(|refusal| refusal.into_error(pid))?;
        return match final_result(&reply) {
            Some(payload) => decode_result(pid, reply, payload, codec),
            None => Err(status_unavailable(report())),
        };
    };
    if termination != Termination::Exited(0) {
        // A crash is read from the reply's first frames and its last
        // bytes, whatever is wrong with the rest (or with all of it).
        let reply = reply.ok();
        let panic = reply.as_ref().and_then(first_panic);
        let trailing = reply
            .as_ref()
            .map(|reply| reply.trailing(crate::vocabulary::diagnosis::RECORD_FRAME_LEN));
        let diagnosis = classify::diagnose(
            termination,
            trailing.as_deref().unwrap_or_default(),
            &exit.stderr.bytes,
            usage,
            options,
            oom,
        );
        return Err(Error::NonzeroExitcode(
            NonzeroExitcode::new(termination, panic, report()).with_diagnosis(diagnosis),
        ));
    }
    judge_frames(
        pid,
        reply.map_err(|refusal| refusal.into_error(pid))?,
        codec,
    )
}

/// The payload of the `Return` frame that ends `reply`, if one does and
/// every frame is whole and checked.
fn final_result(reply: &Reply) -> Option<Range<usize>> {
    let layout = reply.layout().ok()?;
    if let Some(payload) = layout.unread_result {
        return Some(payload);
    }
    match layout.frames.last() {
        Some(frame) if frame.kind == FrameKind::Return => Some(range_in(reply, frame.payload)),
        _ => None,
    }
}

/// The call's result from the frames a child that did not crash sent: the
/// last one decides (it supersedes earlier ones: a panic report from a
/// panic the function caught itself, a panic inside `Serialize` followed
/// by the encode failure). Fault records, progress messages and padding
/// never do. Every frame is checked first: a checksum that does not match,
/// or a frame for another call, is [`Error::Protocol`], never a value.
pub(crate) fn judge_frames<R>(pid: u32, bytes: Reply, codec: Codec<R>) -> Result<R, Error> {
    let protocol = |message: String| Error::protocol(pid, message);
    let layout = bytes.layout().map_err(|refusal| refusal.into_error(pid))?;
    if let Some(payload) = layout.unread_result.clone() {
        // A `Return` frame left in the reply file ends it: it is the last.
        drop(layout);
        return decode_result(pid, bytes, payload, codec);
    }
    let last = layout.frames.iter().rev().find(|frame| {
        !matches!(
            frame.kind,
            FrameKind::Fault | FrameKind::Progress | FrameKind::Padding
        )
    });
    let Some(&Frame { kind, payload, .. }) = last else {
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
            drop(layout);
            decode_result(pid, bytes, payload, codec)
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
fn first_panic(reply: &Reply) -> Option<PanicReport> {
    let frames = reply.leading_frames();
    let panic = frames.iter().find(|frame| frame.kind == FrameKind::Panic)?;
    codec::from_msgpack(panic.payload).ok()
}

/// Decodes the result; a panicking user `Deserialize` becomes a codec error
/// instead of unwinding through the caller (docs/FAULTS.md E4). A result left
/// in the reply file is checked as decoding reads it: a mismatch is
/// [`Error::Protocol`], whatever decoding made of the bytes.
fn decode_result<R>(
    pid: u32,
    mut reply: Reply,
    payload: Range<usize>,
    codec: Codec<R>,
) -> Result<R, Error> {
    let check = reply.result_check();
    let decoded = decode_guarded(|| (codec.decode)(&mut reply, payload));
    match check.map(|check| check.verdict()) {
        None | Some(Verdict::Matched) => decoded,
        Some(Verdict::Mismatch(message)) => Err(Error::protocol(pid, message)),
        Some(Verdict::Unreadable(message)) => {
            decoded.and(Err(Error::codec(CodecStage::DecodeResult, message)))
        }
    }
}

/// Decodes a result sent in two parts (see [`Codec::decode_parts`]), as
/// [`decode_result`] does: a tail that does not match `checksum` is
/// [`Error::Protocol`].
pub(crate) fn decode_parts<R>(
    pid: u32,
    head: &[u8],
    tail: &[u8],
    checksum: u32,
    codec: Codec<R>,
) -> Result<R, Error> {
    match decode_guarded(|| match (codec.decode_parts)(head, tail, checksum) {
        Ok(value) => Ok(Ok(value)),
        Err(PartsError::Corrupt(message)) => Ok(Err(message)),
        Err(PartsError::Invalid(message)) => Err(message),
    })? {
        Ok(value) => Ok(value),
        Err(message) => Err(Error::protocol(pid, message)),
    }
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
    use crate::wire::codec::{BytesCodec, CodecTag};

    fn frame(kind: FrameKind, payload: &[u8]) -> Vec<u8> {
        crate::wire::frame(kind, 3, payload)
    }

    #[test]
    fn padding_never_decides_the_call() {
        let codec = (&&CodecTag::<Vec<u8>>::new()).__bombsquad_codec();
        let mut reply = frame(FrameKind::Padding, &[0; 3]);
        reply.extend_from_slice(&frame(FrameKind::Return, &[0xc4, 1, 9]));
        assert_eq!(
            judge_frames(4, Reply::read(reply, 3), codec).unwrap(),
            vec![9]
        );
        let padding_only = frame(FrameKind::Padding, &[0; 3]);
        match judge_frames(4, Reply::read(padding_only, 3), codec) {
            Err(Error::ZeroExitcodeWithoutPayload { pid, .. }) => assert_eq!(pid, 4),
            other => panic!("expected ZeroExitcodeWithoutPayload, got {other:?}"),
        }
    }

    #[test]
    fn a_frame_that_is_not_this_calls_or_not_whole_is_never_a_value() {
        let codec = Codec::<u8>::serde();
        let mut flipped = frame(FrameKind::Return, &[0x2a]);
        flipped[crate::wire::HEADER_LEN] ^= 1;
        match judge_frames(4, Reply::read(flipped, 3), codec) {
            Err(Error::Protocol { pid, message, .. }) => {
                assert_eq!(pid, 4);
                assert!(
                    message.starts_with("checksum mismatch in a Return frame of 1 bytes"),
                    "{message}"
                );
            }
            other => panic!("expected Protocol, got {other:?}"),
        }
        let stray = crate::wire::frame(FrameKind::Return, 2, &[0x2a]);
        match judge_frames(4, Reply::read(stray, 3), codec) {
            Err(Error::Protocol { message, .. }) => {
                assert_eq!(message, "a Return frame for call 2, in the reply to call 3");
            }
            other => panic!("expected Protocol, got {other:?}"),
        }
        assert_eq!(
            judge_frames(4, Reply::read(frame(FrameKind::Return, &[0x2a]), 3), codec).unwrap(),
            42
        );
    }
}
