//! Descriptors lent to tokio's reactor (feature `tokio`).

use std::io;
use std::marker::PhantomData;
use std::ops::Deref;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

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
