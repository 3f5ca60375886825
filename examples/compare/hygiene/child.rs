//! The hygiene ladder's child: the rungs' guarantees as a forked child
//! gives them to itself, raw, in the library's order.

use std::os::fd::RawFd;

use super::{
    C_STDIO_FLUSH, DIE_WITH_PARENT, EXEC_LIKE_SIGNALS, FAULT_HANDLER, OOM_VICTIM, OWN_GROUP_PIDFD,
};
use crate::floors;

/// C's streams, named apart from the descriptors this file calls `stdout`
/// and `stderr`.
mod c_stdio {
    unsafe extern "C" {
        pub static mut stdout: *mut libc::FILE;
        pub static mut stderr: *mut libc::FILE;
        /// `<stdio_ext.h>`: what the library's child does to the C output
        /// the parent had buffered at the fork.
        pub fn __fpurge(stream: *mut libc::FILE);
    }
}

/// What the child is handed, as raw descriptors.
#[derive(Debug, Clone, Copy)]
pub(super) struct ChildEnds {
    pub(super) reply: RawFd,
    /// stdin (`/dev/null`), stdout, stderr (rung 2 up).
    pub(super) stdio: Option<[RawFd; 3]>,
    /// The parent's pid (rung 4 up).
    pub(super) parent: i32,
}

/// The child, in the library's order: its own group, its stdio and nothing
/// else, exec-like signals, death with the parent and no core files, the
/// fault handler, the OOM preference, C's buffers flushed, then the reply.
/// Raw syscalls only, no allocation. `false` makes it exit 1.
pub(super) fn run_child(rung: usize, ends: ChildEnds) -> bool {
    if rung >= OWN_GROUP_PIDFD {
        // SAFETY: plain syscall.
        unsafe { libc::setpgid(0, 0) };
    }
    if let Some(stdio) = ends.stdio {
        install_stdio(stdio);
        close_fds_except(&[ends.reply]);
    }
    if rung >= EXEC_LIKE_SIGNALS {
        reset_signal_state();
    }
    if rung >= DIE_WITH_PARENT {
        if !die_with_parent(ends.parent) {
            return false;
        }
        disable_core_files();
    }
    if rung >= FAULT_HANDLER {
        install_fault_handler();
    }
    if rung >= OOM_VICTIM {
        prefer_as_oom_victim();
    }
    if rung >= C_STDIO_FLUSH {
        purge_and_flush_c_stdio();
    }
    floors::write_all(ends.reply, &42u64.to_le_bytes())
}

/// Drops the C output the parent had buffered at the fork, and flushes
/// every open C stream.
pub(super) fn purge_and_flush_c_stdio() {
    // SAFETY: the forked child is single-threaded; purging moves the two
    // streams' buffer pointers, and fflush(NULL) flushes every open stream
    // (glibc resets the stdio locks in a forked child).
    unsafe {
        c_stdio::__fpurge(c_stdio::stdout);
        c_stdio::__fpurge(c_stdio::stderr);
        libc::fflush(std::ptr::null_mut());
    }
}

/// `dup2`s `/dev/null` and the pipes onto 0, 1 and 2.
pub(super) fn install_stdio(stdio: [RawFd; 3]) {
    for (target, fd) in (0..).zip(stdio) {
        // SAFETY: dup2 between descriptors this process owns.
        unsafe { libc::dup2(fd, target) };
    }
}

/// Closes every descriptor from 3 up but those in `keep` (ascending), with
/// one `close_range` per gap, as the library does.
pub(super) fn close_fds_except(keep: &[RawFd]) {
    let close_range = |first: u32, last: u32| {
        // SAFETY: raw syscall with integer arguments; the child gave up
        // these descriptors.
        unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
    };
    let mut first = 3;
    for &keep in keep {
        let Ok(keep) = u32::try_from(keep) else {
            continue;
        };
        if keep < first {
            continue;
        }
        if keep > first {
            close_range(first, keep - 1);
        }
        first = keep + 1;
    }
    close_range(first, u32::MAX);
}

/// The signal state an exec'd process has: an empty mask, and the default
/// action for every caught signal but those the kernel or std keep
/// (SIGKILL and SIGSTOP cannot be caught; std's SIGSEGV and SIGBUS
/// handler stays). glibc refuses its own two, without a syscall.
fn reset_signal_state() {
    // SAFETY: an all-zero sigset_t is valid; sigemptyset makes it empty.
    let mut empty: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid; the old mask is not asked for.
    unsafe {
        libc::sigemptyset(&raw mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &raw const empty, std::ptr::null_mut());
    }
    for signal in 1..=libc::SIGRTMAX() {
        if matches!(
            signal,
            libc::SIGKILL | libc::SIGSTOP | libc::SIGSEGV | libc::SIGBUS
        ) {
            continue;
        }
        let handler = current_handler(signal);
        if handler != libc::SIG_DFL && handler != libc::SIG_IGN {
            set_default(signal);
        }
    }
}

/// Queries a signal's disposition (a null new action changes nothing).
fn current_handler(signal: i32) -> libc::sighandler_t {
    // SAFETY: an all-zero sigaction is valid; with a null `act` sigaction
    // only fills `old` (an invalid signal leaves it zeroed: SIG_DFL).
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &raw mut old);
        old.sa_sigaction
    }
}

fn set_default(signal: i32) {
    // SAFETY: an all-zero sigaction with SIG_DFL and an empty mask is valid;
    // the child owns its signal state.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(signal, &raw const action, std::ptr::null_mut());
    }
}

/// SIGKILL when the parent dies, then a check that it has not died already
/// (the request only covers a death after it). `false` when it has.
pub(super) fn die_with_parent(parent: i32) -> bool {
    // SAFETY: raw prctl syscall with integer arguments.
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
    // SAFETY: always succeeds.
    unsafe { libc::getppid() == parent }
}

/// `RLIMIT_CORE` 0/0: a crash writes no core file.
pub(super) fn disable_core_files() {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: raw syscall; `zero` outlives it and the old limit is not asked for.
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

/// The size of the alternate signal stack given to a thread that has none.
const ALT_STACK_LEN: usize = 64 << 10;

/// The fault handler's installation: an alternate stack (std's, or a new
/// one), then an SA_SIGINFO | SA_ONSTACK handler for each fault signal,
/// keeping what it replaced (as the library does, to chain to it).
pub(super) fn install_fault_handler() {
    ensure_alternate_stack();
    for signal in [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE] {
        // SAFETY: an all-zero sigaction is valid (empty mask, no flags).
        let (mut action, mut old): (libc::sigaction, libc::sigaction) =
            unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
        action.sa_sigaction = exit_on_fault as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: both pointers are valid; the handler only calls `_exit`.
        unsafe { libc::sigaction(signal, &raw const action, &raw mut old) };
    }
}

/// Queries the alternate signal stack; makes one when there is none (std
/// gives its threads one, so a forked child of `main` has it).
fn ensure_alternate_stack() {
    // SAFETY: an all-zero stack_t is valid; a null new stack only queries.
    let mut current: libc::stack_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let queried = unsafe { libc::sigaltstack(std::ptr::null(), &raw mut current) };
    if queried != 0 || current.ss_flags & libc::SS_DISABLE == 0 {
        return;
    }
    // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            ALT_STACK_LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return;
    }
    let new = libc::stack_t {
        ss_sp: stack,
        ss_flags: 0,
        ss_size: ALT_STACK_LEN,
    };
    // SAFETY: the mapping lives as long as the child.
    unsafe { libc::sigaltstack(&raw const new, std::ptr::null_mut()) };
}

/// The ladder's fault handler: leaves at once (the library's writes a
/// record first; no fault happens here).
extern "C" fn exit_on_fault(signal: i32, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: always safe; never returns.
    unsafe { libc::_exit(128 + signal) };
}

/// Makes the child the OOM killer's first choice: "1000" into
/// `/proc/self/oom_score_adj`.
pub(super) fn prefer_as_oom_victim() {
    // SAFETY: a valid C string; the descriptor is closed below.
    let fd = unsafe {
        libc::open(
            c"/proc/self/oom_score_adj".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        )
    };
    if fd >= 0 {
        floors::write_all(fd, b"1000");
        floors::close(fd);
    }
}
