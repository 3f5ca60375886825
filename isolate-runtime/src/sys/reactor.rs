//! Descriptors lent to tokio's reactor (feature `tokio`).

use std::io;
use std::marker::PhantomData;
use std::ops::Deref;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use nix::sys::epoll::Epoll;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// A borrowed descriptor registered with the current runtime's reactor for
/// as long as the borrow lasts. Dropping it deregisters the descriptor and
/// closes nothing.
#[derive(Debug)]
pub(crate) struct Registration<'fd> {
    registered: AsyncFd<Lent>,
    borrow: PhantomData<BorrowedFd<'fd>>,
}

/// The raw number of a descriptor someone else owns.
#[derive(Debug)]
pub(crate) struct Lent(RawFd);

impl AsRawFd for Lent {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Registers `fd` for `interest` with the current tokio runtime's reactor.
///
/// # Errors
///
/// No runtime is current, or the reactor refuses the descriptor.
pub(crate) fn register(fd: BorrowedFd<'_>, interest: Interest) -> io::Result<Registration<'_>> {
    // SAFETY: the registration holds the borrow of `fd`, so the descriptor
    // stays open until it is dropped, and dropping it deregisters it.
    let registered = unsafe { AsyncFd::register_with_interest(Lent(fd.as_raw_fd()), interest) }?;
    Ok(Registration {
        registered,
        borrow: PhantomData,
    })
}

impl Deref for Registration<'_> {
    type Target = AsyncFd<Lent>;

    fn deref(&self) -> &AsyncFd<Lent> {
        &self.registered
    }
}

/// An epoll set registered with the current runtime's reactor, owned by the
/// registration: it stays open exactly as long as it is registered.
#[derive(Debug)]
pub(crate) struct EpollRegistration(AsyncFd<OwnedEpoll>);

/// An epoll set's descriptor, which never changes while it is owned.
#[derive(Debug)]
pub(crate) struct OwnedEpoll(Epoll);

impl AsRawFd for OwnedEpoll {
    fn as_raw_fd(&self) -> RawFd {
        self.0.0.as_raw_fd()
    }
}

/// Registers `epoll` (readable when a member is ready) with the current
/// tokio runtime's reactor, which then owns it.
///
/// # Errors
///
/// No runtime is current, or the reactor refuses the descriptor.
pub(crate) fn register_epoll(epoll: Epoll) -> io::Result<EpollRegistration> {
    // SAFETY: the registration owns the set, so its descriptor stays open
    // and the same until the registration is dropped.
    let registered =
        unsafe { AsyncFd::register_with_interest(OwnedEpoll(epoll), Interest::READABLE) }?;
    Ok(EpollRegistration(registered))
}

impl EpollRegistration {
    /// The set itself, to add and remove members.
    pub(crate) fn epoll(&self) -> &Epoll {
        &self.0.get_ref().0
    }
}

impl Deref for EpollRegistration {
    type Target = AsyncFd<OwnedEpoll>;

    fn deref(&self) -> &AsyncFd<OwnedEpoll> {
        &self.0
    }
}
