//! A worker's channel: where its requests go and its answers come from.
//!
//! A worker of this binary gets two pipes, one each way; a `RemoteWorker`'s
//! program gets one socket, its stdin (`PROTOCOL.md`). The socket that set
//! up a registered worker (its token, arena and set-up) is closed once the
//! worker has them.
//!
//! Why pipes: a round trip over two pipes costs half one over a Unix
//! socket (2.1 against 4.2 µs pinned to one CPU, `compare --only warm`),
//! and a reader asleep in `read` on a pipe is woken only by data (a pipe
//! has separate wait queues for its reader and its writer), so a worker
//! waits for its next request in `read`, with no `poll` first.
//!
//! Why the parent keeps the request pipe's read end too: a write to a pipe
//! whose readers are all gone raises SIGPIPE, which `write` cannot refuse
//! as `send` does with `MSG_NOSIGNAL`, and the host may not ignore it
//! (docs/FAULTS.md F11). With the parent as a reader, the pipe never loses
//! its last one. It also tells whether a worker that died took the request:
//! bytes still in the pipe were never read, so the call never ran.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::sys::socket::{MsgFlags, send};

use crate::sys;

/// The parent's ends of a worker's channel.
#[derive(Debug)]
pub(crate) struct Channel {
    /// Requests are written here (non-blocking).
    outgoing: OwnedFd,
    /// Answers, progress messages and fault records are read here
    /// (non-blocking).
    incoming: OwnedFd,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// A registered worker's two pipes; `unread` is the read end of the
    /// request pipe, never read.
    Pipes { unread: OwnedFd },
    /// A `RemoteWorker`'s socket: `outgoing` is a duplicate of `incoming`,
    /// so a wait for room to send and one for an answer can be on two
    /// descriptors, as they are for pipes.
    Socket,
}

/// The worker's ends of its two pipes, to send it.
#[derive(Debug)]
pub(crate) struct WorkerEnds {
    /// Where it reads requests (blocking).
    pub(crate) requests: OwnedFd,
    /// Where it writes everything it sends (blocking).
    pub(crate) answers: OwnedFd,
}

impl Channel {
    /// Two pipes: the parent's channel, and the worker's ends.
    ///
    /// # Errors
    ///
    /// What `pipe2` or `fcntl` reports.
    pub(crate) fn pipes() -> io::Result<(Self, WorkerEnds)> {
        let (request_read, request_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        let (answer_read, answer_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        // Only the parent's own ends: each end is its own open file, so the
        // worker's stay blocking.
        sys::set_nonblocking(&request_write)?;
        sys::set_nonblocking(&answer_read)?;
        let ends = WorkerEnds {
            requests: request_read.try_clone()?,
            answers: answer_write,
        };
        let channel = Self {
            outgoing: request_write,
            incoming: answer_read,
            kind: Kind::Pipes {
                unread: request_read,
            },
        };
        Ok((channel, ends))
    }

    /// A socket both ways.
    ///
    /// # Errors
    ///
    /// What `dup` or `fcntl` reports.
    pub(crate) fn socket(socket: OwnedFd) -> io::Result<Self> {
        sys::set_nonblocking(&socket)?;
        Ok(Self {
            outgoing: socket.try_clone()?,
            incoming: socket,
            kind: Kind::Socket,
        })
    }

    /// Sends what the channel takes now, never raising SIGPIPE.
    ///
    /// # Errors
    ///
    /// `EAGAIN` when it is full; for a socket, `EPIPE` or `ECONNRESET` once
    /// the worker is gone.
    pub(crate) fn send_some(&self, bytes: &[u8]) -> nix::Result<usize> {
        match self.kind {
            // The parent is a reader of this pipe itself: no SIGPIPE.
            Kind::Pipes { .. } => nix::unistd::write(&self.outgoing, bytes),
            Kind::Socket => {
                let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
                send(self.outgoing.as_raw_fd(), bytes, flags)
            }
        }
    }

    /// Where requests are written.
    pub(crate) fn outgoing(&self) -> BorrowedFd<'_> {
        self.outgoing.as_fd()
    }

    /// Where answers are read.
    pub(crate) fn incoming(&self) -> BorrowedFd<'_> {
        self.incoming.as_fd()
    }

    /// Whether the `sent` bytes of a request all still wait in the request
    /// pipe: the worker never read any of it, so the call never ran. Known
    /// only for pipes.
    pub(crate) fn untaken(&self, sent: usize) -> bool {
        match &self.kind {
            Kind::Pipes { unread } => {
                sent > 0 && sys::bytes_waiting(unread.as_fd()).is_ok_and(|waiting| waiting == sent)
            }
            Kind::Socket => false,
        }
    }
}
