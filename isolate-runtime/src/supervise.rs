//! Watching a running child: completion comes from the process (its pidfd),
//! never from EOF alone, because a grandchild can hold the channel open
//! (DESIGN.md, mechanism 4). The reply pipe is drained, the request sent
//! and progress messages delivered while waiting, and the deadline is
//! enforced with a process-group kill.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{MsgFlags, send};
use smallvec::{SmallVec, smallvec};

use crate::backend::ReplyChannel;
use crate::error::Error;
use crate::outcome::Termination;
use crate::progress::ProgressStream;
use crate::report::Usage;
use crate::stdio::{OutputRelay, OutputTail};
use crate::sys;
use crate::wire::FrameError;

/// A started child that leads its own process group and is not reaped yet.
/// Dropping it kills the group and reaps the child, so an early return or a
/// panic in the parent leaves no zombie and no orphan.
///
/// Every signal goes through the pidfd, which names the process and not its
/// number, so a kill can never reach a process that reused the pid after the
/// child was reaped, by us or by someone else (FAULTS.md F5).
#[derive(Debug)]
pub(crate) struct Child {
    pid: i32,
    /// `None` when the child had already exited and been reaped by someone
    /// else before it could be opened (FAULTS.md F6, F7).
    pidfd: Option<OwnedFd>,
    reaped: bool,
    /// Just before the child was started.
    started: Instant,
    /// Who collects the exit status.
    reaper: Reaper,
}

/// Who collects a child's exit status.
#[derive(Debug)]
enum Reaper {
    /// We do: the child is ours.
    Us,
    /// The fork server does, when asked on this socket (see `forkserver.rs`).
    ForkServer(OwnedFd),
}

impl Child {
    /// Takes charge of `pid`, started at `started`; kills and reaps it if
    /// it cannot be watched.
    pub(crate) fn adopt(pid: i32, started: Instant) -> Result<Self, Error> {
        match sys::pidfd_open(pid) {
            Ok(pidfd) => Ok(Self {
                pid,
                pidfd: Some(pidfd),
                reaped: false,
                started,
                reaper: Reaper::Us,
            }),
            // Our own unreaped child always exists, even as a zombie: it was
            // reaped already by a host that ignores SIGCHLD or reaps with
            // waitpid(-1). Its reply may still be complete.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(Self {
                pid,
                pidfd: None,
                reaped: true,
                started,
                reaper: Reaper::Us,
            }),
            Err(e) => {
                // Not reaped by us, so the pid (and group id) is still the child's.
                sys::kill_group(pid);
                sys::kill_one(pid);
                let _ = sys::reap(pid);
                Err(Error::spawn("watch the child process (pidfd_open)", e))
            }
        }
    }

    /// Takes charge of `pid`, a child of the fork server, which keeps it
    /// unreaped (so its pid cannot be reused) until asked on `status`.
    pub(crate) fn adopt_from_server(
        pid: i32,
        started: Instant,
        status: OwnedFd,
    ) -> Result<Self, Error> {
        // On failure `status` is dropped, and the server kills and reaps it.
        let pidfd = sys::pidfd_open(pid)
            .map_err(|e| Error::spawn("watch the child process (pidfd_open)", e))?;
        Ok(Self {
            pid,
            pidfd: Some(pidfd),
            reaped: false,
            started,
            reaper: Reaper::ForkServer(status),
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid.cast_unsigned()
    }

    /// Readable once the child has exited; `None` if it was gone before it
    /// could be opened.
    pub(crate) fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_ref().map(AsFd::as_fd)
    }

    /// SIGKILLs the child's process group (grandchildren included), then
    /// SIGCONTs it, as nsjail does, so a stopped member cannot linger.
    pub(crate) fn kill_group(&self) {
        let Some(pidfd) = &self.pidfd else { return };
        for signal in [libc::SIGKILL, libc::SIGCONT] {
            match sys::pidfd_signal(pidfd.as_fd(), signal, true) {
                // A kernel before 6.9: by number, but only while the
                // unreaped child pins its pid as the group id.
                Err(e)
                    if e.raw_os_error() == Some(libc::EINVAL)
                        && sys::still_unreaped(pidfd.as_fd()) =>
                {
                    sys::signal_group(self.pid, signal);
                }
                _ => {}
            }
        }
    }

    /// SIGKILLs the child itself, should it have left its group.
    fn kill_one(&self) {
        if let Some(pidfd) = &self.pidfd {
            let _ = sys::pidfd_signal(pidfd.as_fd(), libc::SIGKILL, false);
        }
    }

    /// Reaps the child, killing what is left of its process group first.
    /// `None` when its exit status was taken by someone else.
    pub(crate) fn reap(&mut self) -> Result<Option<(i32, libc::rusage)>, Error> {
        if self.reaped {
            return Ok(None);
        }
        self.kill_group();
        if let Reaper::ForkServer(status) = &self.reaper {
            self.reaped = true;
            return crate::forkserver::collect_status(status.as_fd())
                .map(Some)
                .map_err(|e| {
                    Error::spawn("collect the child's exit status from the fork server", e)
                });
        }
        let Some(pidfd) = &self.pidfd else {
            return Ok(None);
        };
        let reaped = match sys::reap_pidfd(pidfd.as_fd()) {
            Ok(status) => Ok(Some(status)),
            Err(e) if e.raw_os_error() == Some(libc::ECHILD) => Ok(None),
            Err(e) => Err(Error::spawn("collect the child's exit status", e)),
        };
        self.reaped = true;
        reaped
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped
            && let Some(pidfd) = &self.pidfd
        {
            self.kill_group();
            self.kill_one();
            // A fork server's child is reaped by the server once `reaper`
            // (the status socket) closes.
            if matches!(self.reaper, Reaper::Us) {
                let _ = sys::reap_pidfd(pidfd.as_fd());
            }
        }
    }
}

/// Bytes still to send to the child on its socket.
#[derive(Debug)]
pub(crate) struct Outgoing<'a> {
    socket: Option<BorrowedFd<'a>>,
    data: &'a [u8],
}

impl<'a> Outgoing<'a> {
    pub(crate) fn none() -> Self {
        Self {
            socket: None,
            data: &[],
        }
    }

    /// `socket` must be non-blocking.
    pub(crate) fn new(socket: BorrowedFd<'a>, data: &'a [u8]) -> Self {
        Self {
            socket: Some(socket),
            data,
        }
    }

    fn pending(&self) -> Option<BorrowedFd<'a>> {
        self.socket.filter(|_| !self.data.is_empty())
    }

    /// Sends what the socket takes now. A child that stopped reading (it
    /// died) gets nothing more; its exit status will say why.
    fn send_some(&mut self) {
        let Some(socket) = self.socket else { return };
        while !self.data.is_empty() {
            match send(
                socket.as_raw_fd(),
                self.data,
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            ) {
                Ok(n) => self.data = &self.data[n..],
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return,
                Err(_) => self.data = &[],
            }
        }
    }
}

/// How the child ended, as the parent saw it.
#[derive(Debug)]
pub(crate) struct Exit {
    pub(crate) pid: u32,
    /// `None` when someone else took the exit status (FAULTS.md F6, F7).
    pub(crate) termination: Option<Termination>,
    /// The deadline passed and the parent killed the child.
    pub(crate) timed_out: bool,
    /// The reply was malformed, or over the limit, while it streamed in;
    /// the parent killed the child.
    pub(crate) bad_reply: Option<FrameError>,
    /// A progress message was malformed or did not decode; the parent
    /// killed the child (or it had exited).
    pub(crate) bad_progress: Option<Error>,
    /// From just before the start to the reaping.
    pub(crate) wall_time: Duration,
    pub(crate) usage: Option<Usage>,
    /// The end of the child's stderr.
    pub(crate) stderr: OutputTail,
}

/// Waits for `child` to exit (or kills it at `deadline`), sending `outgoing`,
/// draining `reply` and `output` and delivering `progress` meanwhile, then
/// reaps it and delivers the progress messages still in the pipe.
///
/// # Panics
///
/// A panic of the caller's progress callback continues once the child's
/// group is killed and the child reaped.
pub(crate) fn supervise(
    mut child: Child,
    deadline: Option<Instant>,
    reply: &mut ReplyChannel,
    mut outgoing: Outgoing<'_>,
    mut output: OutputRelay,
    mut progress: Option<&mut ProgressStream<'_>>,
) -> Result<Exit, Error> {
    let mut timed_out = false;
    let mut bad_reply = None;
    let mut bad_progress = None;
    let mut callback_panic = None;
    loop {
        // Checked here, not only on a poll that times out: a child that keeps
        // the pipe readable would otherwise outlive its deadline.
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            timed_out = true;
            child.kill_group();
            break;
        }
        let Some(pidfd) = &child.pidfd else {
            break; // it had exited before it could be watched
        };
        let reply_fd = reply.poll_fd().filter(|_| bad_reply.is_none());
        let out_fd = outgoing.pending();
        let progress_fd = progress
            .as_deref()
            .and_then(ProgressStream::poll_fd)
            .filter(|_| bad_progress.is_none());
        // On the stack: in the parent, a heap page written while the child
        // lives is a copy-on-write fault.
        let mut fds: SmallVec<[PollFd<'_>; 6]> =
            smallvec![PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        fds.extend(reply_fd.map(|fd| PollFd::new(fd, PollFlags::POLLIN)));
        fds.extend(out_fd.map(|fd| PollFd::new(fd, PollFlags::POLLOUT)));
        let progress_at = fds.len();
        fds.extend(progress_fd.map(|fd| PollFd::new(fd, PollFlags::POLLIN)));
        let first_output = fds.len();
        fds.extend(
            output
                .poll_fds()
                .map(|fd| PollFd::new(fd, PollFlags::POLLIN)),
        );
        let ready = match poll(&mut fds, remaining(deadline)) {
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::spawn("wait for the child process", e)),
        };
        if ready == 0 {
            continue; // the deadline passed: handled at the top
        }
        let is_ready = |fd: &PollFd<'_>| fd.any().unwrap_or(true);
        let exited = is_ready(&fds[0]);
        let reply_ready = reply_fd.is_some() && is_ready(&fds[1]);
        let out_ready = out_fd.is_some() && is_ready(&fds[progress_at - 1]);
        let progress_ready = progress_fd.is_some() && is_ready(&fds[progress_at]);
        let output_ready = fds[first_output..].iter().any(is_ready);
        drop(fds);
        if output_ready {
            output.relay_available();
        }
        if out_ready {
            outgoing.send_some();
        }
        if reply_ready && let Err(refusal) = reply.read_available() {
            bad_reply = Some(refusal);
            child.kill_group();
        }
        if progress_ready && let Some(stream) = progress.as_deref_mut() {
            let pid = child.pid();
            match catch_unwind(AssertUnwindSafe(|| stream.read_available(pid))) {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    bad_progress = Some(error);
                    child.kill_group();
                }
                Err(payload) => {
                    callback_panic = Some(payload);
                    child.kill_group();
                    break;
                }
            }
        }
        if exited {
            break;
        }
    }
    let status = child.reap();
    if let Some(payload) = callback_panic {
        resume_unwind(payload); // the child is dead and reaped (or left to its reaper)
    }
    let status = status?;
    // The child is gone: what is left in the pipe is all it sent.
    if bad_progress.is_none()
        && let Some(stream) = progress
        && let Err(error) = stream.drain(child.pid())
    {
        bad_progress = Some(error);
    }
    Ok(Exit {
        pid: child.pid(),
        termination: status.map(|(status, _)| Termination::from_wait_status(status)),
        timed_out,
        bad_reply,
        bad_progress,
        wall_time: child.started.elapsed(),
        usage: status.map(|(_, usage)| Usage::from_rusage(&usage)),
        stderr: output.finish(),
    })
}

/// What is left until `deadline`, for `poll`.
pub(crate) fn remaining(deadline: Option<Instant>) -> PollTimeout {
    let Some(deadline) = deadline else {
        return PollTimeout::NONE;
    };
    let left = deadline.saturating_duration_since(Instant::now());
    // Round up so the poll never wakes a hair early and spins.
    let millis = left.as_nanos().div_ceil(1_000_000);
    PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX)
}
