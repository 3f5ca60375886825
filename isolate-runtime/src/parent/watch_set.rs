//! A call's watched descriptors in an epoll set of its own, lent to tokio's
//! reactor once per call (feature `tokio`; Linux only, as the crate).
//!
//! Why: registering each descriptor with the reactor for each wait, and
//! deregistering it before the engine acts (it may close a pipe at EOF),
//! costs an `epoll_ctl` add and delete per descriptor and wake-up: about
//! 50 per one-shot call, most of what awaiting added to a call beside the
//! child's runtime. Here the set follows the engine's watches with an add
//! or a delete only when they change, and tokio watches the set's own
//! descriptor, registered once. A descriptor the engine closes leaves the
//! set by itself; deleting one whose number was reused meanwhile finds
//! nothing in this private set (the reactor's own set is never touched).
//! Each member carries an id of its own, so an event left by a closed one
//! is never taken for a member that reused its number.

use std::future::poll_fn;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::task::Poll;
use std::time::Instant;

use crate::parent::reactor::{Watched, check_runtime};
use crate::sys;
use crate::sys::reactor::EpollRegistration;
use crate::vocabulary::error::Error;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use smallvec::SmallVec;

/// Descriptors standing for `T`s, watched through one registration.
#[derive(Debug)]
pub(crate) struct WatchSet<T> {
    /// The set, registered with the reactor once: readable when a member
    /// is ready.
    epoll: EpollRegistration,
    /// What each member stands for, its descriptor's number, and its id
    /// (the event's data).
    members: SmallVec<[(T, RawFd, u64); 6]>,
    next_id: u64,
}

impl<T: Watched + PartialEq> WatchSet<T> {
    pub(crate) fn new() -> Result<Self, Error> {
        check_runtime()?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .map_err(|e| Error::spawn("create the call's epoll set", io::Error::from(e)))?;
        let epoll = sys::reactor::register_epoll(epoll)
            .map_err(|e| Error::spawn("watch the call's epoll set with tokio's reactor", e))?;
        Ok(Self {
            epoll,
            members: SmallVec::new(),
            next_id: 0,
        })
    }

    /// Makes the set hold exactly `watches`.
    ///
    /// # Errors
    ///
    /// A descriptor the kernel refuses to watch.
    pub(crate) fn follow<'a>(
        &mut self,
        watches: impl IntoIterator<Item = (BorrowedFd<'a>, T)>,
    ) -> Result<(), Error> {
        let watches: SmallVec<[(BorrowedFd<'a>, T); 6]> = watches.into_iter().collect();
        let epoll = self.epoll.epoll();
        self.members.retain(|(what, fd, _)| {
            let kept = watches
                .iter()
                .any(|(watched, same)| watched.as_raw_fd() == *fd && same == what);
            if !kept {
                // Closed, it left by itself; a reused number is not in
                // this set: either way the error is nothing to act on.
                let _ = sys::epoll_remove(epoll.0.as_fd(), *fd);
            }
            kept
        });
        for (fd, what) in watches {
            let known = self
                .members
                .iter()
                .any(|(member, number, _)| *number == fd.as_raw_fd() && *member == what);
            if known {
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            let flags = if what.wants_write() {
                EpollFlags::EPOLLOUT
            } else {
                EpollFlags::EPOLLIN
            };
            self.epoll
                .epoll()
                .add(fd, EpollEvent::new(flags, id))
                .map_err(|e| Error::spawn("watch the child process", io::Error::from(e)))?;
            self.members.push((what, fd.as_raw_fd(), id));
        }
        Ok(())
    }

    /// Waits, on the reactor, until members are ready (returned) or
    /// `deadline` passes (nothing returned).
    ///
    /// # Errors
    ///
    /// The runtime is shutting down: its reactor will not wake us.
    pub(crate) async fn wait(&self, deadline: Option<Instant>) -> Result<SmallVec<[T; 6]>, Error> {
        let mut timer = std::pin::pin!(deadline.map(|at| tokio::time::sleep_until(at.into())));
        poll_fn(|cx| {
            loop {
                match self.epoll.poll_read_ready(cx) {
                    Poll::Ready(Ok(mut guard)) => {
                        let ready = self.ready_now();
                        if !ready.is_empty() {
                            return Poll::Ready(Ok(ready));
                        }
                        // Nothing left: wait for the next edge.
                        guard.clear_ready();
                    }
                    Poll::Ready(Err(e)) => {
                        return Poll::Ready(Err(Error::spawn(
                            "wait for the child process (tokio's runtime is shutting down)",
                            e,
                        )));
                    }
                    Poll::Pending => break,
                }
            }
            match timer.as_mut().as_pin_mut().map(|timer| timer.poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(Ok(SmallVec::new())),
                _ => Poll::Pending,
            }
        })
        .await
    }

    /// The members ready now, without waiting.
    fn ready_now(&self) -> SmallVec<[T; 6]> {
        let mut events = [EpollEvent::empty(); 8];
        let n = self
            .epoll
            .epoll()
            .wait(&mut events, EpollTimeout::ZERO)
            .unwrap_or(0);
        events[..n]
            .iter()
            .filter_map(|event| {
                let id = event.data();
                self.members
                    .iter()
                    .find(|(_, _, member)| *member == id)
                    .map(|(what, _, _)| *what)
            })
            .collect()
    }
}
