//! Spawn mode: re-execute `/proc/self/exe` with no arguments and let the
//! constructor in `entry.rs` run the registered function before `main`.
//!
//! The channel is a Unix socket handed over as the child's stdin, so std
//! can use `posix_spawn` (no `pre_exec`, whose fork costs grow with the
//! parent's memory). The child swaps it for `/dev/null` before anything
//! else runs. The reply descriptor, and the progress pipe when the function
//! takes a `Progress`, travel over the socket (SCM_RIGHTS).

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, sendmsg, setsockopt, socketpair,
    sockopt,
};
use serde::Serialize;
use smallvec::SmallVec;

use crate::child::limits::ChildSetup;
use crate::child::progress::ProgressSink;
use crate::child::registry::Entry;
use crate::child::{self, entry};
use crate::options::isolate::Isolate;
use crate::options::throttle;
use crate::parent::backend::ReplyChannel;
use crate::parent::classify::OomWatch;
use crate::parent::outcome;
use crate::parent::progress::ProgressStream;
use crate::parent::stdio::{ChildStdio, OutputRelay};
use crate::parent::supervise::{Child, Outgoing, supervise};
use crate::sys;
use crate::vocabulary::error::{CodecStage, Error};
use crate::vocabulary::panic_report::message_of;
use crate::wire::codec::Codec;
use crate::wire::marker::{MARKER_VAR, MAX_TOKEN_FDS, Marker, TOKEN_LEN};
use crate::wire::{self, CallId, FrameKind};

/// The binary to re-execute: the same inode even if the file was replaced.
pub(crate) const SELF_EXE: &str = "/proc/self/exe";

/// Runs the registered `entry` in a re-executed child with `args`,
/// delivering the messages it sends to `progress`, if any.
#[track_caller]
pub fn call<A, R>(
    options: &Isolate,
    entry: &'static Entry,
    args: &A,
    codec: Codec<R>,
    progress: Option<&mut dyn ProgressSink>,
) -> Result<R, Error>
where
    A: Serialize + ?Sized,
{
    call_with(options, entry, args, codec, progress, re_execute)
}

/// What starting a child needs: its end of the channel, its stdout and
/// stderr, and the marker (parent pid, depth, token) it must check.
#[derive(Debug)]
pub(crate) struct Start {
    pub(crate) channel: OwnedFd,
    pub(crate) stdio: ChildStdio,
    pub(crate) marker: Marker,
    pub(crate) started_at: Instant,
}

/// A spawned call, with `start` making the process: a re-execution here, a
/// fork of the fork server in `forkserver.rs`. Everything else (encoding,
/// the token and descriptors over the channel, supervision) is shared.
#[track_caller]
pub(crate) fn call_with<A, R>(
    options: &Isolate,
    entry: &'static Entry,
    args: &A,
    codec: Codec<R>,
    progress: Option<&mut dyn ProgressSink>,
    start: fn(Start) -> Result<Child, Error>,
) -> Result<R, Error>
where
    A: Serialize + ?Sized,
{
    let prepared = prepare(options, entry, args)?;
    // Held until the child is reaped.
    let _permit = throttle::acquire();
    let Running {
        child,
        deadline,
        mut reply,
        socket,
        output,
        mut progress,
        oom,
    } = start_call(options, &prepared, progress, start)?;
    let exit = supervise(
        child,
        deadline,
        &mut reply,
        Outgoing::new(socket.as_fd(), &prepared.request),
        output,
        progress.as_mut(),
    )?;
    outcome::conclude(exit, reply, codec, options, &oom)
}

/// Requests longer than this get a larger socket buffer.
const LARGE_REQUEST: usize = 4 << 20;

/// What a call checks and encodes before it takes a permit.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// The child's nesting depth.
    pub(crate) depth: u32,
    /// The id every frame of this call carries.
    pub(crate) call_id: CallId,
    /// The `Call`, `Args` and setup frames.
    pub(crate) request: Vec<u8>,
}

/// Checks and encodes a call before it takes a permit.
pub(crate) fn prepare<A: Serialize + ?Sized>(
    options: &Isolate,
    entry: &'static Entry,
    args: &A,
) -> Result<Prepared, Error> {
    entry::keep_linked();
    let depth = child::next_depth()?;
    crate::options::sandbox::check(options.sandbox.as_ref())?;
    let call_id = wire::next_call_id();
    let mut request = encode_request(entry.name, call_id, args)?;
    request.extend(
        ChildSetup::new(options)
            .frame()
            .map_err(|e| Error::codec(CodecStage::EncodeArguments, e))?,
    );
    Ok(Prepared {
        depth,
        call_id,
        request,
    })
}

/// A started child and what its parent watches it with, owned, so that a
/// driver (the blocking [`supervise`] or an async one) can borrow them.
#[derive(Debug)]
pub(crate) struct Running<'p, S: ?Sized + ProgressSink = dyn ProgressSink + 'p> {
    pub(crate) child: Child,
    pub(crate) deadline: Option<Instant>,
    pub(crate) reply: ReplyChannel,
    /// Non-blocking; the request is still to be sent on it.
    pub(crate) socket: OwnedFd,
    pub(crate) output: OutputRelay,
    pub(crate) progress: Option<ProgressStream<'p, S>>,
    pub(crate) oom: OomWatch,
}

/// Starts the child of a `prepared` call with `start` (the caller holds a
/// permit) and hands it its token and descriptors.
pub(crate) fn start_call<'p, S: ?Sized + ProgressSink>(
    options: &Isolate,
    prepared: &Prepared,
    progress: Option<&'p mut S>,
    start: fn(Start) -> Result<Child, Error>,
) -> Result<Running<'p, S>, Error> {
    let oom = OomWatch::start();
    let call_id = prepared.call_id;
    let reply = ReplyChannel::create(options, call_id)?;
    let mut progress = ProgressStream::create(progress, call_id, options.result_limit())?;
    let (socket, child_socket) = unix_socketpair(
        SockType::Stream,
        "create the channel to the child (socketpair)",
    )?;
    if prepared.request.len() > LARGE_REQUEST {
        // Fewer wake-ups for a large argument; the kernel caps the size at
        // `net.core.wmem_max`, and a refusal leaves the default.
        let _ = setsockopt(&socket, sockopt::SndBuf, &LARGE_REQUEST);
    }
    let marker = Marker::for_new_child(prepared.depth)
        .map_err(|e| Error::spawn("draw a random token", e))?;
    let token = marker.token;
    let (output, stdio) = OutputRelay::create(&options.stderr)?;
    let deadline = options.deadline();
    let child = start(Start {
        channel: child_socket,
        stdio,
        marker,
        started_at: Instant::now(),
    })?;
    // A child that died early cannot take the token; its exit status will say why.
    let progress_end = progress.as_ref().map(ProgressStream::child_end);
    let fds: SmallVec<[BorrowedFd<'_>; MAX_TOKEN_FDS]> = std::iter::once(reply.child_end())
        .chain(progress_end)
        .collect();
    let _ = send_token_and_fds(socket.as_fd(), &token, &fds);
    drop(fds);
    // The reply pipe's write end stays open here until the call is over
    // (`PipeReply`), one wake-up fewer when the child exits.
    if let Some(progress) = &mut progress {
        progress.close_child_end();
    }
    sys::set_nonblocking(&socket).map_err(|e| Error::spawn("configure the channel", e))?;
    Ok(Running {
        child,
        deadline,
        reply,
        socket,
        output,
        progress,
        oom,
    })
}

/// A close-on-exec pair of connected Unix sockets; `what` names them in the
/// error.
pub(crate) fn unix_socketpair(kind: SockType, what: &str) -> Result<(OwnedFd, OwnedFd), Error> {
    socketpair(AddressFamily::Unix, kind, None, SockFlag::SOCK_CLOEXEC)
        .map_err(|e| Error::spawn(what, e))
}

/// Re-executes this binary with the channel as its stdin.
pub(crate) fn re_execute(start: Start) -> Result<Child, Error> {
    let started = Command::new(executable(Path::new(SELF_EXE))?)
        .env(MARKER_VAR, start.marker.encode())
        .stdin(Stdio::from(start.channel))
        .stdout(Stdio::from(start.stdio.stdout))
        .stderr(Stdio::from(start.stdio.stderr))
        .process_group(0)
        .spawn()
        .map_err(|e| {
            Error::spawn(
                format!("re-execute {SELF_EXE} (is /proc mounted? start_method = \"fork\" does not need it)"),
                e,
            )
        })?;
    let child = Child::adopt(started.id().cast_signed(), start.started_at)?;
    drop(started); // std's handle neither waits nor kills; `child` owns the process now
    Ok(child)
}

/// Checks that `link` (`/proc/self/exe`) leads to this program's binary, so
/// a missing `/proc` (a chroot, a minimal container) gives an error that
/// names the way out (docs/FAULTS.md H3). There is no fallback: a PATH lookup of
/// `argv[0]` could run another program.
pub(crate) fn executable(link: &Path) -> Result<&Path, Error> {
    match std::fs::metadata(link) {
        Ok(_) => Ok(link),
        Err(e) => Err(Error::spawn(
            format!(
                "locate this program's executable for re-execution at {} (is /proc mounted?); \
                 use start_method = \"fork\", which does not need it",
                link.display()
            ),
            e,
        )),
    }
}

/// The `Call` and `Args` frames of the call `call_id`, encoded before the
/// child is started, so an argument that fails to encode leaves nothing
/// behind (docs/FAULTS.md A12).
fn encode_request<A: Serialize + ?Sized>(
    name: &str,
    call_id: CallId,
    args: &A,
) -> Result<Vec<u8>, Error> {
    let mut request = wire::frame(FrameKind::Call, call_id, name.as_bytes());
    // Encoded straight into the request: a large argument is copied once.
    wire::append_frame(&mut request, FrameKind::Args, call_id, |out| {
        encode_args_onto(out, args)
    })?;
    Ok(request)
}

/// The arguments as a registered entry decodes them.
///
/// # Errors
///
/// `Codec` (`EncodeArguments`) when a `Serialize` impl fails or panics.
pub(crate) fn encode_args<A: Serialize + ?Sized>(args: &A) -> Result<Vec<u8>, Error> {
    let mut encoded = Vec::new();
    encode_args_onto(&mut encoded, args)?;
    Ok(encoded)
}

/// Appends the encoded arguments to `out`; a panicking `Serialize` impl is
/// an encode failure too.
fn encode_args_onto<A: Serialize + ?Sized>(out: &mut Vec<u8>, args: &A) -> Result<(), Error> {
    let encoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rmp_serde::encode::write_named(out, args).map_err(|e| e.to_string())
    }));
    match encoded {
        Ok(Ok(())) => Ok(()),
        Ok(Err(message)) => Err(Error::codec(CodecStage::EncodeArguments, message)),
        Err(payload) => Err(Error::codec(
            CodecStage::EncodeArguments,
            message_of(payload.as_ref()),
        )),
    }
}

/// Sends the token with the descriptors the child takes: a call's reply
/// descriptor and, when the function takes a `Progress`, the progress
/// pipe's write end; a worker's arena, request pipe and answer pipe.
pub(crate) fn send_token_and_fds(
    socket: BorrowedFd<'_>,
    token: &[u8; TOKEN_LEN],
    fds: &[BorrowedFd<'_>],
) -> nix::Result<usize> {
    let fds: SmallVec<[RawFd; MAX_TOKEN_FDS]> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    sendmsg::<()>(
        socket.as_raw_fd(),
        &[IoSlice::new(token)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Not in the registry: the child must refuse it by name.
    static UNREGISTERED: Entry = Entry {
        name: "no::such::function@1:1",
        run: |_| sys::exit_now(9),
        init: None,
    };

    #[test]
    fn a_missing_proc_is_a_spawn_error_that_points_to_fork_mode() {
        assert_eq!(
            executable(Path::new(SELF_EXE)).unwrap(),
            Path::new(SELF_EXE)
        );
        match executable(Path::new("/no/proc/self/exe")) {
            Err(Error::Spawn { what, source }) => {
                assert_eq!(source.raw_os_error(), Some(libc::ENOENT));
                assert_eq!(
                    what,
                    "locate this program's executable for re-execution at /no/proc/self/exe \
                     (is /proc mounted?); use start_method = \"fork\", which does not need it"
                );
            }
            other => panic!("expected a spawn error, got {other:?}"),
        }
    }

    #[test]
    fn an_unknown_function_is_a_protocol_error() {
        let result = call(
            &Isolate::new(),
            &UNREGISTERED,
            &(),
            Codec::<u8>::serde(),
            None,
        );
        match result {
            Err(Error::Protocol { message, .. }) => {
                assert_eq!(message, "unknown function id \"no::such::function@1:1\"");
            }
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }
}
