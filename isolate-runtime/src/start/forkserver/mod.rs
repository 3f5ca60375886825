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
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{ControlMessage, MsgFlags, SockType, send, sendmsg};
use serde::Serialize;

use crate::wire::codec::Codec;
use crate::child::entry::{self, refuse};
use crate::vocabulary::error::Error;
use crate::options::isolate::Isolate;
use crate::wire::marker::{Marker, TOKEN_LEN, tokens_match};
use crate::child::progress::ProgressSink;
use crate::child::registry::Entry;
use crate::start::spawn::{self, SELF_EXE, Start, unix_socketpair};
use crate::parent::supervise::Child;
use crate::sys;

/// The environment variable that makes a re-executed binary a fork server.
const SERVER_VAR: &str = "BOMBSQUAD_FORKSERVER";

mod context;

use context::CallContext;

/// A request: depth (u32, little endian), the call's token, then
/// [`WITH_CONTEXT`] or 0.
const REQUEST_LEN: usize = 4 + TOKEN_LEN + 1;

/// The request's last byte when two more descriptors follow the usual
/// four: the caller's context (`context.rs`).
const WITH_CONTEXT: u8 = 1;

/// A reaped child's report: wait status (i32), user and system CPU time in
/// microseconds and peak RSS in KiB (u64 each), little endian.
const STATUS_LEN: usize = 4 + 3 * 8;

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
        replace_server(&mut server)?;
    }
    Ok(())
}

/// The fork server of this process, if one was started.
static SERVER: Mutex<Option<Server>> = Mutex::new(None);

fn lock_server() -> std::sync::MutexGuard<'static, Option<Server>> {
    SERVER.lock().unwrap_or_else(PoisonError::into_inner)
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
    process: OwnedFd,
    /// The caller's context this server last adopted; `None` until a
    /// request carried one.
    sent: Option<CallContext>,
}

impl Server {
    fn start() -> Result<Self, Error> {
        let (control, server_end) = unix_socketpair(
            SockType::SeqPacket,
            "create the fork server's control socket",
        )?;
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
            owner: std::process::id(),
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            control,
            process,
            sent: None,
        };
        send(server.control.as_raw_fd(), &token, MsgFlags::MSG_NOSIGNAL)
            .map_err(|e| Error::spawn("greet the fork server", e))?;
        Ok(server)
    }

    fn is_ours(&self) -> bool {
        self.owner == std::process::id()
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

    /// Stops and reaps a server that is ours; a forked copy's handle only
    /// closes its descriptors.
    fn retire(self) {
        if self.is_ours() {
            let _ = sys::pidfd_signal(self.process.as_fd(), libc::SIGKILL, false);
            let _ = sys::reap_pidfd(self.process.as_fd());
        }
    }
}

/// Replaces a missing, dead or inherited server with a new one.
fn replace_server(slot: &mut Option<Server>) -> Result<&mut Server, Error> {
    if let Some(old) = slot.take() {
        old.retire();
    }
    Ok(slot.insert(Server::start()?))
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
        let generation = send_request(&mut request, &fds, &context, dead_server)?;
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
/// it refuses the message, or it belongs to the process this one was forked
/// from. The request carries `context` when that server has not adopted it.
fn send_request(
    request: &mut [u8; REQUEST_LEN],
    fds: &[RawFd; 4],
    context: &CallContext,
    dead: Option<u64>,
) -> Result<u64, Error> {
    let mut slot = lock_server();
    let server = match slot.as_mut() {
        Some(server) if server.is_ours() && Some(server.generation) != dead => server,
        _ => replace_server(&mut slot)?,
    };
    if send_with_context(server, request, fds, context).is_ok() {
        return Ok(server.generation);
    }
    let server = replace_server(&mut slot)?;
    send_with_context(server, request, fds, context)
        .map_err(|e| Error::spawn("send a request to the fork server", e))?;
    Ok(server.generation)
}

/// Sends `request` to `server`, with `context` when it differs from what
/// the server last adopted.
fn send_with_context(
    server: &mut Server,
    request: &mut [u8; REQUEST_LEN],
    fds: &[RawFd; 4],
    context: &CallContext,
) -> io::Result<usize> {
    if !context.differs_from(server.sent.as_ref()) {
        request[REQUEST_LEN - 1] = 0;
        return Ok(server.send(request, fds)?);
    }
    let extra = context.to_fds().map_err(io::Error::other)?;
    request[REQUEST_LEN - 1] = WITH_CONTEXT;
    let all = [
        fds[0],
        fds[1],
        fds[2],
        fds[3],
        extra[0].as_raw_fd(),
        extra[1].as_raw_fd(),
    ];
    let sent = server.send(request, &all)?;
    server.sent = Some(context.clone());
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

/// Asks the server to reap a child whose group the caller has killed, and
/// returns its wait status and resource usage.
pub(crate) fn collect_status(status: BorrowedFd<'_>) -> io::Result<(i32, libc::rusage)> {
    send(status.as_raw_fd(), b"r", MsgFlags::MSG_NOSIGNAL)?;
    let mut report = [0u8; STATUS_LEN];
    sys::read_exact(status, &mut report)?;
    let field = |at: usize| u64::from_le_bytes(report[at..at + 8].try_into().unwrap_or_default());
    let usage = sys::rusage_of(field(4), field(12), field(20));
    let wait_status = i32::from_le_bytes(report[..4].try_into().unwrap_or_default());
    Ok((wait_status, usage))
}

/// Becomes the fork server if this process was started as one (called from
/// the constructor in `entry.rs`, before `main`); returns otherwise.
pub(crate) fn serve_if_marked() {
    let Some(raw) = std::env::var_os(SERVER_VAR) else {
        return;
    };
    let marker =
        Marker::parse(&raw).unwrap_or_else(|why| refuse(&format!("malformed marker: {why}")));
    let Some(control) = entry::accept_channel(&marker).unwrap_or_else(|why| refuse(&why)) else {
        return; // inherited from an ancestor
    };
    // The server's children must not inherit the marker. This runs in a
    // constructor before `main`, with one thread.
    if let Err(e) = sys::change_env_alone(&[SERVER_VAR.as_ref()], &[]) {
        refuse(&format!("clear {SERVER_VAR}: {e}"));
    }
    serve_forks(&control, &marker)
}

/// A child the server forked and holds unreaped.
#[derive(Debug)]
struct Held {
    pid: i32,
    status: OwnedFd,
}

/// The server's loop: fork on request, reap on request, and on the end of
/// the control socket kill everything still held and leave.
fn serve_forks(control: &OwnedFd, marker: &Marker) -> ! {
    sys::unblock_all_signals();
    sys::ignore_sigpipe();
    sys::disable_core_dumps();
    let mut token = [0u8; TOKEN_LEN];
    let greeted = nix::sys::socket::recv(control.as_raw_fd(), &mut token, MsgFlags::empty());
    if greeted != Ok(TOKEN_LEN) || !tokens_match(&token, &marker.token) {
        refuse("the fork server's control socket did not carry its token");
    }
    let client = marker.parent_pid;
    let mut held: Vec<Held> = Vec::new();
    loop {
        let (control_ready, ready) = wait_for_work(control.as_fd(), &held);
        if control_ready {
            match receive_request(control.as_fd()) {
                Some(request) => held.extend(fork_child(request, client)),
                None => leave(held),
            }
        }
        for index in ready.into_iter().rev() {
            let child = held.swap_remove(index);
            reap_on_request(&child);
        }
    }
}

/// Polls the control socket and every status socket; returns whether the
/// control socket is readable and which held children have news.
fn wait_for_work(control: BorrowedFd<'_>, held: &[Held]) -> (bool, Vec<usize>) {
    loop {
        let mut fds = vec![PollFd::new(control, PollFlags::POLLIN)];
        fds.extend(
            held.iter()
                .map(|h| PollFd::new(h.status.as_fd(), PollFlags::POLLIN)),
        );
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {
                let ready = |fd: &PollFd<'_>| fd.any().unwrap_or(true);
                let news = (1..fds.len()).filter(|&i| ready(&fds[i])).map(|i| i - 1);
                return (ready(&fds[0]), news.collect());
            }
            Err(Errno::EINTR) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// A request and its descriptors: channel, stdout, stderr, status, and
/// with [`WITH_CONTEXT`] the caller's context and working directory.
struct Request {
    depth: u32,
    token: [u8; TOKEN_LEN],
    with_context: bool,
    fds: Vec<OwnedFd>,
}

/// `None` when the caller is gone (the control socket reached its end).
fn receive_request(control: BorrowedFd<'_>) -> Option<Request> {
    let mut bytes = [0u8; REQUEST_LEN];
    let (len, fds) = sys::recv_with_fds::<6>(control, &mut bytes).ok()?;
    if len == 0 {
        return None;
    }
    let depth = u32::from_le_bytes(bytes[..4].try_into().ok()?);
    let token = bytes[4..4 + TOKEN_LEN].try_into().ok()?;
    let with_context = bytes[REQUEST_LEN - 1] == WITH_CONTEXT;
    Some(Request {
        depth,
        token,
        with_context,
        fds,
    })
}

/// Forks the requested child, after adopting the caller's context when the
/// request carries it; answers the child's pid (or `-errno`) on the status
/// socket. A malformed request is dropped, which the caller sees as EOF.
fn fork_child(mut request: Request, client: i32) -> Option<Held> {
    let context = if request.with_context {
        let fds = request.fds.split_off(4.min(request.fds.len()));
        Some(<[OwnedFd; 2]>::try_from(fds).ok()?)
    } else {
        None
    };
    let [channel, stdout, stderr, status] = <[OwnedFd; 4]>::try_from(request.fds).ok()?;
    if let Some(context) = context {
        if let Err(e) = context::adopt(context) {
            let errno = -e.raw_os_error().unwrap_or(libc::EINVAL);
            let _ = send(
                status.as_raw_fd(),
                &errno.to_le_bytes(),
                MsgFlags::MSG_NOSIGNAL,
            );
            return None;
        }
    }
    let marker = Marker {
        parent_pid: client,
        fd: channel.as_raw_fd(),
        depth: request.depth,
        token: request.token,
    };
    let server = std::process::id().cast_signed();
    // The server is single-threaded, so the child inherits no lock held by
    // another thread; the child branch never returns (`sys::fork`'s rule).
    match sys::fork() {
        Ok(nix::unistd::ForkResult::Child) => {
            become_call_child(channel, &stdout, &stderr, server, &marker)
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            let pid = child.as_raw();
            let _ = send(
                status.as_raw_fd(),
                &pid.to_le_bytes(),
                MsgFlags::MSG_NOSIGNAL,
            );
            Some(Held { pid, status })
        }
        Err(e) => {
            let errno = -(e as i32);
            let _ = send(
                status.as_raw_fd(),
                &errno.to_le_bytes(),
                MsgFlags::MSG_NOSIGNAL,
            );
            None
        }
    }
}

/// The forked child: its own process group, the caller's stdout and stderr,
/// stdin from `/dev/null`, only its channel open, death with the server;
/// then the same path as a re-executed child.
fn become_call_child(
    channel: OwnedFd,
    stdout: &OwnedFd,
    stderr: &OwnedFd,
    server: i32,
    marker: &Marker,
) -> ! {
    sys::lead_own_process_group();
    let _ = sys::dup_onto(stdout.as_fd(), 1);
    let _ = sys::dup_onto(stderr.as_fd(), 2);
    if let Ok(null) = std::fs::File::open("/dev/null") {
        let _ = sys::dup_onto(null.as_fd(), 0);
    }
    sys::close_fds_except(&mut [channel.as_raw_fd()]);
    if !sys::die_with_parent(server) {
        sys::exit_now(2);
    }
    entry::serve_call(channel, marker)
}

/// The caller asked for the status (`r`), or closed the socket (it gave the
/// call up): either way the child dies and is reaped now.
fn reap_on_request(child: &Held) {
    let mut asked = [0u8; 1];
    let wants_status = matches!(nix::unistd::read(&child.status, &mut asked), Ok(1));
    sys::kill_group(child.pid); // the unreaped child pins its group id
    sys::kill_one(child.pid);
    let Ok((status, usage)) = sys::reap(child.pid) else {
        return;
    };
    if wants_status {
        let _ = send(
            child.status.as_raw_fd(),
            &status_report(status, &usage),
            MsgFlags::MSG_NOSIGNAL,
        );
    }
}

fn status_report(status: i32, usage: &libc::rusage) -> [u8; STATUS_LEN] {
    let micros = |t: libc::timeval| {
        u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000 + u64::try_from(t.tv_usec).unwrap_or(0)
    };
    let mut report = [0u8; STATUS_LEN];
    report[..4].copy_from_slice(&status.to_le_bytes());
    report[4..12].copy_from_slice(&micros(usage.ru_utime).to_le_bytes());
    report[12..20].copy_from_slice(&micros(usage.ru_stime).to_le_bytes());
    report[20..].copy_from_slice(&u64::try_from(usage.ru_maxrss).unwrap_or(0).to_le_bytes());
    report
}

/// The caller is gone: kill and reap every child still held, then leave.
fn leave(held: Vec<Held>) -> ! {
    for child in held {
        sys::kill_group(child.pid);
        sys::kill_one(child.pid);
        let _ = sys::reap(child.pid);
    }
    sys::exit_now(0)
}
