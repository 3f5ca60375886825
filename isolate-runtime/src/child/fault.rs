//! What a child does about faults: a handler for SIGSEGV, SIGBUS, SIGILL,
//! SIGFPE and SIGSYS that tells the parent where the fault happened (for
//! SIGSYS from a seccomp filter, which system call it was), an alternate
//! stack for it, and running the function on a thread with a bigger stack.
//!
//! The handler runs on an alternate stack (a stack overflow leaves none
//! free) and does only async-signal-safe things: it writes one fixed-size
//! `Fault` frame from a stack buffer with write(2), restores the default
//! action and re-raises, so the wait status is still `Signaled{SIGSEGV}`.
//!
//! It coexists with std's stack-overflow handler (docs/FAULTS.md A9, L11): std
//! installs one for SIGSEGV/SIGBUS at start-up, and a forked child inherits
//! it. Ours chains to the handler it replaced first: for a hit in a guard
//! page std knows, std prints "thread '..' has overflowed its stack" and
//! aborts (SIGABRT), exactly as in-process. For any other fault std restores
//! the default action and returns, and ours goes on. A spawned child runs
//! before `main`, where std has not installed its handler yet; there, a
//! fault right at the stack pointer is taken for an overflow and reported
//! the way std reports it (the same two lines, then SIGABRT).

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

use crate::vocabulary::diagnosis::{FaultRecord, RECORD_FRAME_LEN, SYS_SECCOMP};
use crate::wire::{self, FrameKind, HEADER_LEN};

/// The signals whose faults are reported; SIGSYS, last, only in a sandbox.
const SIGNALS: [i32; 5] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGSYS,
];

/// The size of the alternate stack the runtime provides when a thread has
/// none (std's own is used when present).
const ALT_STACK_LEN: usize = 64 << 10;

/// A fault closer than this below the stack pointer (or a little above it)
/// is a stack overflow: stack probes touch each page just below it.
const OVERFLOW_REACH: usize = 1 << 20;

/// Where the handler writes; -1 before `install`.
static FAULT_FD: AtomicI32 = AtomicI32::new(-1);
/// Only the first fault is reported (two threads may fault at once).
static REPORTED: AtomicBool = AtomicBool::new(false);
/// The handlers ours replaced, per signal of [`SIGNALS`], and whether each
/// takes `siginfo` (SA_SIGINFO).
static PREVIOUS: [AtomicUsize; SIGNALS.len()] =
    [const { AtomicUsize::new(libc::SIG_DFL) }; SIGNALS.len()];
static PREVIOUS_SIGINFO: [AtomicBool; SIGNALS.len()] =
    [const { AtomicBool::new(false) }; SIGNALS.len()];
/// The stack size of the thread the function runs on; 0 for the calling
/// thread.
static STACK_SIZE: AtomicUsize = AtomicUsize::new(0);

/// The frame the handler writes, built on the stack: a header (the
/// call id and checksum included, by `wire::seal`, which neither
/// allocates nor locks) and 16 little-endian bytes (signal i32, code
/// i32, address u64).
fn record_frame(record: &FaultRecord) -> [u8; RECORD_FRAME_LEN] {
    let mut frame = [0; RECORD_FRAME_LEN];
    frame[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&record.signal.to_le_bytes());
    frame[HEADER_LEN + 4..HEADER_LEN + 8].copy_from_slice(&record.code.to_le_bytes());
    frame[HEADER_LEN + 8..].copy_from_slice(&(record.address as u64).to_le_bytes());
    wire::seal(&mut frame, FrameKind::Fault, crate::child::call_id());
    frame
}

/// Installs the fault handler in a child that replies on `reply_fd`, and
/// gives the calling thread an alternate stack if it has none. Makes raw
/// syscalls only (a forked child may call it).
#[inline]
pub(crate) fn install(reply_fd: i32) {
    FAULT_FD.store(reply_fd, Ordering::Relaxed);
    ensure_alternate_stack();
    // SIGSYS only once a sandbox is entered ([`watch_sandbox_traps`]):
    // one syscall less on every other child's path.
    for slot in 0..SIGNALS.len() - 1 {
        handle(slot);
    }
}

/// Points the handler a fork server installed (and its child inherited)
/// at `reply_fd`: the rest of [`install`] is in place already.
#[inline]
pub(crate) fn report_to(reply_fd: i32) {
    FAULT_FD.store(reply_fd, Ordering::Relaxed);
}

/// Reports the SIGSYS of a seccomp trap too: called by a child that enters
/// the sandbox, after [`install`].
pub(crate) fn watch_sandbox_traps() {
    handle(SIGNALS.len() - 1);
}

/// Makes `on_fault` the handler of `SIGNALS[slot]`, remembering the one it
/// replaced.
#[inline]
fn handle(slot: usize) {
    let signal = SIGNALS[slot];
    // SAFETY: an all-zero sigaction is valid: no handler, and an empty
    // mask (all bits clear, what sigemptyset would write).
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_fault as *const () as usize;
    action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
    // SAFETY: as above.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call; the handler only
    // does async-signal-safe things.
    if unsafe { libc::sigaction(signal, &raw const action, &raw mut old) } != 0 {
        return;
    }
    // A forked grandchild inherits ours, and what ours replaced.
    if old.sa_sigaction != action.sa_sigaction {
        PREVIOUS[slot].store(old.sa_sigaction, Ordering::Relaxed);
        PREVIOUS_SIGINFO[slot].store(old.sa_flags & libc::SA_SIGINFO != 0, Ordering::Relaxed);
    }
}

/// Gives the calling thread an alternate signal stack unless it has one
/// (std gives its threads one; a spawned child's, before `main`, has none).
#[inline]
fn ensure_alternate_stack() {
    // SAFETY: an all-zero stack_t is valid; sigaltstack with a null new
    // stack only reads the current one.
    let mut current: libc::stack_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::sigaltstack(std::ptr::null(), &raw mut current) } != 0
        || current.ss_flags & libc::SS_DISABLE == 0
    {
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
    // SAFETY: the mapping stays for the life of the process (never unmapped).
    unsafe { libc::sigaltstack(&raw const new, std::ptr::null_mut()) };
}

/// The handler. Async-signal-safe: atomics, raw syscalls, stack buffers.
extern "C" fn on_fault(signal: i32, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    chain_to_previous(signal, info, context);
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let (code, mut address) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    if signal == libc::SIGSYS && code == SYS_SECCOMP {
        // SAFETY: as above; for this signal and code the kernel filled in
        // the `_sigsys` member of the union.
        address = unsafe { seccomp_syscall(info) };
    }
    if signal == libc::SIGSEGV
        && matches!(code, SEGV_MAPERR | SEGV_ACCERR)
        && near_stack_pointer(address, context)
    {
        report_stack_overflow();
    }
    if !REPORTED.swap(true, Ordering::Relaxed) {
        let record = FaultRecord {
            signal,
            code,
            address,
        };
        write_all_raw(FAULT_FD.load(Ordering::Relaxed), &record_frame(&record));
    }
    // Default action, then re-raise: the signal is blocked while this
    // handler runs, so it is delivered, and kills, as the handler returns.
    // (A real fault would also recur on the same instruction; a raised one
    // would not.)
    // SAFETY: an all-zero sigaction with SIG_DFL is valid.
    let mut default: libc::sigaction = unsafe { std::mem::zeroed() };
    default.sa_sigaction = libc::SIG_DFL;
    // SAFETY: sigaction and raise are async-signal-safe; the pointer is valid.
    unsafe {
        libc::sigaction(signal, &raw const default, std::ptr::null_mut());
        libc::raise(signal);
    }
}

/// `si_syscall` of a SIGSYS sent by a seccomp filter. libc does not name
/// the field: the `_sigsys` member of the union holds `_call_addr` (a
/// pointer) then `_syscall` (an int), and the union starts after three
/// ints, aligned to a pointer (`<asm-generic/siginfo.h>`).
///
/// # Safety
///
/// `info` is a valid siginfo for a SIGSYS with `si_code` [`SYS_SECCOMP`].
unsafe fn seccomp_syscall(info: *const libc::siginfo_t) -> usize {
    const UNION_OFFSET: usize = if size_of::<usize>() == 8 { 16 } else { 12 };
    let at = UNION_OFFSET + size_of::<usize>();
    // SAFETY: the caller's promise; the offset lies inside siginfo_t (128
    // bytes) and an int there is aligned.
    let syscall = unsafe { info.cast::<u8>().add(at).cast::<i32>().read() };
    usize::try_from(syscall).unwrap_or(usize::MAX)
}

const SEGV_MAPERR: i32 = 1;
const SEGV_ACCERR: i32 = 2;

/// Runs the handler ours replaced (std's stack-overflow handler), if any.
fn chain_to_previous(signal: i32, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    let Some(slot) = SIGNALS.iter().position(|&s| s == signal) else {
        return;
    };
    let previous = PREVIOUS[slot].load(Ordering::Relaxed);
    if previous == libc::SIG_DFL || previous == libc::SIG_IGN {
        return;
    }
    if PREVIOUS_SIGINFO[slot].load(Ordering::Relaxed) {
        // SAFETY: the kernel accepted this value as an SA_SIGINFO handler,
        // so it is a function of this type; it is given what we were given.
        let handler: extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(previous) };
        handler(signal, info, context);
    } else {
        // SAFETY: the kernel accepted this value as a plain handler.
        let handler: extern "C" fn(i32) = unsafe { std::mem::transmute(previous) };
        handler(signal);
    }
}

/// Whether `address` is where a stack overflow faults: just below the
/// interrupted thread's stack pointer.
fn near_stack_pointer(address: usize, context: *mut libc::c_void) -> bool {
    let Some(sp) = stack_pointer(context) else {
        return false;
    };
    address <= sp.saturating_add(4096) && sp.saturating_sub(address) <= OVERFLOW_REACH
}

#[cfg(target_arch = "x86_64")]
fn stack_pointer(context: *mut libc::c_void) -> Option<usize> {
    let context = context.cast::<libc::ucontext_t>();
    // SAFETY: an SA_SIGINFO handler's third argument is a valid ucontext_t.
    let sp = unsafe { (*context).uc_mcontext.gregs[libc::REG_RSP as usize] };
    usize::try_from(sp).ok()
}

#[cfg(target_arch = "aarch64")]
fn stack_pointer(context: *mut libc::c_void) -> Option<usize> {
    let context = context.cast::<libc::ucontext_t>();
    // SAFETY: an SA_SIGINFO handler's third argument is a valid ucontext_t.
    let sp = unsafe { (*context).uc_mcontext.sp };
    usize::try_from(sp).ok()
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn stack_pointer(_context: *mut libc::c_void) -> Option<usize> {
    None
}

/// Reports a stack overflow as std does ("thread 'main' (42) has
/// overflowed its stack", "fatal runtime error: stack overflow, aborting")
/// and aborts. The thread is named by its kernel name, or "main".
fn report_stack_overflow() -> ! {
    // SAFETY: getpid and gettid always succeed.
    let (pid, tid) = unsafe { (libc::getpid(), libc::gettid()) };
    let mut name = [0u8; 16];
    let name: &[u8] = if pid == tid {
        b"main"
    } else {
        // SAFETY: PR_GET_NAME writes at most 16 bytes into the buffer.
        unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr()) };
        let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        &name[..len]
    };
    let mut digits = [0u8; 10];
    let mut start = digits.len();
    let mut n = tid.unsigned_abs();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut message = [0u8; 128];
    let mut len = 0;
    for part in [
        &b"\nthread '"[..],
        name,
        b"' (",
        &digits[start..],
        b") has overflowed its stack\nfatal runtime error: stack overflow, aborting\n",
    ] {
        message[len..len + part.len()].copy_from_slice(part);
        len += part.len();
    }
    write_all_raw(2, &message[..len]);
    // SAFETY: abort is async-signal-safe and never returns.
    unsafe { libc::abort() }
}

/// write(2) until done or failed. Async-signal-safe.
fn write_all_raw(fd: i32, mut bytes: &[u8]) {
    if fd < 0 {
        return;
    }
    while !bytes.is_empty() {
        // SAFETY: the buffer is valid for reads of its length.
        let written = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        match usize::try_from(written) {
            Ok(0) => return,
            Ok(n) => bytes = &bytes[n..],
            Err(_) if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// Runs the function on a thread with a stack of `bytes` from now on
/// (`None`: on the calling thread).
#[inline]
pub(crate) fn set_stack_size(bytes: Option<usize>) {
    STACK_SIZE.store(bytes.unwrap_or(0), Ordering::Relaxed);
}

/// A value moved to the function's thread and back.
struct AssertSend<T>(T);

// SAFETY: the value crosses to the function's thread while the calling
// thread waits for that thread to end, and comes back by `join`: it is never
// used from two threads at once, and the spawn and the join order its uses.
// What this cannot make right is a value tied to the calling thread itself
// (a held `MutexGuard`, a pointer into a thread-local): `Isolate::stack_size`
// documents that the function runs on another thread.
unsafe impl<T> Send for AssertSend<T> {}

impl<T> AssertSend<T> {
    fn into_inner(self) -> T {
        self.0
    }
}

/// Runs `function` under `catch_unwind`, on a thread with the configured
/// stack size if one was set. A thread that cannot be started is reported
/// as a panic of the call (as `thread::spawn(..).unwrap()` would be).
pub(crate) fn run_function<R>(function: impl FnOnce() -> R) -> Result<R, Box<dyn Any + Send>> {
    let size = STACK_SIZE.load(Ordering::Relaxed);
    if size == 0 {
        return catch_unwind(AssertUnwindSafe(function));
    }
    let function = AssertSend(function);
    std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name("isolated-call".to_owned())
            .stack_size(size)
            .spawn_scoped(scope, move || {
                let function = function.into_inner();
                crate::child::mark_function_thread();
                ensure_alternate_stack();
                AssertSend(catch_unwind(AssertUnwindSafe(function)))
            });
        match spawned {
            Ok(thread) => thread.join().and_then(AssertSend::into_inner),
            Err(e) => {
                let message = format!(
                    "could not start the isolated function's thread with a stack of {size} bytes: {e}"
                );
                Err(Box::new(message) as Box<dyn Any + Send>)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_is_found_at_the_end() {
        let record = FaultRecord {
            signal: libc::SIGBUS,
            code: 2,
            address: 0xdead_b000,
        };
        let mut reply = wire::frame(FrameKind::Return, 0, b"abc");
        reply.truncate(reply.len() - 1); // a frame cut short by the crash
        reply.extend_from_slice(&record_frame(&record));
        assert_eq!(FaultRecord::trailing(&reply), Some(record));
        assert_eq!(FaultRecord::trailing(&reply[..reply.len() - 1]), None);
        let last = reply.len() - 1;
        reply[last] ^= 1; // a flipped bit: not a record
        assert_eq!(FaultRecord::trailing(&reply), None);
        assert_eq!(FaultRecord::trailing(b"short"), None);
    }
}
