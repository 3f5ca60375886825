//! What a call waits on, registered once per worker in an epoll set: the
//! worker's pidfd, its channel and its output pipes.
//!
//! Why not `poll`: a poll of those four descriptors registers on four wait
//! queues and scans them twice on every call (once before sleeping, once
//! after the wake-up); `epoll_wait` on a set made once does neither. On the
//! project's VM, with parent and worker on one CPU, a raw 64-byte round
//! trip that waits in a poll of four such descriptors takes 11.1 µs, in
//! `epoll_wait` 9.9 µs; a warm call went from 15.0 to 12.6 µs (1.42x to
//! 1.19x its floor, BENCHMARKS.md "Warm workers").
//!
//! A pipe the relay closes at its end leaves the set by itself (the parent
//! holds its only descriptor). Waiting to send the rest of a large request
//! (`POLLOUT`) still goes through `poll`: it is rare, and the set stays
//! fixed.
//!
//! An awaited call lends tokio's reactor this one set (readable when any
//! of its descriptors is), not its four descriptors, and the set stays
//! registered while the calls come from one runtime: no `epoll_ctl` per
//! call. A blocking call takes it back first (its events must not wake a
//! runtime's thread); so does a call awaited on another runtime.

use std::os::fd::BorrowedFd;

use nix::errno::Errno;
use nix::poll::PollTimeout;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};

const EXITED: u64 = 0;
const CHANNEL: u64 = 1;
const OUTPUT: u64 = 2;

/// A worker's descriptors in one epoll set.
#[derive(Debug)]
pub(crate) struct Readiness {
    epoll: Set,
}

#[cfg(feature = "tokio")]
type Set = crate::sys::reactor::LendableEpoll;
#[cfg(not(feature = "tokio"))]
type Set = Epoll;

/// What one wait found.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Found {
    pub(crate) exited: bool,
    /// Data, the end of the channel, or an error on it.
    pub(crate) readable: bool,
    pub(crate) output: bool,
}

impl Found {
    /// Whether the wait found anything.
    #[cfg(feature = "tokio")]
    pub(crate) fn any(self) -> bool {
        self.exited || self.readable || self.output
    }
}

impl Readiness {
    pub(crate) fn new<'a>(
        pidfd: BorrowedFd<'_>,
        channel: BorrowedFd<'_>,
        output: impl Iterator<Item = BorrowedFd<'a>>,
    ) -> nix::Result<Self> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(pidfd, EpollEvent::new(EpollFlags::EPOLLIN, EXITED))?;
        epoll.add(channel, EpollEvent::new(EpollFlags::EPOLLIN, CHANNEL))?;
        for pipe in output {
            epoll.add(pipe, EpollEvent::new(EpollFlags::EPOLLIN, OUTPUT))?;
        }
        Ok(Self {
            epoll: Set::from(epoll),
        })
    }

    /// Registers the set with the current runtime's reactor unless it is
    /// registered there already; `true` when registered just now.
    ///
    /// # Errors
    ///
    /// No runtime is current, or the reactor refuses the set.
    #[cfg(feature = "tokio")]
    pub(crate) fn lend_to_current(&mut self) -> std::io::Result<bool> {
        self.epoll.lend_to_current()
    }

    /// The set's registration with a runtime's reactor, if it stands.
    #[cfg(feature = "tokio")]
    pub(crate) fn lent(&self) -> Option<&tokio::io::unix::AsyncFd<crate::sys::reactor::Lent>> {
        self.epoll.lent()
    }

    /// Takes the set back from the reactor it is registered with, if any.
    pub(crate) fn reclaim(&mut self) {
        #[cfg(feature = "tokio")]
        self.epoll.reclaim();
    }

    /// Waits until the worker exits, the channel is readable or output
    /// arrives, or `timeout`; an interrupted wait finds nothing.
    pub(crate) fn wait(&self, timeout: PollTimeout) -> nix::Result<Found> {
        let mut events = [EpollEvent::empty(); 4];
        let n = match self.epoll.wait(&mut events, timeout) {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(e) => return Err(e),
        };
        let mut found = Found::default();
        for event in &events[..n] {
            match event.data() {
                EXITED => found.exited = true,
                CHANNEL => found.readable = true, // IN, HUP or ERR: a read tells
                _ => found.output = true,
            }
        }
        Ok(found)
    }
}
