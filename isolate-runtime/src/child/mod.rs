//! The child's side of a call: run the function under `catch_unwind`, send
//! one reply frame, leave with `_exit`. Shared by fork and spawn mode.

pub(crate) mod entry;
#[allow(unsafe_code)]
pub(crate) mod fault;
pub(crate) mod forkserver;
pub(crate) mod limits;
pub(crate) mod panic;
pub(crate) mod progress;
pub(crate) mod registry;
#[cfg(feature = "tokio")]
pub(crate) mod runtime;
pub(crate) mod worker;

use std::cell::Cell;
use std::io::Write as _;
use std::os::fd::{AsRawFd as _, BorrowedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::sys;
use crate::vocabulary::error::{CodecStage, Error};
use crate::vocabulary::panic_report::{PanicReport, message_of};
use crate::wire::codec::{self, Codec};
use crate::wire::{self, CallId, FrameKind, HEADER_LEN, NO_CALL};

/// The descriptor replies go to; -1 in a process that is not a child.
static REPLY_FD: sys::FdSlot = sys::FdSlot::empty();
/// The call this process is answering: every frame it sends carries it
/// (`wire`). A worker sets it for each request.
static CALL_ID: AtomicU32 = AtomicU32::new(NO_CALL);
/// How deeply this process is nested inside isolated calls.
static DEPTH: AtomicU32 = AtomicU32::new(0);
/// Whether to flush std's stdout before leaving (spawned children only: a
/// forked child could find the lock held by a thread that no longer exists).
static FLUSH_STDOUT: AtomicBool = AtomicBool::new(false);
/// Whether the panic hook has sent a report (it may have been replaced by
/// the user, in which case `serve` reports from the caught payload).
static PANIC_SENT: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Set on the thread that runs the isolated function, so panics of other
    /// threads it starts are left to the previous hook, as in-process.
    static ON_FUNCTION_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Why a child could not produce a result, sent in a `Failure` frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ChildFailure {
    Codec {
        stage: CodecStage,
        message: String,
    },
    UnknownFunction {
        message: String,
    },
    /// The sandbox the call asked for could not be applied.
    Sandbox {
        reason: String,
    },
}

/// How deep isolated calls may nest: a fork-bomb guard (docs/FAULTS.md G5).
pub(crate) const MAX_DEPTH: u32 = 8;

/// The depth a new call from this process runs at.
///
/// # Errors
///
/// `NestingTooDeep` beyond [`MAX_DEPTH`].
pub(crate) fn next_depth() -> Result<u32, Error> {
    let depth = DEPTH.load(Ordering::Relaxed) + 1;
    if depth > MAX_DEPTH {
        return Err(Error::NestingTooDeep { limit: MAX_DEPTH });
    }
    Ok(depth)
}

/// Makes this process a child that replies on `reply_fd` to the call
/// `call_id` ([`NO_CALL`] for a worker, until its first request), at
/// `depth`. It has no progress descriptor until one is set
/// (`progress::set_fd`): one inherited from a parent that is itself a
/// child is not its own.
#[inline]
pub(crate) fn become_child(reply_fd: i32, call_id: CallId, depth: u32, flush_stdout: bool) {
    REPLY_FD.set(reply_fd);
    set_call_id(call_id);
    crate::child::progress::set_fd(-1);
    DEPTH.store(depth, Ordering::Relaxed);
    FLUSH_STDOUT.store(flush_stdout, Ordering::Relaxed);
    ON_FUNCTION_THREAD.set(true);
    crate::child::panic::install_hook();
}

/// Makes the frames this process sends from now on answer the call
/// `call_id` (a worker's next request).
#[inline]
pub(crate) fn set_call_id(call_id: CallId) {
    CALL_ID.store(call_id, Ordering::Relaxed);
}

/// The call this process is answering. Async-signal-safe (an atomic load).
#[inline]
pub(crate) fn call_id() -> CallId {
    CALL_ID.load(Ordering::Relaxed)
}

/// Marks the calling thread as the one running the isolated function (a
/// thread with its own stack size, `fault::run_function`).
pub(crate) fn mark_function_thread() {
    ON_FUNCTION_THREAD.set(true);
}

/// Sends the report of a panic on the function thread; `false` when this
/// panic is not ours to report (the caller then runs the previous hook).
pub(crate) fn report_panic(report: impl FnOnce() -> PanicReport) -> bool {
    if !ON_FUNCTION_THREAD.with(Cell::get) || REPLY_FD.raw() < 0 {
        return false;
    }
    if let Ok(payload) = codec::to_msgpack(&report()) {
        let _ = send_frame(FrameKind::Panic, &payload);
    }
    PANIC_SENT.store(true, Ordering::Relaxed);
    true
}

fn send_frame(kind: FrameKind, payload: &[u8]) -> std::io::Result<()> {
    send_frame_parts(kind, payload, &[])
}

/// Sends a frame whose payload is `head` then `tail`, never joining them:
/// the checksum runs over both where they lie (the child has the whole
/// result before it writes), then one `writev` of the headers (one wake-up
/// of the parent), with no buffer to allocate, then `tail` from where it
/// lies (after a `Padding` frame when it goes to a file: [`padding_before`]).
///
/// The tail gets a `write` of its own: a pipe then starts it on a fresh
/// page, behind its address modulo 4096, where the kernel's copy runs at
/// full speed. In one `writev` with the headers it would lie 5 bytes
/// ahead, the slow case (64 MiB through the pipe backend: 0.84x the raw
/// pipe against 1.13x).
#[inline]
fn send_frame_parts(kind: FrameKind, head: &[u8], tail: &[u8]) -> std::io::Result<()> {
    let Some(fd) = REPLY_FD.get() else {
        return Err(std::io::Error::from(std::io::ErrorKind::NotConnected));
    };
    let _shared = crate::child::progress::lock_if_shared(fd.as_raw_fd());
    let header = wire::header(kind, call_id(), &[head, tail]);
    let padding = padding_before(fd, header.len() + head.len(), tail);
    sys::write_all_vectored(fd, &mut [&padding, header.as_slice(), head])?;
    sys::write_all(fd, tail)
}

/// Tails at least this long get a [`padding_before`] them: glibc maps
/// every allocation this large afresh (its mmap threshold never rises
/// above 32 MiB), so the child's value and the parent's buffer for it
/// both lie 16 bytes past a page. Shorter ones may come from either heap
/// at any offset: padded to the child's address, the parent's buffer often
/// lay just ahead of the bytes, and 2 to 31 MiB results measured 10-20%
/// slower (33 MiB and more: 10-13% faster).
const ALIGNED_TAIL: usize = 32 << 20;

/// The page size the kernel's copies are sensitive to; larger pages are
/// multiples of it.
const PAGE: usize = 4096;

/// A `Padding` frame that puts `tail`, written after `before` more bytes,
/// at an offset in the reply file (or memfd) congruent to its address
/// modulo the page size; empty for a short tail or a pipe or socket.
///
/// Why: `write` copies into the page cache with `rep movsb`, which runs at
/// half speed on the project's AMD EPYC VM when the destination is 1 to 31
/// bytes ahead of the source modulo 4096, and a large `Vec<u8>` (at 16
/// past a page) written after its 21 bytes of headers is 5 ahead (1 GiB:
/// ~0.55 s against ~0.27 s). Congruent, the copy is at full speed, and so
/// is the parent's `pread` of the bytes into its own fresh buffer, which
/// the allocator places as it placed the child's (see [`ALIGNED_TAIL`]).
fn padding_before(fd: BorrowedFd<'_>, before: usize, tail: &[u8]) -> Vec<u8> {
    if tail.len() < ALIGNED_TAIL {
        return Vec::new();
    }
    let Some(offset) = nix::unistd::lseek(fd, 0, nix::unistd::Whence::SeekCur)
        .ok()
        .and_then(|offset| usize::try_from(offset).ok())
    else {
        return Vec::new(); // not seekable: nothing to align with
    };
    let tail_at = offset + HEADER_LEN + before;
    let len = tail.as_ptr().addr().wrapping_sub(tail_at) % PAGE;
    wire::frame(FrameKind::Padding, call_id(), &vec![0; len])
}

/// Sends an encoded result: through a worker's shared arena when it is
/// large and there is one (an `ArenaReturn` frame: the tail's length, u64,
/// and CRC-32, u32, little-endian, then the head), else as a `Return` frame.
#[inline]
fn send_result(encoded: &codec::Encoded<'_>) -> std::io::Result<()> {
    if let Some(checksum) = crate::wire::arena::place(encoded.tail) {
        let mut payload = (encoded.tail.len() as u64).to_le_bytes().to_vec();
        payload.extend_from_slice(&checksum.to_le_bytes());
        payload.extend_from_slice(&encoded.head);
        return send_frame(FrameKind::ArenaReturn, &payload);
    }
    send_frame_parts(FrameKind::Return, &encoded.head, encoded.tail)
}

/// Sends a frame on the reply descriptor (a worker's socket, for `Hello`).
pub(crate) fn send(kind: FrameKind, payload: &[u8]) -> std::io::Result<()> {
    send_frame(kind, payload)
}

/// Sends a failure.
pub(crate) fn send_failure(failure: &ChildFailure) {
    if let Ok(payload) = codec::to_msgpack(failure) {
        let _ = send_frame(FrameKind::Failure, &payload);
    }
}

/// Sends a failure and leaves the process.
/// Sandboxes this child as `policy` says, the last step of its set-up; a
/// child that cannot leaves with a `Failure` frame, never running the
/// function unsandboxed.
#[inline]
pub(crate) fn enter_sandbox(policy: Option<&crate::options::sandbox::SandboxPolicy>) {
    if let Some(policy) = policy {
        sandbox_self(policy);
    }
}

fn sandbox_self(policy: &crate::options::sandbox::SandboxPolicy) {
    crate::child::fault::watch_sandbox_traps();
    if let Err(reason) = crate::options::sandbox::enter(policy) {
        fail(&ChildFailure::Sandbox { reason });
    }
}

pub(crate) fn fail(failure: &ChildFailure) -> ! {
    send_failure(failure);
    leave()
}

/// Leaves the child: exit code 0 whatever happened, because the reply frame
/// (or its absence) tells the parent what happened. A child that could not
/// send anything is reported as `ZeroExitcodeWithoutPayload`.
pub(crate) fn leave() -> ! {
    flush_output();
    sys::exit_now(0)
}

/// Flushes std's stdout (spawned children only) and C's stdio buffers, so
/// what the function printed reaches the parent before its reply does.
#[inline]
pub(crate) fn flush_output() {
    if FLUSH_STDOUT.load(Ordering::Relaxed) {
        let _ = std::io::stdout().flush();
    }
    sys::flush_c_stdio();
}

/// Runs `function` and replies with its result (or its panic). Never returns:
/// the child must not unwind or return past the fork point.
pub(crate) fn serve<R>(codec: Codec<R>, function: impl FnOnce() -> R) -> ! {
    // The value's destructor is not run: the process ends right here.
    std::mem::forget(respond(codec, function));
    leave()
}

/// Runs `function` and sends one reply frame: its result, its panic, or the
/// failure to encode the result. Returns the value once it is sent (a
/// worker drops it and serves its next request).
pub(crate) fn respond<R>(codec: Codec<R>, function: impl FnOnce() -> R) -> Option<R> {
    PANIC_SENT.store(false, Ordering::Relaxed);
    let value = match crate::child::fault::run_function(function) {
        Ok(value) => value,
        Err(payload) => {
            if !PANIC_SENT.load(Ordering::Relaxed) {
                report_panic(|| PanicReport::from_payload(payload.as_ref()));
            }
            return None;
        }
    };
    let encoded = catch_unwind(AssertUnwindSafe(|| (codec.encode)(&value)));
    match encoded {
        Ok(Ok(encoded)) => {
            flush_output();
            let _ = send_result(&encoded);
        }
        Ok(Err(message)) => send_failure(&ChildFailure::Codec {
            stage: CodecStage::EncodeResult,
            message,
        }),
        Err(payload) => send_failure(&ChildFailure::Codec {
            stage: CodecStage::EncodeResult,
            message: message_of(payload.as_ref()),
        }),
    }
    Some(value)
}

/// Decodes the arguments of a registered function, then runs it and sends
/// its reply (see `respond`); the value is dropped once sent.
pub fn serve_registered<A: DeserializeOwned, R>(
    args: &[u8],
    codec: Codec<R>,
    function: impl FnOnce(A) -> R,
) {
    let decoded = catch_unwind(AssertUnwindSafe(|| codec::from_msgpack::<A>(args)));
    let message = match decoded {
        Ok(Ok(args)) => {
            let value = respond(codec, move || function(args));
            drop_quietly(value);
            return;
        }
        Ok(Err(message)) => message,
        Err(payload) => message_of(payload.as_ref()),
    };
    send_failure(&ChildFailure::Codec {
        stage: CodecStage::DecodeArguments,
        message,
    });
}

/// Drops a result that was already sent. A panic in its destructor must not
/// send a second reply: it is left to the previous hook (which prints it).
fn drop_quietly<R>(value: R) {
    ON_FUNCTION_THREAD.set(false);
    let dropped = catch_unwind(AssertUnwindSafe(move || drop(value)));
    ON_FUNCTION_THREAD.set(true);
    if dropped.is_err() {
        // The process's state is unknown now: leave; the next request
        // finds the worker gone and starts a fresh one.
        leave();
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn a_long_tail_in_a_file_lands_at_an_offset_matching_its_address() {
        let long = vec![7u8; ALIGNED_TAIL + 64];
        for written in [0, 21, PAGE, PAGE + 5000] {
            for tail in [&long[..ALIGNED_TAIL], &long[3..], &long[21..]] {
                let mut file = tempfile::tempfile().unwrap();
                file.write_all(&vec![1; written]).unwrap();
                let before = HEADER_LEN + 5;
                let padding = padding_before(file.as_fd(), before, tail);
                let frames = wire::split_frames(&padding).unwrap();
                let (kind, len) = (frames[0].kind, frames[0].payload.len() as u64);
                assert_eq!(kind, FrameKind::Padding);
                assert_eq!(padding.len(), HEADER_LEN + len as usize);
                assert!(padding[HEADER_LEN..].iter().all(|&b| b == 0));
                assert!((len as usize) < PAGE);
                let tail_at = written + padding.len() + before;
                assert_eq!(tail_at % PAGE, tail.as_ptr().addr() % PAGE);
            }
        }
    }

    #[test]
    fn a_short_tail_or_a_pipe_gets_no_padding() {
        let file = tempfile::tempfile().unwrap();
        let short = vec![7u8; ALIGNED_TAIL - 1];
        assert!(padding_before(file.as_fd(), 21, &short).is_empty());
        let (read, write) = nix::unistd::pipe().unwrap();
        let long = vec![7u8; ALIGNED_TAIL];
        assert!(padding_before(write.as_fd(), 21, &long).is_empty());
        drop(read);
    }
}
