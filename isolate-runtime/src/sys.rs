//! Thin wrappers over the Linux calls the runtime makes. With `fork.rs`,
//! the only home of `unsafe`. Linux only.
//!
//! Functions marked "async-signal-safe" make raw syscalls only and allocate
//! nothing, so a child forked from a multi-threaded parent may call them.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::signal::{SigHandler, Signal};

/// Leaves the process at once: no atexit handlers, no destructors, no
/// waiting for other threads. Async-signal-safe.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` is always safe to call; it never returns.
    unsafe { libc::_exit(code) }
}

/// `pidfd_open(2)`: a descriptor that becomes readable when `pid` exits.
pub(crate) fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: the kernel just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reaps `pid` (blocking), retrying on EINTR, and returns its raw wait status
/// and resource usage.
pub(crate) fn reap(pid: i32) -> io::Result<(i32, libc::rusage)> {
    let mut status = 0;
    // SAFETY: rusage is plain old data; all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers are valid for writes for the whole call.
        let ret = unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut usage) };
        if ret == pid {
            return Ok((status, usage));
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Reaps the child behind `pidfd` (blocking), retrying on EINTR, and
/// returns its wait status (in `waitpid`'s encoding) and resource usage.
///
/// By pidfd, not by number: once someone else reaped the child, its pid may
/// belong to another child of ours, which `wait4(pid)` would wait for and
/// reap instead (docs/FAULTS.md F5, F7). Then this fails with ECHILD.
pub(crate) fn reap_pidfd(pidfd: BorrowedFd<'_>) -> io::Result<(i32, libc::rusage)> {
    // SAFETY: both are plain old data; all-zero is a valid value.
    let (mut info, mut usage): (libc::siginfo_t, libc::rusage) =
        unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    loop {
        // SAFETY: the raw waitid syscall takes a fifth argument, the rusage
        // to fill; both pointers are valid for writes for the whole call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_waitid,
                libc::P_PIDFD,
                pidfd.as_raw_fd(),
                &raw mut info,
                libc::WEXITED,
                &raw mut usage,
            )
        };
        if ret == 0 {
            break;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    // SAFETY: waitid filled a SIGCHLD siginfo, whose status field is set.
    let status = unsafe { info.si_status() };
    let raw = match info.si_code {
        libc::CLD_EXITED => (status & 0xff) << 8,
        libc::CLD_DUMPED => (status & 0x7f) | 0x80,
        _ => status & 0x7f,
    };
    Ok((raw, usage))
}

/// Flushes C's stdio buffers (`printf` from FFI code): the child leaves with
/// `_exit`, which would drop them, and its stdout is a pipe, which C buffers
/// fully.
#[inline]
pub(crate) fn flush_c_stdio() {
    // SAFETY: fflush(NULL) flushes every open stream; glibc resets the stdio
    // locks in a forked child, so no lock of a vanished thread is waited on.
    unsafe { libc::fflush(std::ptr::null_mut()) };
}

unsafe extern "C" {
    static mut stdout: *mut libc::FILE;
    static mut stderr: *mut libc::FILE;
    /// glibc's and musl's `<stdio_ext.h>`; the `libc` crate has no binding.
    fn __fpurge(stream: *mut libc::FILE);
}

/// Discards what C's stdout and stderr held unwritten at the fork: it is
/// the parent's to write, and the child's flush before `_exit` would
/// print it a second time. Only stdout and stderr: a forked child cannot
/// tell the parent's other streams from ones it will open itself.
#[inline]
pub(crate) fn drop_inherited_c_stdio() {
    // SAFETY: in the freshly forked, single-threaded child nothing else uses
    // the streams; reading the two globals and purging their buffers only
    // moves glibc's buffer pointers.
    unsafe {
        __fpurge(stdout);
        __fpurge(stderr);
    }
}

/// Sends SIGKILL to every process in the group `pgid`. A group that is
/// already empty is not an error. Async-signal-safe.
pub(crate) fn kill_group(pgid: i32) {
    // SAFETY: plain syscall; a negative pid addresses the group.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
}

/// Sends `signal` to every process in the group `pgid`, by number: only
/// while the group's leader is unreaped, so the number is still its.
pub(crate) fn signal_group(pgid: i32, signal: i32) {
    // SAFETY: plain syscall; a negative pid addresses the group.
    unsafe { libc::kill(-pgid, signal) };
}

/// Sends SIGKILL to one process. The caller must not have reaped it yet, so
/// the pid cannot have been reused.
pub(crate) fn kill_one(pid: i32) {
    // SAFETY: plain syscall.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// `PIDFD_SIGNAL_PROCESS_GROUP` (Linux 6.9, `<linux/pidfd.h>`): signal the
/// process group that the pidfd's process leads.
const PIDFD_SIGNAL_PROCESS_GROUP: libc::c_uint = 1 << 2;

/// `pidfd_send_signal(2)`: sends `signal` to the process `pidfd` refers to,
/// or with `group` to every process in the group it leads. The pidfd names
/// the process itself, not its number: once the process is reaped this
/// fails with ESRCH instead of reaching a process that reused the pid
/// (docs/FAULTS.md F5).
pub(crate) fn pidfd_signal(pidfd: BorrowedFd<'_>, signal: i32, group: bool) -> io::Result<()> {
    let flags = if group { PIDFD_SIGNAL_PROCESS_GROUP } else { 0 };
    // SAFETY: raw syscall on a descriptor we borrow; a null siginfo asks the
    // kernel to fill in a plain kill(2)-style one.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            flags,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether the process behind `pidfd` (our child) is still ours to reap:
/// running, or a zombie that pins its pid. `false` once someone else reaped
/// it (SIGCHLD ignored, another `waitpid(-1)`).
pub(crate) fn still_unreaped(pidfd: BorrowedFd<'_>) -> bool {
    // SAFETY: siginfo_t is plain old data; all-zero is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: WNOWAIT leaves the child as it is; `info` is valid for writes.
        let ret = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                pidfd.as_raw_fd().cast_unsigned(),
                &raw mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if ret == 0 {
            return true;
        }
        if Errno::last() != Errno::EINTR {
            return false;
        }
    }
}

/// Asks for SIGKILL when the parent thread exits, then checks the parent is
/// still `expected` (it may have died before the request). Returns `false`
/// when the parent is gone. Async-signal-safe.
#[inline]
pub(crate) fn die_with_parent(expected: i32) -> bool {
    // SAFETY: raw prctl syscall with integer arguments; no libc locks.
    unsafe {
        libc::syscall(
            libc::SYS_prctl,
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL,
            0,
            0,
            0,
        )
    };
    parent_pid() == expected
}

/// `getppid(2)`. Async-signal-safe.
#[inline]
pub(crate) fn parent_pid() -> i32 {
    // SAFETY: always succeeds.
    unsafe { libc::getppid() }
}

/// Makes the calling process the leader of a new process group.
/// Async-signal-safe.
#[inline]
pub(crate) fn lead_own_process_group() {
    // SAFETY: plain syscall.
    unsafe { libc::setpgid(0, 0) };
}

/// Puts `pid` into its own process group from the parent's side, closing
/// the race with the child's own call. EACCES (it already exec'd) is fine.
pub(crate) fn put_in_own_group(pid: i32) {
    // SAFETY: plain syscall.
    unsafe { libc::setpgid(pid, pid) };
}

/// Sets `RLIMIT_CORE` to 0 so a crash writes no core file and does not wait
/// on a slow `core_pattern` pipe. Async-signal-safe (raw prlimit64).
#[inline]
pub(crate) fn disable_core_dumps() {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: raw syscall; `zero` outlives it and the old-limit pointer is null.
    unsafe {
        libc::syscall(
            libc::SYS_prlimit64,
            0,
            libc::RLIMIT_CORE,
            &raw const zero,
            std::ptr::null_mut::<libc::rlimit>(),
        )
    };
}

/// Sets a resource limit of this process (raw prlimit64, so a forked
/// child may call it). Async-signal-safe.
pub(crate) fn set_rlimit(
    resource: libc::__rlimit_resource_t,
    soft: u64,
    hard: u64,
) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: raw syscall; `limit` outlives it and the old-limit pointer is null.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_prlimit64,
            0,
            resource,
            &raw const limit,
            std::ptr::null_mut::<libc::rlimit>(),
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes this process the kernel OOM killer's first choice: writes 1000
/// to `/proc/self/oom_score_adj` (raising it needs no privilege).
/// Async-signal-safe (open, write, close).
#[inline]
pub(crate) fn prefer_as_oom_victim() -> io::Result<()> {
    const PATH: &std::ffi::CStr = c"/proc/self/oom_score_adj";
    const VALUE: &[u8] = b"1000";
    // SAFETY: a valid C string; the descriptor is closed below.
    let fd = unsafe { libc::open(PATH.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the buffer is valid for reads of its length.
    let written = unsafe { libc::write(fd, VALUE.as_ptr().cast(), VALUE.len()) };
    let result = if written < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    };
    // SAFETY: `fd` was opened above and is not used again.
    unsafe { libc::close(fd) };
    result
}

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

/// Borrows a descriptor known only by number (stdin in the child, the
/// reply fd recorded in a static).
///
/// # Safety
///
/// `fd` must stay open for `'a`.
#[inline]
pub(crate) unsafe fn borrow_fd<'a>(fd: RawFd) -> BorrowedFd<'a> {
    // SAFETY: guaranteed by the caller.
    unsafe { BorrowedFd::borrow_raw(fd) }
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

/// Buffers at least this large are advised for transparent huge pages.
pub(crate) const HUGE_BUFFER: usize = 4 << 20;

/// `madvise(MADV_HUGEPAGE)` on the whole pages inside `buffer`, when it is
/// at least [`HUGE_BUFFER`] long. Faulting in a fresh buffer 4 KiB at a
/// time is most of the cost of filling it (64 MiB: ~50 ms of faults
/// against ~8 ms of copying on the project's VM); with the advice it takes
/// 2 MiB faults. Only pages wholly inside the buffer are advised, so no
/// other allocation shares them; where transparent huge pages are off the
/// advice does nothing, and an error (an older kernel) leaves the ordinary
/// pages.
pub(crate) fn advise_huge_pages(buffer: &mut [std::mem::MaybeUninit<u8>]) {
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

/// Reads exactly `n` more bytes onto the end of `buf`, never past them
/// (what follows on `fd` is not ours), into huge pages when the room made
/// for them is large. Retries on EINTR.
///
/// # Errors
///
/// The read failed, or `fd` ended first (`UnexpectedEof`).
pub(crate) fn read_exact_onto(fd: BorrowedFd<'_>, buf: &mut Vec<u8>, n: usize) -> io::Result<()> {
    buf.reserve_exact(n);
    advise_huge_pages(&mut buf.spare_capacity_mut()[..n]);
    let end = buf.len() + n;
    while buf.len() < end {
        let want = end - buf.len();
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

/// Receives one message into `buf`, with up to `N` descriptors passed as
/// `SCM_RIGHTS` (made close-on-exec), retrying on EINTR: the bytes
/// received and the descriptors, owned.
///
/// # Errors
///
/// What `recvmsg` reports.
pub(crate) fn recv_with_fds<const N: usize>(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
) -> nix::Result<(usize, Vec<OwnedFd>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut cmsg = nix::cmsg_space!([RawFd; N]);
    loop {
        let mut iov = [io::IoSliceMut::new(buf)];
        match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                let raw: Vec<RawFd> = msg
                    .cmsgs()
                    .ok()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| match c {
                        ControlMessageOwned::ScmRights(fds) => Some(fds),
                        _ => None,
                    })
                    .flatten()
                    .collect();
                let fds = raw
                    .into_iter()
                    // SAFETY: SCM_RIGHTS installed these descriptors in our
                    // table just now; nothing else owns them.
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
                    .collect();
                return Ok((msg.bytes, fds));
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
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

/// Puts a descriptor into non-blocking mode.
pub(crate) fn set_nonblocking(fd: impl AsFd) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
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
