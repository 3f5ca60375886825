//! Descriptors known only by number: a child's reply and progress
//! descriptors, which code with no handle to pass them (the panic hook, a
//! thread the user's function started) writes to, and the channel a
//! re-executed child inherits.

use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::fcntl::{FcntlArg, fcntl};

/// A process-wide slot holding a descriptor's number, or none.
///
/// The runtime sets a slot only to a descriptor the process keeps open
/// until it leaves (a child's reply channel or progress descriptor, which
/// nothing closes before `_exit`), and empties it before such a descriptor
/// could close (a worker between calls keeps its socket). That is what
/// makes [`get`](Self::get)'s `'static` borrow hold.
#[derive(Debug)]
pub(crate) struct FdSlot(AtomicI32);

impl FdSlot {
    pub(crate) const fn empty() -> Self {
        Self(AtomicI32::new(-1))
    }

    /// Holds `fd` from now on; -1 empties the slot.
    #[inline]
    pub(crate) fn set(&self, fd: RawFd) {
        self.0.store(fd, Ordering::Relaxed);
    }

    /// The number held, -1 for none.
    #[inline]
    pub(crate) fn raw(&self) -> RawFd {
        self.0.load(Ordering::Relaxed)
    }

    /// The descriptor held, if any.
    #[inline]
    pub(crate) fn get(&self) -> Option<BorrowedFd<'static>> {
        let fd = self.raw();
        // SAFETY: a slot holds only a descriptor that stays open for the
        // rest of the process (the type's contract, kept by its setters).
        (fd >= 0).then(|| unsafe { BorrowedFd::borrow_raw(fd) })
    }
}

/// The descriptor a re-executed child's parent named in its marker, after
/// checking that it is open. Nothing in this process opened it, so nothing
/// else here owns or closes it; the caller duplicates it before its number
/// is reused.
///
/// # Errors
///
/// `EBADF` when no descriptor has that number.
pub(crate) fn inherited_fd(fd: RawFd) -> io::Result<BorrowedFd<'static>> {
    // SAFETY: `F_GETFD` only asks whether the number is open; it touches
    // no descriptor's state.
    fcntl(unsafe { BorrowedFd::borrow_raw(fd) }, FcntlArg::F_GETFD)?;
    // SAFETY: open (checked above) and inherited, so no code in this
    // process closes it (the contract above).
    Ok(unsafe { BorrowedFd::borrow_raw(fd) })
}
