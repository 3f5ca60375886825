//! Processes: leaving, pidfds, reaping, signals to a child or its group,
//! death with the parent, process groups and resource limits, and this
//! process's own id.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::errno::Errno;

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

/// `fork(2)`.
///
/// Safe to call under one rule, kept by each of this crate's two callers
/// (fork mode's call, the fork server): the child branch runs only what a
/// child of a possibly multi-threaded process may run (raw system calls,
/// the user's function under its documented fork hazards) and leaves with
/// `_exit`; it never returns into code that assumes the parent's threads.
pub(crate) fn fork() -> nix::Result<nix::unistd::ForkResult> {
    // SAFETY: the rule above, kept by the callers.
    unsafe { nix::unistd::fork() }
}

/// A `rusage` holding only what a fork server reports of a reaped child:
/// user and system CPU time in microseconds, and the peak RSS in KiB.
pub(crate) fn rusage_of(user_micros: u64, system_micros: u64, max_rss_kib: u64) -> libc::rusage {
    let timeval = |micros: u64| libc::timeval {
        tv_sec: i64::try_from(micros / 1_000_000).unwrap_or(i64::MAX),
        tv_usec: i64::try_from(micros % 1_000_000).unwrap_or(0),
    };
    // SAFETY: rusage is plain old data; all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    usage.ru_utime = timeval(user_micros);
    usage.ru_stime = timeval(system_micros);
    usage.ru_maxrss = i64::try_from(max_rss_kib).unwrap_or(i64::MAX);
    usage
}

/// Makes the process `command` starts, between its fork and its exec, ask
/// for SIGKILL when its parent (`supervisor`, the thread that forks it)
/// dies, check that the parent is still there, and write itself into each
/// of the cgroups whose `cgroup.procs` files are `cgroup_procs`. An error
/// there fails the spawn.
#[cfg(feature = "jobs")]
pub(crate) fn before_exec_join(
    command: &mut std::process::Command,
    supervisor: nix::unistd::Pid,
    cgroup_procs: Vec<OwnedFd>,
) {
    use std::os::unix::process::CommandExt as _;
    let before_exec = move || {
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
        if nix::unistd::getppid() != supervisor {
            // The supervisor died before the request took hold.
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        for procs in &cgroup_procs {
            // "0" moves the writing process; the kernel accepts a short
            // write as all-or-nothing.
            nix::unistd::write(procs, b"0")?;
        }
        Ok(())
    };
    // SAFETY: the closure runs in the forked child before exec and only
    // makes async-signal-safe system calls (prctl, getppid, write) on
    // descriptors it owns; it allocates nothing (the error is a raw errno).
    unsafe { command.pre_exec(before_exec) };
}

/// Changes this process's environment: removes each of `remove`, then sets
/// each of `set`. Only in a process with one thread (a fork server, which
/// its children then inherit from), where no other thread can read the
/// environment meanwhile; checked.
///
/// # Errors
///
/// The process has more than one thread, or its thread count cannot be
/// read from `/proc/self/stat`.
pub(crate) fn change_env_alone(
    remove: &[&std::ffi::OsStr],
    set: &[(&std::ffi::OsStr, &std::ffi::OsStr)],
) -> io::Result<()> {
    let threads = thread_count()?;
    if threads != 1 {
        return Err(io::Error::other(format!(
            "the environment may only change in a process with one thread, not {threads}"
        )));
    }
    for key in remove {
        // SAFETY: one thread (checked above): nothing reads concurrently.
        unsafe { std::env::remove_var(key) };
    }
    for (key, value) in set {
        // SAFETY: as above.
        unsafe { std::env::set_var(key, value) };
    }
    Ok(())
}

/// The number of threads in this process (`num_threads`, the 20th field of
/// `/proc/self/stat`; the 2nd, the command in parentheses, may hold spaces).
fn thread_count() -> io::Result<u64> {
    let stat = std::fs::read("/proc/self/stat")?;
    let after_command = stat
        .iter()
        .rposition(|&b| b == b')')
        .map_or(&stat[..], |at| &stat[at + 1..]);
    std::str::from_utf8(after_command)
        .ok()
        .and_then(|rest| rest.split_ascii_whitespace().nth(17)?.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed /proc/self/stat"))
}

/// This process's id, without a system call after the first ask: cached in
/// a page that a fork gives the child zeroed (`MADV_WIPEONFORK`, Linux
/// 4.14), so the child of any fork (`fork`, `clone`, a raw system call: no
/// `pthread_atfork` handler to miss) reads 0 and asks the kernel again.
/// Where the kernel refuses the advice, every call asks.
///
/// Why: a pool checks on every call that this process started its
/// workers, and a `getpid` was a tenth of a warm call's cost beyond its
/// pipe floor.
pub(crate) fn current_pid() -> u32 {
    static CACHE: std::sync::OnceLock<Option<&'static AtomicU32>> = std::sync::OnceLock::new();
    let Some(cached) = *CACHE.get_or_init(wiped_on_fork) else {
        return std::process::id();
    };
    match cached.load(Ordering::Relaxed) {
        0 => {
            let pid = std::process::id();
            cached.store(pid, Ordering::Relaxed);
            pid
        }
        pid => pid,
    }
}

/// A zeroed word in a page of its own that reads 0 again in a forked
/// child; `None` where the kernel refuses `MADV_WIPEONFORK`.
fn wiped_on_fork() -> Option<&'static AtomicU32> {
    use nix::sys::mman::{MapFlags, MmapAdvise, ProtFlags, madvise, mmap_anonymous, munmap};
    let page = std::num::NonZeroUsize::new(4096)?;
    // SAFETY: a fresh private anonymous mapping, overlapping nothing.
    let mapping = unsafe {
        mmap_anonymous(
            None,
            page,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_PRIVATE,
        )
    }
    .ok()?;
    // SAFETY: the advice applies to the mapping just made, which nothing
    // else uses yet; it changes what a fork's child sees, not this process.
    if unsafe { madvise(mapping, page.get(), MmapAdvise::MADV_WIPEONFORK) }.is_err() {
        // SAFETY: the mapping was made above and nothing refers to it.
        let _ = unsafe { munmap(mapping, page.get()) };
        return None;
    }
    // SAFETY: the page is mapped read-write for the rest of the process's
    // life (never unmapped), zero-filled, and page-aligned, so it holds an
    // aligned `AtomicU32` (all-zero is a valid one) that only atomic
    // accesses reach.
    Some(unsafe { mapping.cast::<AtomicU32>().as_ref() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cached_pid_is_the_child_s_own_after_a_fork() {
        let parent = current_pid();
        assert_eq!(parent, std::process::id());
        // SAFETY: the child only reads its id, compares and `_exit`s.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "{}", io::Error::last_os_error());
        if pid == 0 {
            // SAFETY: `getpid` is always safe.
            let own = unsafe { libc::getpid() }.cast_unsigned();
            let code = if current_pid() == own && own != parent {
                0
            } else {
                1
            };
            exit_now(code);
        }
        let (status, _) = reap(pid).unwrap();
        assert!(libc::WIFEXITED(status), "status {status:#x}");
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "the child read its parent's id"
        );
        assert_eq!(current_pid(), parent);
    }
}
