//! Watching a running child: completion comes from the process (its pidfd),
//! never from EOF alone, because a grandchild can hold the channel open
//! (DESIGN.md, mechanism 4). The reply pipe is drained and the request sent
//! while waiting, and the deadline is enforced with a process-group kill.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{MsgFlags, send};

use crate::backend::ReplyChannel;
use crate::error::Error;
use crate::outcome::Termination;
use crate::report::Usage;
use crate::stdio::{OutputRelay, OutputTail};
use crate::sys;

/// A started child that leads its own process group and is not reaped yet.
/// Dropping it kills the group and reaps the child, so an early return or a
/// panic in the parent leaves no zombie and no orphan.
#[derive(Debug)]
pub(crate) struct Child {
    pid: i32,
    pidfd: OwnedFd,
    reaped: bool,
    /// Just before the child was started.
    started: Instant,
}

impl Child {
    /// Takes charge of `pid`, started at `started`; kills and reaps it if
    /// it cannot be watched.
    pub(crate) fn adopt(pid: i32, started: Instant) -> Result<Self, Error> {
        match sys::pidfd_open(pid) {
            Ok(pidfd) => Ok(Self {
                pid,
                pidfd,
                reaped: false,
                started,
            }),
            Err(e) => {
                sys::kill_group(pid);
                sys::kill_one(pid);
                let _ = sys::reap(pid);
                Err(Error::spawn("watch the child process (pidfd_open)", e))
            }
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid.cast_unsigned()
    }

    /// Reaps the child, killing what is left of its process group first
    /// while the unreaped child still pins the group id (no pid reuse).
    fn reap(&mut self) -> Result<(i32, libc::rusage), Error> {
        sys::kill_group(self.pid);
        let reaped =
            sys::reap(self.pid).map_err(|e| Error::spawn("collect the child's exit status", e));
        self.reaped = true;
        reaped
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            sys::kill_group(self.pid);
            sys::kill_one(self.pid);
            let _ = sys::reap(self.pid);
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
    pub(crate) termination: Termination,
    /// The deadline passed and the parent killed the child.
    pub(crate) timed_out: bool,
    /// The reply was malformed while it streamed in; the parent killed the child.
    pub(crate) bad_reply: Option<String>,
    /// From just before the start to the reaping.
    pub(crate) wall_time: Duration,
    pub(crate) usage: Usage,
    /// The end of the child's stderr.
    pub(crate) stderr: OutputTail,
}

/// Waits for `child` to exit (or kills it at `deadline`), sending `outgoing`
/// and draining `reply` and `output` meanwhile, then reaps it.
pub(crate) fn supervise(
    mut child: Child,
    deadline: Option<Instant>,
    reply: &mut ReplyChannel,
    mut outgoing: Outgoing<'_>,
    mut output: OutputRelay,
) -> Result<Exit, Error> {
    let mut timed_out = false;
    let mut bad_reply = None;
    loop {
        // Checked here, not only on a poll that times out: a child that keeps
        // the pipe readable would otherwise outlive its deadline.
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            timed_out = true;
            sys::kill_group(child.pid);
            break;
        }
        let reply_fd = reply.poll_fd().filter(|_| bad_reply.is_none());
        let out_fd = outgoing.pending();
        let mut fds = vec![PollFd::new(child.pidfd.as_fd(), PollFlags::POLLIN)];
        fds.extend(reply_fd.map(|fd| PollFd::new(fd, PollFlags::POLLIN)));
        fds.extend(out_fd.map(|fd| PollFd::new(fd, PollFlags::POLLOUT)));
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
        let out_ready = out_fd.is_some() && is_ready(&fds[first_output - 1]);
        let output_ready = fds[first_output..].iter().any(is_ready);
        drop(fds);
        if output_ready {
            output.relay_available();
        }
        if out_ready {
            outgoing.send_some();
        }
        if reply_ready && let Err(message) = reply.read_available() {
            bad_reply = Some(message);
            sys::kill_group(child.pid);
        }
        if exited {
            break;
        }
    }
    let (status, usage) = child.reap()?;
    Ok(Exit {
        pid: child.pid(),
        termination: Termination::from_wait_status(status),
        timed_out,
        bad_reply,
        wall_time: child.started.elapsed(),
        usage: Usage::from_rusage(&usage),
        stderr: output.finish(),
    })
}

fn remaining(deadline: Option<Instant>) -> PollTimeout {
    let Some(deadline) = deadline else {
        return PollTimeout::NONE;
    };
    let left = deadline.saturating_duration_since(Instant::now());
    // Round up so the poll never wakes a hair early and spins.
    let millis = left.as_nanos().div_ceil(1_000_000);
    PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX)
}
