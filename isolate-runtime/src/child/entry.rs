//! The entry of a re-executed child: a constructor that runs before `main`,
//! so neither the user's `main` nor libtest ever starts in the child.
//!
//! Checks, in order (docs/FAULTS.md I1, I2): a malformed marker or a secure
//! exec is refused (exit 2); a marker whose parent pid is not ours was
//! inherited and is ignored (the normal `main` runs); the channel must be a
//! Unix socket created by our parent and must carry the marker's token.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd};

use nix::sys::socket::{getsockopt, sockopt};
use nix::sys::stat::{SFlag, fstat};

use crate::child::{self, forkserver, limits, progress, registry};
use crate::sys;
use crate::wire::marker::{MARKER_VAR, MAX_TOKEN_FDS, Marker, TOKEN_LEN, tokens_match};
use crate::wire::{self, CallId, FrameKind, FrameStream, MAX_FRAME_LEN};
use smallvec::SmallVec;

/// Function names longer than this are refused.
const MAX_NAME_LEN: u64 = 4096;

#[ctor::ctor(unsafe)]
fn bombsquad_child_entry() {
    run_if_marked();
}

/// Keeps the constructor's object file in every binary that makes spawned
/// calls: the linker may drop unreferenced members of an rlib.
pub(crate) fn keep_linked() {
    std::hint::black_box(bombsquad_child_entry as fn());
}

fn run_if_marked() {
    forkserver::serve_if_marked();
    let Some(raw) = std::env::var_os(MARKER_VAR) else {
        return;
    };
    let marker =
        Marker::parse(&raw).unwrap_or_else(|why| refuse(&format!("malformed marker: {why}")));
    let channel = accept_channel(&marker).unwrap_or_else(|why| refuse(&why));
    let Some(channel) = channel else {
        return; // inherited from an ancestor: this process is not our child
    };
    if !sys::die_with_parent(marker.parent_pid) {
        sys::exit_now(2);
    }
    serve_call(channel, &marker, Vec::new())
}

/// The checks every re-executed process makes before it believes its
/// marker: not a secure exec, the marker names our real parent (`None`
/// otherwise: an inherited marker), and the channel is a socket that parent
/// made. Returns the channel, moved off the marker's descriptor.
///
/// # Errors
///
/// Why the process must refuse to run.
pub(crate) fn accept_channel(marker: &Marker) -> Result<Option<OwnedFd>, String> {
    if sys::is_secure_exec() {
        return Err("the binary runs as a secure exec (setuid, setcap)".to_owned());
    }
    if sys::parent_pid() != marker.parent_pid {
        return Ok(None);
    }
    take_channel(marker).map(Some)
}

/// Serves one call on `channel`: the token, the reply descriptor (and the
/// progress pipe, when the function takes a `Progress`) and the call
/// frames, then the registered function. Shared by a re-executed child and
/// a child of the fork server; `marker` carries the token and depth. A
/// `Worker` frame instead of a call makes this process a pool's worker.
/// The request's first `read` goes into `first_read` (see
/// [`FrameStream::with_buffer`]).
pub(crate) fn serve_call(channel: OwnedFd, marker: &Marker, first_read: Vec<u8>) -> ! {
    limits::enter_process_hygiene();
    let Received {
        fds,
        request,
        mut frames,
    } = receive_call(channel.as_fd(), marker, first_read).unwrap_or_else(|why| refuse(&why));
    let setup = read_frame(
        &mut frames,
        channel.as_fd(),
        FrameKind::Setup,
        limits::MAX_SETUP_LEN,
    )
    .and_then(|setup| limits::ChildSetup::decode(setup.payload()))
    .unwrap_or_else(|why| refuse(&why));
    let mut fds = fds.into_iter();
    let (name, call_id, args) = match request {
        Request::Call {
            name,
            call_id,
            args,
        } => (name, call_id, args),
        Request::Worker { name } => {
            // The worker's loop reads its request pipe: the pool sends its
            // first call only after the worker's hello.
            if !frames.is_drained() {
                refuse("the pool sent more than the worker's set-up before its hello");
            }
            let (Some(arena), Some(requests), Some(answers)) = (fds.next(), fds.next(), fds.next())
            else {
                refuse("the pool sent a worker fewer than its arena and two pipes")
            };
            drop(channel);
            let ends = crate::child::worker::Ends {
                requests,
                answers,
                arena,
            };
            crate::child::worker::serve_worker(ends, &name, &setup, marker.depth)
        }
    };
    drop(channel);
    let reply_fd = fds
        .next()
        .unwrap_or_else(|| refuse("the parent sent no reply descriptor"));
    // Descriptors the parent left open without CLOEXEC (a listening
    // socket, a lock file) must not live on in the child (docs/FAULTS.md G3).
    let progress_fd = fds.next().map_or(-1, IntoRawFd::into_raw_fd);
    sys::close_fds_except(&mut [reply_fd.as_raw_fd(), progress_fd]);
    let reply_fd = reply_fd.into_raw_fd();
    child::become_child(reply_fd, call_id, marker.depth, true);
    progress::set_fd(progress_fd);
    limits::enter_spawned_child(&setup, reply_fd);
    // The program's own set-up (trusted code: it may open a log file),
    // then the sandbox, last, before the function.
    registry::run_child_inits();
    child::enter_sandbox(setup.sandbox());
    match registry::find(&name) {
        Ok(entry) => {
            (entry.run)(args.payload());
            child::leave()
        }
        Err(message) => child::fail(&child::ChildFailure::UnknownFunction { message }),
    }
}

/// What the parent asks of a re-executed child.
enum Request {
    /// One call of the function registered as `name`, whose frames carry
    /// `call_id`.
    Call {
        name: String,
        call_id: CallId,
        args: wire::OwnedFrame,
    },
    /// Serve calls of `name` until told to leave (a pool's worker).
    Worker { name: String },
}

pub(crate) fn refuse(why: &str) -> ! {
    crate::vocabulary::diagnostics::refusing(std::process::id(), why);
    sys::exit_now(2)
}

/// Checks the marker's descriptor is a socket our parent made, moves it off
/// its number and gives that number `/dev/null` (it is stdin).
fn take_channel(marker: &Marker) -> Result<OwnedFd, String> {
    let fd = sys::inherited_fd(marker.fd)
        .map_err(|e| format!("channel descriptor {}: {e}", marker.fd))?;
    let stat = fstat(fd).map_err(|e| format!("channel descriptor {}: {e}", marker.fd))?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFSOCK {
        return Err(format!("channel descriptor {} is not a socket", marker.fd));
    }
    let peer =
        getsockopt(&fd, sockopt::PeerCredentials).map_err(|e| format!("channel peer: {e}"))?;
    if peer.pid() != marker.parent_pid || peer.uid() != nix::unistd::Uid::effective().as_raw() {
        return Err("the channel was not created by the parent process".to_owned());
    }
    let channel = fd
        .try_clone_to_owned()
        .map_err(|e| format!("duplicate channel: {e}"))?;
    let null = std::fs::File::open("/dev/null").map_err(|e| format!("open /dev/null: {e}"))?;
    sys::dup_onto(null.as_fd(), marker.fd).map_err(|e| format!("redirect stdin: {e}"))?;
    Ok(channel)
}

/// What the parent sends a re-executed child.
struct Received {
    /// A call's reply descriptor, then its progress pipe when the function
    /// takes a `Progress`; a worker's arena, request pipe and answer pipe.
    fds: SmallVec<[OwnedFd; MAX_TOKEN_FDS]>,
    request: Request,
    /// The rest of the request comes through it.
    frames: FrameStream,
}

/// Reads the token and the descriptors, then the call and args frames (or
/// a worker's name). The token is checked before anything else is believed.
fn receive_call(
    channel: BorrowedFd<'_>,
    marker: &Marker,
    first_read: Vec<u8>,
) -> Result<Received, String> {
    let mut token = [0u8; TOKEN_LEN];
    let fds = receive_token_and_fds(channel, &mut token)?;
    if !tokens_match(&token, &marker.token) {
        return Err("the channel token does not match the marker".to_owned());
    }
    let mut frames = FrameStream::with_buffer(first_read);
    let first = read_any_frame(&mut frames, channel, MAX_NAME_LEN)?;
    let (kind, call_id) = (first.kind, first.call_id);
    let name = String::from_utf8(first.into_payload())
        .map_err(|_| "function name is not UTF-8".to_owned())?;
    let request = match kind {
        FrameKind::Call => {
            let args = read_frame(&mut frames, channel, FrameKind::Args, MAX_FRAME_LEN)?;
            if args.call_id != call_id {
                return Err(format!(
                    "the arguments are for call {}, the call is {call_id}",
                    args.call_id
                ));
            }
            Request::Call {
                name,
                call_id,
                args,
            }
        }
        FrameKind::Worker => Request::Worker { name },
        other => return Err(format!("expected a Call or Worker frame, got {other:?}")),
    };
    Ok(Received {
        fds,
        request,
        frames,
    })
}

/// Reads the token, and the descriptors that came with it (see
/// [`Received::fds`]).
fn receive_token_and_fds(
    channel: BorrowedFd<'_>,
    token: &mut [u8; TOKEN_LEN],
) -> Result<SmallVec<[OwnedFd; MAX_TOKEN_FDS]>, String> {
    let (received, fds) = sys::recv_with_fds::<MAX_TOKEN_FDS>(channel, token)
        .map_err(|e| format!("receive the token: {e}"))?;
    sys::read_exact(channel, &mut token[received..])
        .map_err(|e| format!("receive the token: {e}"))?;
    Ok(fds)
}

fn read_frame(
    frames: &mut FrameStream,
    channel: BorrowedFd<'_>,
    expected: FrameKind,
    limit: u64,
) -> Result<wire::OwnedFrame, String> {
    match read_any_frame(frames, channel, limit)? {
        frame if frame.kind == expected => Ok(frame),
        frame => Err(format!(
            "expected a {expected:?} frame, got {:?} of {} bytes",
            frame.kind,
            frame.payload().len()
        )),
    }
}

/// The next frame, whatever its kind, if its payload is at most `limit` bytes.
fn read_any_frame(
    frames: &mut FrameStream,
    channel: BorrowedFd<'_>,
    limit: u64,
) -> Result<wire::OwnedFrame, String> {
    frames
        .next(channel, limit)
        .map_err(|refusal| match refusal {
            wire::FrameError::TooLarge { size, .. } => {
                format!("a frame of {size} bytes is too long")
            }
            wire::FrameError::Malformed(message) => format!("receive the call: {message}"),
        })
}
