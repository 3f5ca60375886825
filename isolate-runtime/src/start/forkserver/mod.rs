//! Fork-server mode (Linux only): a small helper process, re-executed from
//! this binary and stopped in its constructor before `main` (so it is small
//! however large the caller has grown), forks one child per call. A call then costs a fork of a small
//! process whatever the caller's size, with spawn's semantics: the
//! arguments are encoded, the function is looked up by its registered name.
//!
//! The caller keeps the parts that matter for correctness: it opens a pidfd
//! on the child (the server does not reap a child until the caller asks, so
//! the pid stays pinned), kills the child's group through it, and supervises
//! it exactly as a spawned child. The server only forks and reaps:
//!
//! - a request is one `SOCK_SEQPACKET` message on the control socket: depth,
//!   the call's token and a flag, with the child's channel, stdout, stderr
//!   and a status socket as `SCM_RIGHTS`, and when the flag says so the
//!   caller's environment, umask and working directory, which the server
//!   adopts before it forks (`context.rs`);
//! - the server answers on the status socket with the pid (or `-errno`);
//! - the caller writes `r` on it once the child is dead, and the server
//!   answers with the wait status and resource usage; a status socket that
//!   closes instead makes the server kill the child's group and reap it;
//! - the server dies with the control socket (the caller's death included),
//!   killing the children it still holds; they also die with it
//!   (`PR_SET_PDEATHSIG`).

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd as _, OwnedFd, RawFd};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use nix::sys::socket::{ControlMessage, MsgFlags, SockType, send, sendmsg};
use nix::sys::stat::fstat;
use serde::Serialize;

use crate::child::progress::ProgressSink;
use crate::child::registry::Entry;
use crate::options::isolate::Isolate;
use crate::parent::supervise::Child;
use crate::start::spawn::{self, SELF_EXE, Start, unix_socketpair};
use crate::sys::{self, fork_gate};
use crate::vocabulary::error::Error;
use crate::wire::codec::Codec;
use crate::wire::forkserver::{REQUEST_LEN, SERVER_VAR, WITH_CONTEXT};
use crate::wire::marker::{Marker, TOKEN_LEN};

mod context;

use context::{CallContext, Standing};

/// Runs the registered `entry` in a child of the fork server with `args`,
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
    spawn::call_with(options, entry, args, codec, progress, fork_from_server)
}

/// Starts this process's fork server now, if it is not running, so the
/// first `start_method = "forkserver"` call does not pay for it (about one
/// re-execution of the binary). The server is always small whenever it
/// starts: it is a fresh execution of the binary that stops before `main`.
///
/// # Errors
///
/// [`Error::Spawn`] when the server cannot be started.
pub fn start_forkserver() -> Result<(), Error> {
    let mut server = lock_server();
    if server.as_ref().is_none_or(|s| !s.is_ours()) {
        replace_server(&mut server, Standing::now()?)?;
    }
    Ok(())
}

/// The fork server of this process, if one was started.
static SERVER: Mutex<Option<Server>> = Mutex::new(None);

/// Locks the server slot, with forks kept out while it is held
/// (`sys::fork_gate`): a fork-mode child gets a copy of the lock as it was
/// at the fork, and calls of its own must not find it held forever.
fn lock_server() -> Slot {
    let gate = fork_gate::shared();
    Slot {
        server: SERVER.lock().unwrap_or_else(PoisonError::into_inner),
        _gate: gate,
    }
}

/// The locked server slot; the lock is released before the gate (fields
/// drop in order).
struct Slot {
    server: MutexGuard<'static, Option<Server>>,
    _gate: fork_gate::Shared,
}

impl std::ops::Deref for Slot {
    type Target = Option<Server>;

    fn deref(&self) -> &Self::Target {
        &self.server
    }
}

impl std::ops::DerefMut for Slot {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.server
    }
}

/// The caller's handle on its fork server.
#[derive(Debug)]
struct Server {
    /// The process that started it: a forked copy of the caller must not
    /// share it (docs/FAULTS.md F9), so it starts its own.
    owner: u32,
    /// Tells servers apart, so that callers who saw one die replace it once.
    generation: u64,
    control: OwnedFd,
    /// The control socket's device and inode, which tell it apart from
    /// whatever a forked copy's number for it names later.
    control_id: (u64, u64),
    process: OwnedFd,
    /// The caller's context this server last adopted; `None` until a
    /// request carried one.
    sent: Option<CallContext>,
    /// The standing of the thread that started it, which every child of
    /// the server has.
    standing: Standing,
}

impl Server {
    fn start(standing: Standing) -> Result<Self, Error> {
        let (control, server_end) = unix_socketpair(
            SockType::SeqPacket,
            "create the fork server's control socket",
        )?;
        let control_stat = fstat(control.as_fd())
            .map_err(|e| Error::spawn("identify the fork server's control socket", e))?;
        // Requests carry each call's depth; the server's own is unused.
        let marker =
            Marker::for_new_child(0).map_err(|e| Error::spawn("draw a random token", e))?;
        let token = marker.token;
        let started = Command::new(spawn::executable(Path::new(SELF_EXE))?)
            .env(SERVER_VAR, marker.encode())
            .stdin(Stdio::from(server_end))
            .process_group(0)
            .spawn()
            .map_err(|e| Error::spawn("start the fork server", e))?;
        let pid = started.id().cast_signed();
        drop(started); // reaped through `process` when retired
        let process = sys::pidfd_open(pid).map_err(|e| {
            sys::kill_one(pid);
            let _ = sys::reap(pid);
            Error::spawn("watch the fork server (pidfd_open)", e)
        })?;
        static GENERATION: AtomicU64 = AtomicU64::new(0);
        let server = Self {
            owner: sys::current_pid(),
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            control,
            control_id: (control_stat.st_dev, control_stat.st_ino),
            process,
            sent: None,
            standing,
        };
        send(server.control.as_raw_fd(), &token, MsgFlags::MSG_NOSIGNAL)
            .map_err(|e| Error::spawn("greet the fork server", e))?;
        Ok(server)
    }

    fn is_ours(&self) -> bool {
        self.owner == sys::current_pid()
    }

    fn send(&self, request: &[u8; REQUEST_LEN], fds: &[RawFd]) -> nix::Result<usize> {
        sendmsg::<()>(
            self.control.as_raw_fd(),
            &[IoSlice::new(request)],
            &[ControlMessage::ScmRights(fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
    }

    /// Stops and reaps a server that is ours. A forked copy's handle
    /// closes its descriptors only if they are still the server's: a
    /// fork-mode child closed every inherited descriptor before its
    /// function ran, and their numbers may name its own files by now.
    fn retire(self) {
        if self.is_ours() {
            let _ = sys::pidfd_signal(self.process.as_fd(), libc::SIGKILL, false);
            let _ = sys::reap_pidfd(self.process.as_fd());
        } else if !self.still_inherited() {
            let _ = (self.control.into_raw_fd(), self.process.into_raw_fd());
        }
    }

    /// Whether the control socket's number still names the socket this
    /// handle was made with (a socket's inode is its own). The two
    /// descriptors are inherited, or closed, together.
    fn still_inherited(&self) -> bool {
        fstat(self.control.as_fd()).is_ok_and(|now| (now.st_dev, now.st_ino) == self.control_id)
    }
}

/// Replaces a missing, dead or inherited server with a new one, started
/// by a thread of `standing`.
fn replace_server(slot: &mut Option<Server>, standing: Standing) -> Result<&mut Server, Error> {
    if let Some(old) = slot.take() {
        old.retire();
    }
    Ok(slot.insert(Server::start(standing)?))
}

/// Asks the server to fork a child for `start`, and takes charge of it.
pub(crate) fn fork_from_server(start: Start) -> Result<Child, Error> {
    let mut request = [0u8; REQUEST_LEN];
    request[..4].copy_from_slice(&start.marker.depth.to_le_bytes());
    request[4..4 + TOKEN_LEN].copy_from_slice(&start.marker.token);
    let context = CallContext::current()?;
    let mut dead_server = None;
    loop {
        let (status, server_status) = unix_socketpair(
            SockType::Stream,
            "create the status socket for the fork server",
        )?;
        let fds = [
            start.channel.as_raw_fd(),
            start.stdio.stdout.as_raw_fd(),
            start.stdio.stderr.as_raw_fd(),
            server_status.as_raw_fd(),
        ];
        let Some(generation) = send_request(&mut request, &fds, &context, dead_server)? else {
            return spawn::re_execute(start);
        };
        drop(server_status);
        match read_pid(status.as_fd()) {
            Ok(pid) => {
                drop((start.channel, start.stdio));
                return Child::adopt_from_server(pid, start.started_at, status);
            }
            // The server died (killed from outside) with the request in its
            // queue: once more, with a new one.
            Err(None) if dead_server.is_none() => dead_server = Some(generation),
            Err(error) => {
                // The server may have adopted part of a context: resend it.
                if let Some(server) = lock_server().as_mut() {
                    server.sent = None;
                }
                return Err(error.unwrap_or_else(|| {
                    Error::spawn(
                        "hear back from the fork server",
                        io::Error::new(io::ErrorKind::UnexpectedEof, "it exited twice in a row"),
                    )
                }));
            }
        }
    }
}

/// Sends a request and returns the generation of the server that took it,
/// (re)starting the server when there is none, it is `dead` (a generation),
/// its end of the control socket is gone, or it belongs to the process this
/// one was forked from. The request carries `context` when that server has
/// not adopted it. A failure of the caller's own (no descriptor left for
/// the context) is returned as it is: the server is not to blame.
///
/// `None`, and nothing sent, when the server has more than the caller: the
/// caller's thread gave up credentials, capabilities, seccomp filters or
/// CPUs since the server started, so its child must not come from there;
/// the call is spawned instead (docs/FAULTS.md H10).
fn send_request(
    request: &mut [u8; REQUEST_LEN],
    fds: &[RawFd; 4],
    context: &CallContext,
    dead: Option<u64>,
) -> Result<Option<u64>, Error> {
    let mut slot = lock_server();
    let server = match slot.as_mut() {
        Some(server) if server.is_ours() && server.standing != context.standing => {
            return Ok(None);
        }
        Some(server) if server.is_ours() && Some(server.generation) != dead => server,
        _ => replace_server(&mut slot, context.standing.clone())?,
    };
    match send_with_context(server, request, fds, context)? {
        Ok(_) => return Ok(Some(server.generation)),
        Err(e) if !server_is_gone(e) => {
            return Err(Error::spawn("send a request to the fork server", e));
        }
        Err(_) => {}
    }
    let server = replace_server(&mut slot, context.standing.clone())?;
    send_with_context(server, request, fds, context)?
        .map_err(|e| Error::spawn("send a request to the fork server", e))?;
    Ok(Some(server.generation))
}

/// Whether a failed send means the server's end of the control socket is
/// gone (it died, or was killed), rather than a lack of memory or buffer.
fn server_is_gone(errno: nix::errno::Errno) -> bool {
    use nix::errno::Errno;
    matches!(errno, Errno::EPIPE | Errno::ECONNRESET | Errno::ENOTCONN)
}

/// Sends `request` to `server`, with `context` when it differs from what
/// the server last adopted. The outer error is the caller's (the context's
/// descriptors), the inner one the send's.
fn send_with_context(
    server: &mut Server,
    request: &mut [u8; REQUEST_LEN],
    fds: &[RawFd; 4],
    context: &CallContext,
) -> Result<nix::Result<usize>, Error> {
    if !context.differs_from(server.sent.as_ref()) {
        request[REQUEST_LEN - 1] = 0;
        return Ok(server.send(request, fds));
    }
    let extra = context.to_fds()?;
    request[REQUEST_LEN - 1] = WITH_CONTEXT;
    let all = [
        fds[0],
        fds[1],
        fds[2],
        fds[3],
        extra[0].as_raw_fd(),
        extra[1].as_raw_fd(),
    ];
    let sent = server.send(request, &all);
    if sent.is_ok() {
        server.sent = Some(context.clone());
    }
    Ok(sent)
}

/// The child's pid; `Err(None)` when the server closed the status socket
/// without answering (it died).
fn read_pid(status: BorrowedFd<'_>) -> Result<i32, Option<Error>> {
    let mut pid = [0u8; 4];
    match sys::read_exact(status, &mut pid) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(None),
        Err(e) => return Err(Some(Error::spawn("hear back from the fork server", e))),
    }
    match i32::from_le_bytes(pid) {
        pid if pid > 0 => Ok(pid),
        errno => Err(Some(Error::spawn(
            "fork the child in the fork server",
            io::Error::from_raw_os_error(-errno),
        ))),
    }
}
