//! Thin wrappers over the Linux calls the runtime makes, and with the fault
//! handler (`child/fault.rs`) the only home of its `unsafe`: processes and
//! `fork` (`process.rs`), large buffers (`buffers.rs`), memory maps
//! (`mmap.rs`), descriptors known only by number (`fd_slot.rs`), tokio's
//! reactor (`reactor.rs`), the fork gate, and descriptors and signals
//! here. Each safe wrapper states the rule that makes it sound. Linux only.
//!
//! Functions marked "async-signal-safe" make raw syscalls only and allocate
//! nothing, so a child forked from a multi-threaded parent may call them.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::signal::{SigHandler, Signal};
use smallvec::SmallVec;

mod buffers;
mod fd_slot;
pub(crate) mod fork_gate;
mod mmap;
mod process;
#[cfg(feature = "tokio")]
pub(crate) mod reactor;

pub(crate) use buffers::{SMALL_READ, copy_to_fresh, read_onto};
pub(crate) use fd_slot::{FdSlot, inherited_fd};
pub(crate) use mmap::{map_arena, map_sealed};
pub(crate) use process::*;

/// Closes every descriptor from 3 up, except those in `keep`.
/// Async-signal-safe (raw close_range).
#[inline]
pub(crate) fn close_fds_except(keep: &mut [RawFd]) {
    keep.sort_unstable();
    let mut first: u32 = 3;
    for &fd in keep.iter() {
        let Ok(fd) = u32::try_from(fd) else { continue };
        if fd >= first {
            if fd > first {
                close_range(first, fd - 1);
            }
            first = fd + 1;
        }
    }
    close_range(first, u32::MAX);
}

#[inline]
fn close_range(first: u32, last: u32) {
    // SAFETY: raw syscall with integer arguments; the caller gave up these fds.
    unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
}

/// Gives the child the signal state an exec'd process would have: an empty
/// mask and default actions for caught signals, real-time ones included.
/// Ignored signals stay ignored (exec keeps them), and std's SIGSEGV/SIGBUS
/// stack-overflow handler stays. glibc's internal signals (32, 33) are its
/// own and refuse changes. Async-signal-safe (sigaction, sigprocmask).
#[inline]
pub(crate) fn reset_signal_state() {
    unblock_all_signals();
    for signal in 1..=libc::SIGRTMAX() {
        if matches!(
            signal,
            libc::SIGKILL | libc::SIGSTOP | libc::SIGSEGV | libc::SIGBUS
        ) {
            continue;
        }
        // SAFETY: a query (null new action) changes nothing.
        let current = unsafe { query_handler(signal) };
        if current != libc::SIG_DFL && current != libc::SIG_IGN {
            // SAFETY: installing SIG_DFL runs no code of ours in signal context.
            unsafe { set_default(signal) };
        }
    }
}

/// Empties the calling thread's signal mask. A re-executed child needs it
/// too: exec keeps the mask, and std's `Command` leaves it as the spawning
/// thread had it. Async-signal-safe: the raw syscall, which in a forked
/// child also spares the page faults of libc's and nix's wrappers.
#[inline]
pub(crate) fn unblock_all_signals() {
    let empty: u64 = 0;
    // SAFETY: raw syscall; `empty` is a valid kernel sigset of the size
    // given (8 bytes on Linux), and the old-mask pointer is null.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &raw const empty,
            std::ptr::null_mut::<u64>(),
            size_of::<u64>(),
        )
    };
}

/// # Safety
///
/// Always safe in practice: a null new action only reads the disposition.
#[inline]
unsafe fn query_handler(signal: i32) -> libc::sighandler_t {
    // SAFETY: sigaction with a null `act` only fills `old`; an invalid
    // signal leaves it zeroed (SIG_DFL).
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &raw mut old);
        old.sa_sigaction
    }
}

/// # Safety
///
/// Changes a process-wide disposition: only for a child that owns its
/// signal state.
#[inline]
unsafe fn set_default(signal: i32) {
    // SAFETY: an all-zero sigaction with SIG_DFL and an empty mask is valid.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(signal, &raw const action, std::ptr::null_mut());
    }
}

/// Ignores SIGPIPE, as every Rust `main` does, so the child behaves as the
/// function would in-process.
pub(crate) fn ignore_sigpipe() {
    // SAFETY: SIG_IGN runs no code.
    let _ = unsafe { nix::sys::signal::signal(Signal::SIGPIPE, SigHandler::SigIgn) };
}

/// Restores SIGCHLD's default action, so that this process's children stay
/// for it to reap: a fork server whose caller ignores SIGCHLD inherited
/// that across `exec`, and the kernel would reap its children, status and
/// all, before it could report them.
pub(crate) fn default_sigchld() {
    // SAFETY: SIG_DFL runs no code.
    let _ = unsafe { nix::sys::signal::signal(Signal::SIGCHLD, SigHandler::SigDfl) };
}

/// Whether the kernel marked this exec as secure (setuid, setcap, LSM).
pub(crate) fn is_secure_exec() -> bool {
    // SAFETY: getauxval only reads the auxiliary vector.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

/// Duplicates `fd` onto descriptor `target` (nothing to do when it is
/// already there, as with dup2). Async-signal-safe: the raw syscall.
#[inline]
pub(crate) fn dup_onto(fd: BorrowedFd<'_>, target: RawFd) -> io::Result<()> {
    if fd.as_raw_fd() == target {
        return Ok(());
    }
    // SAFETY: dup3 on a valid fd; the caller owns `target`'s slot.
    let ret = unsafe { libc::syscall(libc::SYS_dup3, fd.as_raw_fd(), target, 0) };
    Errno::result(ret)?;
    Ok(())
}

/// Writes `parts` one after the other with `writev`, as many at a time as
/// the descriptor takes, retrying on EINTR. Async-signal-safe (the raw
/// syscall: in a forked child, libc's wrapper would be one more page
/// fault).
pub(crate) fn write_all_vectored(fd: BorrowedFd<'_>, parts: &mut [&[u8]]) -> io::Result<()> {
    let mut parts = &mut parts[..];
    loop {
        while parts.first().is_some_and(|part| part.is_empty()) {
            parts = &mut parts[1..];
        }
        if parts.is_empty() {
            return Ok(());
        }
        let count = parts.len().min(8);
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; 8];
        for (slot, part) in iov.iter_mut().zip(parts.iter()) {
            slot.iov_base = part.as_ptr().cast_mut().cast();
            slot.iov_len = part.len();
        }
        // SAFETY: the first `count` iovecs point into live slices of the
        // lengths given; writev only reads them.
        let ret = unsafe { libc::syscall(libc::SYS_writev, fd.as_raw_fd(), iov.as_ptr(), count) };
        match ret {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n if n > 0 => advance(&mut parts, n.cast_unsigned() as usize),
            _ if Errno::last() == Errno::EINTR => {}
            _ => return Err(io::Error::last_os_error()),
        }
    }
}

/// Drops the first `written` bytes from `parts`.
fn advance(parts: &mut &mut [&[u8]], mut written: usize) {
    while written > 0 {
        let first = &mut parts[0];
        let step = written.min(first.len());
        *first = &first[step..];
        written -= step;
        if first.is_empty() {
            *parts = &mut std::mem::take(parts)[1..];
        }
    }
}

/// Writes all of `bytes`, retrying on EINTR. Async-signal-safe.
pub(crate) fn write_all(fd: BorrowedFd<'_>, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match nix::unistd::write(fd, bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The kernel's Landlock ABI version (`landlock_create_ruleset` with the
/// VERSION flag), `None` when Landlock is absent or disabled.
pub(crate) fn landlock_abi() -> Option<i32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attribute pointer, size 0 and the VERSION flag the
    // call only returns a number; it touches no memory.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    i32::try_from(abi).ok().filter(|&abi| abi > 0)
}

/// `value` as a `B` when `A` and `B` are the same type (equal type ids),
/// `None` otherwise: how a generic caller takes a type's fast path (a
/// `Vec<u8>` as one `bin` object) where serde's traits cannot be
/// specialized. Type ids ignore lifetimes, so a caller keeps the result
/// within `value`'s own lifetimes.
pub(crate) fn same_type<A, B>(value: A) -> Option<B> {
    if typeid::of::<A>() != typeid::of::<B>() {
        return None;
    }
    let value = std::mem::ManuallyDrop::new(value);
    // SAFETY: `A` and `B` are one type but for lifetimes (equal ids), so
    // they have one layout; `value` is never dropped, so its bits move
    // exactly once.
    Some(unsafe { std::mem::transmute_copy::<std::mem::ManuallyDrop<A>, B>(&value) })
}

/// Receives one message into `buf`, with up to `N` descriptors passed as
/// `SCM_RIGHTS` (made close-on-exec), retrying on EINTR: the bytes
/// received and the descriptors, owned.
///
/// Nothing on the heap (nix's `recvmsg` allocates the control buffer and
/// each descriptor list): the fork server receives every request here
/// right after a fork, when each heap page written is a copy-on-write
/// fault.
///
/// # Errors
///
/// What `recvmsg` reports.
pub(crate) fn recv_with_fds<const N: usize>(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
) -> nix::Result<(usize, SmallVec<[OwnedFd; N]>)> {
    /// Room for the control messages, aligned as `cmsghdr` is.
    #[repr(C, align(8))]
    struct Control([u8; 256]);
    let mut control = Control([0; 256]);
    let fd_bytes = u32::try_from(N * size_of::<RawFd>()).unwrap_or(u32::MAX);
    // SAFETY: arithmetic only.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes) } as usize;
    assert!(space <= control.0.len(), "no room for {N} descriptors");
    // The length of exactly `N` descriptors' message: the kernel passes no
    // more than fit (the aligned space could take one more).
    // SAFETY: arithmetic only.
    let room = unsafe { libc::CMSG_LEN(fd_bytes) } as usize;
    loop {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: an all-zero `msghdr` is a valid empty one.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = room;
        // SAFETY: `msg` points at `iov` (valid for `buf.len()` bytes) and at
        // `control` (valid for `room` bytes), both alive for the call.
        let received =
            unsafe { libc::recvmsg(socket.as_raw_fd(), &raw mut msg, libc::MSG_CMSG_CLOEXEC) };
        let Ok(received) = usize::try_from(received) else {
            match Errno::last() {
                Errno::EINTR => continue,
                e => return Err(e),
            }
        };
        let mut fds = SmallVec::new();
        // SAFETY: the kernel filled `msg_controllen` bytes of `control`
        // with well-formed headers; each pointer stays inside it.
        let mut header = unsafe { libc::CMSG_FIRSTHDR(&raw const msg) };
        while !header.is_null() {
            // SAFETY: a header inside `control` (see above).
            let (level, kind, len) = unsafe {
                (
                    (*header).cmsg_level,
                    (*header).cmsg_type,
                    (*header).cmsg_len,
                )
            };
            if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
                // SAFETY: as above; the data follows its header.
                let data = unsafe { libc::CMSG_DATA(header) };
                let data_len = len - (data as usize - header as usize);
                for index in 0..data_len / size_of::<RawFd>() {
                    // SAFETY: inside the message's data; it may be unaligned.
                    let fd = unsafe { data.cast::<RawFd>().add(index).read_unaligned() };
                    // SAFETY: SCM_RIGHTS installed this descriptor in our
                    // table just now; nothing else owns it.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
            // SAFETY: `header` is one of `msg`'s (see above).
            header = unsafe { libc::CMSG_NXTHDR(&raw const msg, header) };
        }
        return Ok((received, fds));
    }
}

/// Reads exactly `buf.len()` bytes, retrying on EINTR.
pub(crate) fn read_exact(fd: BorrowedFd<'_>, mut buf: &mut [u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match nix::unistd::read(fd, buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => buf = &mut buf[n..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Puts a fresh pipe or socket end (one with no other file status flag
/// set: no `O_APPEND`, `O_ASYNC`, `O_DIRECT`, `O_NOATIME`) into
/// non-blocking mode, with one `fcntl` (no `F_GETFL` first).
pub(crate) fn set_nonblocking(fd: impl AsFd) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    fcntl(fd.as_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Removes the descriptor numbered `fd` from the epoll set `epoll`. The
/// number may be closed already (it then left the set by itself, and this
/// fails with `EBADF`), or reused by a file that is not in the set
/// (`ENOENT`): only the set is looked at, never the file.
#[cfg(feature = "tokio")]
pub(crate) fn epoll_remove(epoll: BorrowedFd<'_>, fd: RawFd) -> io::Result<()> {
    // SAFETY: EPOLL_CTL_DEL ignores the event pointer (null is allowed
    // since Linux 2.6.9) and touches no memory of ours.
    let status = unsafe {
        libc::epoll_ctl(
            epoll.as_raw_fd(),
            libc::EPOLL_CTL_DEL,
            fd,
            std::ptr::null_mut(),
        )
    };
    if status < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How many bytes are waiting to be read on a socket or pipe (`FIONREAD`).
pub(crate) fn bytes_waiting(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut waiting: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which is valid.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &raw mut waiting) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(waiting).unwrap_or(0))
}

/// Reads once into `buf`'s spare capacity (growing it by at least
/// `min_spare` first), without zero-filling. Retries on EINTR; `Ok(0)` is
/// end of file.
pub(crate) fn read_into_spare(
    fd: BorrowedFd<'_>,
    buf: &mut Vec<u8>,
    min_spare: usize,
) -> io::Result<usize> {
    if buf.capacity() - buf.len() < min_spare {
        buf.reserve(min_spare);
    }
    let spare = buf.spare_capacity_mut();
    loop {
        // SAFETY: `spare` is valid for writes of `spare.len()` bytes; read(2)
        // writes at most that many.
        let n = unsafe { libc::read(fd.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len()) };
        if n >= 0 {
            let n = n.cast_unsigned();
            // SAFETY: the kernel initialised the first `n` spare bytes.
            unsafe { buf.set_len(buf.len() + n) };
            return Ok(n);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    /// Descriptors passed with a message arrive owned, close-on-exec and
    /// naming the same files; more than `N` are cut off (the kernel closes
    /// the rest), and the bytes arrive either way.
    #[test]
    fn descriptors_received_with_a_message_name_the_files_sent() {
        use nix::sys::socket::{
            AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, sendmsg, socketpair,
        };
        use nix::sys::stat::fstat;
        let (sender, receiver) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let (read_end, write_end) = nix::unistd::pipe().unwrap();
        let identity = |fd: BorrowedFd<'_>| {
            let stat = fstat(fd).unwrap();
            (stat.st_dev, stat.st_ino)
        };
        let passed = [read_end.as_raw_fd(), write_end.as_raw_fd()];
        for (room, expected) in [(3usize, 2usize), (1, 1)] {
            let sent = sendmsg::<()>(
                sender.as_raw_fd(),
                &[io::IoSlice::new(b"hello")],
                &[ControlMessage::ScmRights(&passed)],
                MsgFlags::empty(),
                None,
            )
            .unwrap();
            assert_eq!(sent, 5);
            fn receive<const N: usize>(socket: BorrowedFd<'_>) -> ([u8; 5], usize, Vec<OwnedFd>) {
                let mut bytes = [0u8; 5];
                let (len, fds) = recv_with_fds::<N>(socket, &mut bytes).unwrap();
                (bytes, len, fds.into_vec())
            }
            let (bytes, len, fds) = if room == 3 {
                receive::<3>(receiver.as_fd())
            } else {
                receive::<1>(receiver.as_fd())
            };
            assert_eq!((len, &bytes), (5, b"hello"));
            assert_eq!(fds.len(), expected);
            for (fd, original) in fds.iter().zip([&read_end, &write_end]) {
                assert_eq!(identity(fd.as_fd()), identity(original.as_fd()));
                let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).unwrap();
                assert_ne!(flags & libc::FD_CLOEXEC, 0, "close-on-exec");
            }
        }
    }

    /// Parts larger than a pipe holds go out in several `writev`s, each
    /// resuming mid-part, and arrive whole and in order.
    #[test]
    fn vectored_writes_resume_where_the_pipe_stopped() {
        let (reader, writer) = nix::unistd::pipe().unwrap();
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let drain = std::thread::spawn(move || {
            let mut all = Vec::new();
            std::fs::File::from(reader).read_to_end(&mut all).unwrap();
            all
        });
        write_all_vectored(writer.as_fd(), &mut [b"head", &[], &big, b"", b"tail"]).unwrap();
        drop(writer);
        let all = drain.join().unwrap();
        let mut expected = b"head".to_vec();
        expected.extend_from_slice(&big);
        expected.extend_from_slice(b"tail");
        assert_eq!(all.len(), expected.len());
        assert!(all == expected, "the bytes arrived out of order");
    }

    #[test]
    fn vectored_writes_of_nothing_write_nothing() {
        let (reader, writer) = nix::unistd::pipe().unwrap();
        write_all_vectored(writer.as_fd(), &mut [&[], &[]]).unwrap();
        drop(writer);
        let mut all = Vec::new();
        std::fs::File::from(reader).read_to_end(&mut all).unwrap();
        assert!(all.is_empty());
    }

    #[test]
    fn a_vectored_write_to_a_closed_pipe_is_an_error() {
        let (reader, writer) = nix::unistd::pipe().unwrap();
        drop(reader);
        // SIGPIPE is ignored in Rust programs, so the write fails with EPIPE.
        let error = write_all_vectored(writer.as_fd(), &mut [b"lost"]).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::EPIPE));
    }
}
