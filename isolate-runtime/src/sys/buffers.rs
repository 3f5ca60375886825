//! Buffers the size of a large argument or result: filled without
//! zero-filling first, into transparent huge pages (see
//! [`advise_huge_pages`] for why and what it costs).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Buffers at least this large are advised for transparent huge pages.
const HUGE_BUFFER: usize = 4 << 20;

/// The most a first read of a message allocates: under glibc's large-chunk
/// size (1 KiB). glibc serves a larger allocation only after merging and
/// sorting the free chunks its heap holds, which cost a warm call more
/// than the rare second read of a larger message. In a fork server's
/// child, and in a fork-mode parent while its child lives, each heap page
/// written that way is a copy-on-write fault too (six or seven per call in
/// the child with 4 KiB; two per call in the parent, ~2 µs each).
pub(crate) const SMALL_READ: usize = 1000;

/// `madvise(MADV_HUGEPAGE)` on the whole pages inside `buffer`, when it is
/// at least [`HUGE_BUFFER`] long. Faulting in a fresh buffer 4 KiB at a
/// time is most of the cost of filling it (64 MiB: ~50 ms of faults
/// against ~8 ms of copying on the project's VM); with the advice it takes
/// 2 MiB faults. Only pages wholly inside the buffer are advised, so no
/// other allocation shares them; where transparent huge pages are off the
/// advice does nothing, and an error (an older kernel) leaves the ordinary
/// pages.
fn advise_huge_pages(buffer: &mut [std::mem::MaybeUninit<u8>]) {
    const PAGE: usize = 4096; // the smallest page size; larger ones are multiples
    if buffer.len() < HUGE_BUFFER {
        return;
    }
    let base = buffer.as_mut_ptr();
    let start = base.addr().next_multiple_of(PAGE);
    let end = (base.addr() + buffer.len()) / PAGE * PAGE;
    if end > start {
        let first = base
            .wrapping_add(start - base.addr())
            .cast::<libc::c_void>();
        // SAFETY: [start, end) lies inside `buffer`, which we borrow
        // mutably, so no other allocation shares these pages; the advice
        // changes how they are backed, never their contents.
        let _ = unsafe { libc::madvise(first, end - start, libc::MADV_HUGEPAGE) };
    }
}

/// `bytes` copied into a fresh `Vec` of their exact size, in one piece,
/// into huge pages when large (see [`advise_huge_pages`]).
pub(crate) fn copy_to_fresh(bytes: &[u8]) -> Vec<u8> {
    let mut fresh = Vec::with_capacity(bytes.len());
    advise_huge_pages(fresh.spare_capacity_mut());
    fresh.extend_from_slice(bytes);
    fresh
}

/// Reads at least `least` and at most `most` more bytes onto the end of
/// `buf`, taking in each `read` whatever has arrived up to `most` (a
/// reader that owns every byte of `fd` gets several small messages in one
/// system call; `least == most` never reads past what it needs), into
/// huge pages when the room made for them is large. Retries on EINTR.
///
/// # Errors
///
/// The read failed, or `fd` ended first (`UnexpectedEof`).
pub(crate) fn read_onto(
    fd: BorrowedFd<'_>,
    buf: &mut Vec<u8>,
    least: usize,
    most: usize,
) -> io::Result<()> {
    buf.reserve_exact(most);
    advise_huge_pages(&mut buf.spare_capacity_mut()[..most]);
    let (end, limit) = (buf.len() + least, buf.len() + most);
    while buf.len() < end {
        let want = limit - buf.len();
        let spare = &mut buf.spare_capacity_mut()[..want];
        // SAFETY: `spare` is valid for writes of `want` bytes; read(2)
        // writes at most that many.
        let got = unsafe { libc::read(fd.as_raw_fd(), spare.as_mut_ptr().cast(), want) };
        match got {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            // SAFETY: the kernel initialised the first `got` spare bytes.
            n if n > 0 => unsafe { buf.set_len(buf.len() + n.cast_unsigned()) },
            _ => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
    Ok(())
}
