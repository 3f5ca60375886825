//! The handle on a started child: its pidfd, the kills of its process
//! group, and its reaping (by us, or by the fork server on request).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, poll};

use super::remaining;
use crate::parent::keeper;
use crate::sys;
use crate::vocabulary::error::Error;

/// How long the caller waits for a child it killed to die. Past that the
/// child is stuck in uninterruptible sleep (D state) or in a slow exit;
/// the keeper thread reaps it once it has died, and the caller's verdict
/// has no exit status or resource usage (docs/FAULTS.md D7).
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(1);

/// A started child that leads its own process group and is not reaped yet.
/// Dropping it kills the group and reaps the child, so an early return or a
/// panic in the parent leaves no zombie and no orphan.
///
/// Every signal goes through the pidfd, which names the process and not its
/// number, so a kill can never reach a process that reused the pid after the
/// child was reaped, by us or by someone else (docs/FAULTS.md F5).
#[derive(Debug)]
pub(crate) struct Child {
    pid: i32,
    /// `None` when the child had already exited and been reaped by someone
    /// else before it could be opened (docs/FAULTS.md F6, F7).
    pidfd: Option<OwnedFd>,
    reaped: bool,
    /// Just before the child was started.
    started: Instant,
    /// Who collects the exit status.
    reaper: Reaper,
    /// We killed it (its deadline, a bad reply): it may not have died yet
    /// when it is reaped.
    killed: bool,
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
                killed: false,
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
                killed: false,
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
            killed: false,
        })
    }

    /// Just before the child was started.
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid.cast_unsigned()
    }

    /// Readable once the child has exited; `None` if it was gone before it
    /// could be opened.
    pub(crate) fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_ref().map(AsFd::as_fd)
    }

    /// Whether the child has exited within `wait` (its pidfd readable);
    /// `true` when there is nothing to wait for.
    pub(crate) fn has_exited_within(&self, wait: Duration) -> bool {
        let Some(pidfd) = &self.pidfd else {
            return true;
        };
        let deadline = Instant::now() + wait;
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        loop {
            match poll(&mut fds, remaining(Some(deadline))) {
                Ok(ready) => return ready > 0,
                Err(Errno::EINTR) if Instant::now() < deadline => {}
                // Cannot tell: reaping (blocking) says.
                Err(_) => return true,
            }
        }
    }

    /// SIGKILLs the child's process group (grandchildren included), then
    /// SIGCONTs it, as nsjail does, so a stopped member cannot linger.
    pub(crate) fn kill_group(&mut self) {
        self.killed = true;
        self.signal_group();
    }

    /// [`kill_group`](Self::kill_group)'s signals, for what is left of the
    /// group of a child that exited.
    fn signal_group(&self) {
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

    /// The pidfd of a child we killed that has not died yet, to wait on.
    #[cfg(feature = "tokio")]
    pub(crate) fn killed_and_alive(&self) -> Option<BorrowedFd<'_>> {
        let alive = self.killed && !self.reaped && !self.has_exited_within(Duration::ZERO);
        alive.then(|| self.pidfd()).flatten()
    }

    /// Reaps the child, killing what is left of its process group first.
    /// `None` when its exit status was taken by someone else, or when we
    /// killed it and it has not died within `grace` (the keeper reaps it
    /// later). A blocking call's `grace` is [`KILL_GRACE`]; an awaited
    /// call waits for the death on the reactor first, then not at all.
    pub(crate) fn reap_within(
        &mut self,
        grace: Duration,
    ) -> Result<Option<(i32, libc::rusage)>, Error> {
        if self.reaped {
            return Ok(None);
        }
        self.signal_group();
        if self.killed && !self.has_exited_within(grace) {
            self.reap_later();
            return Ok(None);
        }
        if let Reaper::ForkServer(status) = &self.reaper {
            self.reaped = true;
            return crate::wire::forkserver::collect_status(status.as_fd())
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

    /// Hands the child, killed and not dead yet, to the keeper thread,
    /// which reaps it once it has died; this handle is done with it.
    fn reap_later(&mut self) {
        let rest = Self {
            pid: self.pid,
            pidfd: self.pidfd.take(),
            reaped: false,
            started: self.started,
            reaper: std::mem::replace(&mut self.reaper, Reaper::Us),
            killed: true,
        };
        self.reaped = true;
        keeper::reap_when_dead(rest);
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.reaped || self.pidfd.is_none() {
            return;
        }
        self.kill_group();
        self.kill_one();
        if !self.has_exited_within(KILL_GRACE) {
            self.reap_later();
            return;
        }
        if let Some(pidfd) = &self.pidfd {
            match &self.reaper {
                Reaper::Us => {
                    let _ = sys::reap_pidfd(pidfd.as_fd());
                }
                // Reaped by the server when asked: ask, and wait for it (a
                // bounded while, should the server be stopped), so that the
                // drop leaves no zombie behind, as for a child of ours.
                Reaper::ForkServer(status) => {
                    let _ = nix::sys::socket::setsockopt(
                        status,
                        nix::sys::socket::sockopt::ReceiveTimeout,
                        &nix::sys::time::TimeVal::new(SERVER_REAP_WAIT_SECS, 0),
                    );
                    let _ = crate::wire::forkserver::collect_status(status.as_fd());
                }
            }
        }
    }
}

/// How long a dropped fork-server child's handle waits for the server to
/// reap it; past that the server reaps it when it gets to it.
const SERVER_REAP_WAIT_SECS: libc::time_t = 2;
