//! A child's side of progress: where its `Progress` writes, one whole
//! frame at a time.

use std::io;
use std::os::fd::RawFd;
use std::sync::{Mutex, PoisonError};

use crate::sys;
use crate::wire::{self, FrameKind};

/// Where a child's `Progress` writes; -1 when it has none (then messages
/// are dropped).
static PROGRESS_FD: sys::FdSlot = sys::FdSlot::empty();

/// Keeps the frames of threads that send at once apart.
static WRITE_LOCK: Mutex<()> = Mutex::new(());

/// Makes `fd` the descriptor this process's child-side `Progress` writes
/// to: a one-shot child's progress pipe, or a worker's answer pipe; -1 for
/// none.
/// A new child starts with none (`child::become_child`).
#[inline]
pub(crate) fn set_fd(fd: RawFd) {
    PROGRESS_FD.set(fd);
}

/// Holds back progress frames while a reply goes to `fd`, if progress goes
/// there too (a worker's answer pipe), so a thread still sending messages
/// cannot split the reply.
#[inline]
pub(crate) fn lock_if_shared(fd: RawFd) -> Option<std::sync::MutexGuard<'static, ()>> {
    (fd >= 0 && PROGRESS_FD.raw() == fd)
        .then(|| WRITE_LOCK.lock().unwrap_or_else(PoisonError::into_inner))
}

/// Writes one `Progress` frame carrying `payload` to the progress
/// descriptor, whole, even when several threads send at once. It carries
/// the id of the call the process is answering.
///
/// # Errors
///
/// The write failed (the caller is gone); nothing is written without a
/// progress descriptor.
pub(crate) fn send_frame(payload: &[u8]) -> io::Result<()> {
    let frame = wire::frame(FrameKind::Progress, crate::child::call_id(), payload);
    let _guard = WRITE_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(fd) = PROGRESS_FD.get() else {
        return Ok(());
    };
    sys::write_all(fd, &frame)
}
