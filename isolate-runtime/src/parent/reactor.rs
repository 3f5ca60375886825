//! The async driver's waits (feature `tokio`): descriptors lent to the
//! current tokio runtime's reactor for one wait, and the deadline's timer.
//! Used by awaited one-shot calls (through [`WatchSet`](super::watch_set))
//! and awaited pool calls.

use std::future::poll_fn;
use std::io;
use std::os::fd::BorrowedFd;
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use smallvec::SmallVec;
use tokio::io::Interest;

use crate::parent::supervise::Source;
use crate::sys::reactor::Registration;
use crate::vocabulary::error::Error;

/// Registered descriptors, each with what it stands for.
pub(crate) type Registered<'fd, T = Source> = SmallVec<[(Registration<'fd>, T); 6]>;

/// Whether a registered descriptor is waited on to write.
pub(crate) trait Watched: Copy {
    fn wants_write(self) -> bool;
}

impl Watched for Source {
    fn wants_write(self) -> bool {
        Source::wants_write(self)
    }
}

/// Registers `fd`, standing for `what`, with the current runtime's reactor
/// for as long as the borrow of `fd` lasts.
///
/// # Errors
///
/// The reactor refuses the descriptor.
pub(crate) fn lend<T: Watched>(
    fd: BorrowedFd<'_>,
    what: T,
) -> Result<(Registration<'_>, T), Error> {
    let interest = if what.wants_write() {
        Interest::WRITABLE
    } else {
        Interest::READABLE
    };
    crate::sys::reactor::register(fd, interest)
        .map(|fd| (fd, what))
        .map_err(|e| Error::spawn("watch the child process with tokio's reactor", e))
}

/// Whether the call is polled inside a tokio runtime, whose reactor and
/// timers it needs.
///
/// # Errors
///
/// No runtime is current.
pub(crate) fn check_runtime() -> Result<(), Error> {
    match tokio::runtime::Handle::try_current() {
        Ok(_) => Ok(()),
        Err(e) => Err(Error::spawn(
            "wait for the child process: an async isolated call must be awaited inside a \
             tokio runtime",
            io::Error::other(e),
        )),
    }
}

/// Waits until some of `registered` are ready (returned, once
/// deregistered) or `deadline` passes (nothing returned).
pub(crate) async fn wait<T: Watched>(
    registered: Registered<'_, T>,
    deadline: Option<Instant>,
) -> Result<SmallVec<[T; 6]>, Error> {
    let mut timer = pin!(deadline.map(|at| tokio::time::sleep_until(at.into())));
    poll_fn(|cx| {
        let mut ready = SmallVec::new();
        for (fd, source) in &registered {
            let polled = if source.wants_write() {
                fd.poll_write_ready(cx).map_ok(drop)
            } else {
                fd.poll_read_ready(cx).map_ok(drop)
            };
            match polled {
                Poll::Ready(Ok(())) => ready.push(*source),
                // The runtime is shutting down: its reactor will not wake us.
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(Err(Error::spawn(
                        "wait for the child process (tokio's runtime is shutting down)",
                        e,
                    )));
                }
                Poll::Pending => {}
            }
        }
        if !ready.is_empty() {
            return Poll::Ready(Ok(ready));
        }
        match timer.as_mut().as_pin_mut().map(|timer| timer.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Ok(SmallVec::new())),
            _ => Poll::Pending,
        }
    })
    .await
}

/// Waits, on the reactor, until the child behind `pidfd` has exited or
/// `grace` has passed. For a child the call killed, which may not die at
/// once (uninterruptible sleep, docs/FAULTS.md D7): its reaping then need
/// not wait on the runtime's thread.
pub(crate) async fn exit_within(pidfd: BorrowedFd<'_>, grace: Duration) {
    let Ok(registered) = lend(pidfd, Source::Exit) else {
        return; // the reaping waits instead, as a blocking call's does
    };
    let _ = wait(
        smallvec::smallvec![registered],
        Some(Instant::now() + grace),
    )
    .await;
}
