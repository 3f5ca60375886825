//! Descriptors lent to tokio's reactor (feature `tokio`).

use std::io;
use std::marker::PhantomData;
use std::ops::Deref;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use nix::sys::epoll::Epoll;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::runtime::{Handle, Id};

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

/// An epoll set that stays registered with the reactor of the runtime that
/// last awaited it, across waits: a pool worker's set, awaited call after
/// call on one runtime, costs no `epoll_ctl` per call. Dereferences to the
/// set, for blocking waits.
#[derive(Debug)]
pub(crate) struct LendableEpoll {
    // Declared before `epoll`: deregistered before the set is closed.
    lent: Option<(Id, AsyncFd<Lent>)>,
    epoll: Epoll,
}

impl From<Epoll> for LendableEpoll {
    fn from(epoll: Epoll) -> Self {
        Self { lent: None, epoll }
    }
}

impl Deref for LendableEpoll {
    type Target = Epoll;

    fn deref(&self) -> &Epoll {
        &self.epoll
    }
}

impl LendableEpoll {
    /// Registers the set with the current runtime's reactor, unless it is
    /// registered there already (then nothing is done, and `false` is
    /// returned). A registration with another runtime is removed first.
    ///
    /// # Errors
    ///
    /// No runtime is current, or the reactor refuses the set.
    pub(crate) fn lend_to_current(&mut self) -> io::Result<bool> {
        let runtime = Handle::try_current().map_err(io::Error::other)?.id();
        if matches!(&self.lent, Some((id, _)) if *id == runtime) {
            return Ok(false);
        }
        self.reclaim();
        // SAFETY: `lent` is dropped (deregistered) before `epoll` closes
        // the descriptor: by `reclaim`, or by the field order on drop.
        let registered = unsafe {
            AsyncFd::register_with_interest(Lent(self.epoll.0.as_raw_fd()), Interest::READABLE)
        }?;
        self.lent = Some((runtime, registered));
        Ok(true)
    }

    /// The registration made by [`Self::lend_to_current`], if it stands.
    pub(crate) fn lent(&self) -> Option<&AsyncFd<Lent>> {
        self.lent.as_ref().map(|(_, registered)| registered)
    }

    /// Removes the set from the reactor it is registered with, if any: a
    /// blocking wait must not wake a runtime's thread, and a runtime that
    /// was dropped must not be kept open by the registration.
    pub(crate) fn reclaim(&mut self) {
        self.lent = None;
    }
}
