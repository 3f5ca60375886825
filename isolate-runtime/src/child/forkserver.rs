//! The fork server's serving half (Linux only): a re-executed binary stopped
//! in its constructor forks one child per request, and reaps it when its
//! caller asks. The caller's half is `start::forkserver`, the protocol
//! `wire::forkserver`.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read as _, Seek as _};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{MsgFlags, send};
use nix::sys::stat::{Mode, umask};
use smallvec::SmallVec;

use crate::child::entry::{self, refuse};
use crate::sys;
use crate::wire::forkserver::{REQUEST_LEN, SERVER_VAR, WITH_CONTEXT, status_report};
use crate::wire::marker::{Marker, TOKEN_LEN, tokens_match};

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
    /// The child's stdout and stderr, held until it is reaped: the pipes
    /// then reach their end only after the caller has seen the child exit
    /// (completion comes from its pidfd), so the child's exit wakes the
    /// caller once, not once per pipe.
    _output: [OwnedFd; 2],
}

/// The server's loop: fork on request, reap on request, and on the end of
/// the control socket kill everything still held and leave.
fn serve_forks(control: &OwnedFd, marker: &Marker) -> ! {
    crate::child::limits::prepare_fork_server();
    let mut token = [0u8; TOKEN_LEN];
    let greeted = nix::sys::socket::recv(control.as_raw_fd(), &mut token, MsgFlags::empty());
    if greeted != Ok(TOKEN_LEN) || !tokens_match(&token, &marker.token) {
        refuse("the fork server's control socket did not carry its token");
    }
    let client = marker.parent_pid;
    // Opened once: every child's stdin (a path lookup per child otherwise).
    let null = std::fs::File::open("/dev/null").ok().map(OwnedFd::from);
    // Allocated once, here: each child reads its request into its copy.
    // Its own allocation would first merge and sort the free chunks the
    // server's heap holds, and each page that writes to is a child's
    // copy-on-write fault (three or four per call).
    let mut first_read: Vec<u8> = Vec::with_capacity(sys::SMALL_READ);
    // On the stack, as in `wait_for_work`.
    let mut held: SmallVec<[Held; 8]> = SmallVec::new();
    loop {
        let (control_ready, ready) = wait_for_work(control.as_fd(), &held);
        if control_ready {
            match receive_request(control.as_fd()) {
                Some(request) => {
                    held.extend(fork_child(request, client, null.as_ref(), &mut first_read));
                }
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
///
/// On the stack for the usual number of children: a heap page (or the
/// allocator's state in libc) written while a child shares it is a
/// copy-on-write fault, and the server loops here right after each fork.
fn wait_for_work(control: BorrowedFd<'_>, held: &[Held]) -> (bool, SmallVec<[usize; 8]>) {
    loop {
        let mut fds: SmallVec<[PollFd<'_>; 9]> =
            SmallVec::from_iter([PollFd::new(control, PollFlags::POLLIN)]);
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
    fds: SmallVec<[OwnedFd; 6]>,
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
fn fork_child(
    request: Request,
    client: i32,
    null: Option<&OwnedFd>,
    first_read: &mut Vec<u8>,
) -> Option<Held> {
    let expected = if request.with_context { 6 } else { 4 };
    if request.fds.len() != expected {
        return None;
    }
    let mut fds = request.fds.into_iter();
    let mut next = || fds.next();
    let (Some(channel), Some(stdout), Some(stderr), Some(status)) =
        (next(), next(), next(), next())
    else {
        return None;
    };
    let context = match (next(), next()) {
        (Some(context), Some(cwd)) => Some([context, cwd]),
        _ => None,
    };
    if let Some(context) = context
        && let Err(e) = adopt(context)
    {
        let errno = -e.raw_os_error().unwrap_or(libc::EINVAL);
        let _ = send(
            status.as_raw_fd(),
            &errno.to_le_bytes(),
            MsgFlags::MSG_NOSIGNAL,
        );
        return None;
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
            // The child's copy of the buffer (the server's stays).
            let first_read = std::mem::take(first_read);
            become_call_child(
                channel,
                [&stdout, &stderr],
                null,
                server,
                &marker,
                first_read,
            )
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            let pid = child.as_raw();
            let _ = send(
                status.as_raw_fd(),
                &pid.to_le_bytes(),
                MsgFlags::MSG_NOSIGNAL,
            );
            Some(Held {
                pid,
                status,
                _output: [stdout, stderr],
            })
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
    [stdout, stderr]: [&OwnedFd; 2],
    null: Option<&OwnedFd>,
    server: i32,
    marker: &Marker,
    first_read: Vec<u8>,
) -> ! {
    sys::lead_own_process_group();
    let _ = sys::dup_onto(stdout.as_fd(), 1);
    let _ = sys::dup_onto(stderr.as_fd(), 2);
    if let Some(null) = null {
        let _ = sys::dup_onto(null.as_fd(), 0);
    }
    sys::close_fds_except(&mut [channel.as_raw_fd()]);
    if !sys::die_with_parent(server) {
        sys::exit_now(2);
    }
    entry::serve_call(channel, marker, first_read)
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

/// The caller is gone: kill and reap every child still held, then leave.
fn leave(held: SmallVec<[Held; 8]>) -> ! {
    for child in held {
        sys::kill_group(child.pid);
        sys::kill_one(child.pid);
        let _ = sys::reap(child.pid);
    }
    sys::exit_now(0)
}

/// The fork server's side: makes the context in `fds` (from
/// [`CallContext::to_fds`]) its own, so the children it forks from now on
/// inherit it.
///
/// # Errors
///
/// The memfd could not be read or is malformed, or the directory cannot be
/// entered; the server then forks no child for the request.
/// Changes the environment, so the process must have one thread (checked).
fn adopt(fds: [OwnedFd; 2]) -> io::Result<()> {
    let [context, cwd] = fds;
    let mut file = File::from(context);
    file.rewind()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let (umask_bytes, vars) = bytes
        .split_first_chunk::<4>()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no umask"))?;
    let wanted: Vec<(&OsStr, &OsStr)> = vars
        .split(|&b| b == 0)
        .filter(|entry| !entry.is_empty())
        .filter_map(|entry| {
            // A key may start with '=' (as std reads the environment).
            let at = 1 + entry.get(1..)?.iter().position(|&b| b == b'=')?;
            Some((
                OsStr::from_bytes(&entry[..at]),
                OsStr::from_bytes(&entry[at + 1..]),
            ))
        })
        .collect();
    nix::unistd::fchdir(cwd.as_fd())?;
    umask(Mode::from_bits_truncate(u32::from_le_bytes(*umask_bytes)));
    let unwanted: Vec<OsString> = std::env::vars_os()
        .map(|(key, _)| key)
        .filter(|key| !wanted.iter().any(|(k, _)| k == key))
        .collect();
    let remove: Vec<&OsStr> = unwanted.iter().map(OsString::as_os_str).collect();
    let changed: Vec<(&OsStr, &OsStr)> = wanted
        .into_iter()
        .filter(|(key, value)| std::env::var_os(key).as_deref() != Some(*value))
        .collect();
    crate::sys::change_env_alone(&remove, &changed)
}
