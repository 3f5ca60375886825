//! The limits a child applies to itself before the call: memory
//! (`RLIMIT_DATA`), CPU time (`RLIMIT_CPU`), the stack of the function's
//! thread, and `oom_score_adj` = 1000 so the kernel OOM killer takes the
//! child before its parent (docs/FAULTS.md C1-C4, L8-L10).
//!
//! **Why `RLIMIT_DATA`, not `RLIMIT_AS`.** Both make a too-large allocation
//! fail cleanly (std prints `memory allocation of N bytes failed` and
//! aborts, C1). But `RLIMIT_AS` counts address space that holds no memory:
//! glibc reserves 64 MiB per malloc arena, every thread reserves its whole
//! stack, and files mapped read-only count too, so a multi-threaded function
//! runs out of "memory" far below its real use, and a deep recursion under
//! it dies by SIGSEGV instead of std's stack-overflow message (C2).
//! `RLIMIT_DATA` (Linux 4.7+) counts private writable memory: the heap,
//! anonymous mappings and thread stacks, which is what a user means.
//!
//! **What the number means.** `memory` is what the function may allocate
//! on top of what the child holds when the call starts: in fork mode the
//! child begins with a copy of the parent's memory, which counts against
//! the rlimit, so the limit is the parent's data size at the fork plus
//! `memory`, plus the `stack_size` of the function's thread. A spawned
//! child starts small and applies its own size the same way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::child::fault;
use crate::options::isolate::Isolate;
use crate::options::sandbox::SandboxPolicy;
use crate::sys;
use crate::wire::{self, codec};

/// The largest `Setup` frame a spawned child accepts: room for a sandbox's
/// paths.
pub(crate) const MAX_SETUP_LEN: u64 = 64 << 10;

/// What a child applies to itself: sent to a spawned child in the `Setup`
/// frame, copied into a forked one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ChildSetup {
    /// Bytes the function may allocate.
    memory: Option<u64>,
    /// Whole seconds of CPU time.
    cpu_secs: Option<u64>,
    /// The stack of the function's thread.
    stack_size: Option<usize>,
    /// The sandbox the child enters last.
    sandbox: Option<SandboxPolicy>,
}

impl ChildSetup {
    pub(crate) fn new(options: &Isolate) -> Self {
        Self {
            memory: options.memory,
            cpu_secs: options.cpu.map(cpu_secs),
            stack_size: options.stack_size,
            sandbox: options.sandbox.clone(),
        }
    }

    /// The sandbox the child enters once set up, if any.
    pub(crate) fn sandbox(&self) -> Option<&SandboxPolicy> {
        self.sandbox.as_ref()
    }

    /// The encoded `Setup` frame, header included (it belongs to no call).
    pub(crate) fn frame(&self) -> Result<Vec<u8>, String> {
        let payload = codec::to_msgpack(self)?;
        Ok(wire::frame(wire::FrameKind::Setup, wire::NO_CALL, &payload))
    }

    pub(crate) fn decode(payload: &[u8]) -> Result<Self, String> {
        codec::from_msgpack(payload).map_err(|e| format!("malformed setup frame: {e}"))
    }

    /// The `RLIMIT_DATA` for a child that already holds `baseline` bytes.
    #[inline]
    fn data_limit(&self, baseline: u64) -> Option<u64> {
        let stack = self.stack_size.map_or(0, |s| s as u64);
        self.memory
            .map(|memory| baseline.saturating_add(memory).saturating_add(stack))
    }
}

/// The whole seconds `RLIMIT_CPU` gets for `limit`: rounded up, at least 1.
pub(crate) fn cpu_secs(limit: Duration) -> u64 {
    limit.as_nanos().div_ceil(1_000_000_000).max(1) as u64
}

/// A forked child's setup, computed in the parent before the fork (reading
/// `/proc` allocates, which the child must not do).
#[derive(Debug, Clone)]
pub(crate) struct ForkSetup {
    setup: ChildSetup,
    baseline: u64,
}

impl ForkSetup {
    pub(crate) fn new(options: &Isolate) -> Self {
        let setup = ChildSetup::new(options);
        let baseline = if setup.memory.is_some() {
            data_in_use().unwrap_or(0)
        } else {
            0
        };
        Self { setup, baseline }
    }

    /// The sandbox the child enters once set up, if any.
    pub(crate) fn sandbox(&self) -> Option<&SandboxPolicy> {
        self.setup.sandbox()
    }
}

/// In a forked child, after hygiene: the fault handler, the limits, the
/// OOM preference. Raw syscalls only.
#[inline]
pub(crate) fn enter_forked_child(setup: &ForkSetup, reply_fd: i32) {
    fault::install(reply_fd);
    apply(&setup.setup, setup.baseline);
}

/// In a spawned child, once the call is received.
pub(crate) fn enter_spawned_child(setup: &ChildSetup, reply_fd: i32) {
    // A fork server's child finds the handler in place; what it forks in
    // turn sets up its own.
    if SERVER_PREPARED.swap(false, Ordering::Relaxed) {
        fault::report_to(reply_fd);
    } else {
        fault::install(reply_fd);
    }
    let baseline = if setup.memory.is_some() {
        data_in_use().unwrap_or(0)
    } else {
        0
    };
    apply(setup, baseline);
}

/// Set in a fork server by [`prepare_fork_server`] and inherited by its
/// children, each of which clears it once set up (so that a process it
/// forks does its own set-up).
static SERVER_PREPARED: AtomicBool = AtomicBool::new(false);

/// In a fork server, once: SIGCHLD's default action (it reaps its children
/// itself, so they inherit the default action too, even when the caller
/// ignores SIGCHLD), then what every child would otherwise do for itself
/// and inherits instead: the hygiene of [`enter_process_hygiene`], the
/// fault handler and its alternate stack, the panic hook, and the
/// detection of the CPU's features (`cpuid`, a trap to the hypervisor in a
/// VM, which the first checksum of every child would pay). Not
/// `oom_score_adj`, which each child still sets for itself: a server that
/// preferred itself as the OOM killer's victim would be taken before the
/// host's other processes, and every running call with it.
pub(crate) fn prepare_fork_server() {
    enter_process_hygiene();
    sys::default_sigchld();
    fault::install(-1);
    crate::child::panic::install_hook();
    std::hint::black_box(crc32fast::hash(&[]));
    #[cfg(feature = "tokio")]
    crate::child::runtime::warm_up();
    // std's stdout, made (its buffer allocated) once: a child flushes it
    // after the call.
    drop(std::io::stdout());
    SERVER_PREPARED.store(true, Ordering::Relaxed);
}

/// A child's process-wide hygiene: no core dump, no blocked signal,
/// SIGPIPE ignored; nothing to do in a fork server's child, which
/// inherits it.
pub(crate) fn enter_process_hygiene() {
    if SERVER_PREPARED.load(Ordering::Relaxed) {
        return;
    }
    sys::disable_core_dumps();
    sys::unblock_all_signals();
    sys::ignore_sigpipe();
}

/// In a worker, once it has its channel: as a spawned child, except that
/// CPU time is limited per call ([`arm_cpu_for_call`]), since `RLIMIT_CPU`
/// counts the whole life of the process.
pub(crate) fn enter_worker(setup: &ChildSetup, reply_fd: i32) {
    let per_process = ChildSetup {
        cpu_secs: None,
        ..setup.clone()
    };
    enter_spawned_child(&per_process, reply_fd);
}

/// In a worker, before each call: `RLIMIT_CPU`'s soft limit at the CPU time
/// used so far plus the call's budget. Only the soft limit moves (a hard
/// limit, once lowered, cannot be raised again), so a function that
/// catches or ignores `SIGXCPU` is not killed at the hard limit as a
/// one-shot child is.
pub(crate) fn arm_cpu_for_call(setup: &ChildSetup) {
    use nix::sys::resource::{Resource, UsageWho, getrlimit, getrusage, setrlimit};
    let Some(secs) = setup.cpu_secs else { return };
    let used = getrusage(UsageWho::RUSAGE_SELF).map_or(0, |usage| {
        let total = usage.user_time().tv_sec() + usage.system_time().tv_sec();
        u64::try_from(total).unwrap_or(0)
    });
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_CPU) {
        let _ = setrlimit(Resource::RLIMIT_CPU, (used + secs).min(hard), hard);
    }
}

/// Applies `setup`. A limit the process cannot set (an inherited hard limit
/// is lower) is left as it is: the tighter one holds. Async-signal-safe.
#[inline]
fn apply(setup: &ChildSetup, baseline: u64) {
    if let Some(limit) = setup.data_limit(baseline) {
        let _ = sys::set_rlimit(libc::RLIMIT_DATA, limit, limit);
    }
    if let Some(secs) = setup.cpu_secs {
        // SIGXCPU at the soft limit; SIGKILL one second later if it is
        // caught or ignored.
        let _ = sys::set_rlimit(libc::RLIMIT_CPU, secs, secs + 1);
    }
    let _ = sys::prefer_as_oom_victim();
    fault::set_stack_size(setup.stack_size);
}

/// This process's private writable memory (`VmData`), in bytes: what
/// `RLIMIT_DATA` counts.
fn data_in_use() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmData:"))?;
    let kib: u64 = line["VmData:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_limits_round_up_to_whole_seconds() {
        assert_eq!(cpu_secs(Duration::from_millis(1)), 1);
        assert_eq!(cpu_secs(Duration::from_secs(1)), 1);
        assert_eq!(cpu_secs(Duration::from_millis(1500)), 2);
    }

    #[test]
    fn the_data_limit_adds_the_budget_and_the_stack_to_what_is_held() {
        let setup = ChildSetup {
            memory: Some(100),
            cpu_secs: None,
            stack_size: Some(10),
            sandbox: None,
        };
        assert_eq!(setup.data_limit(1000), Some(1110));
        assert_eq!(ChildSetup::default().data_limit(1000), None);
    }

    #[test]
    fn this_process_reports_its_data_size() {
        assert!(data_in_use().is_some_and(|bytes| bytes > 0));
    }

    #[test]
    fn the_setup_frame_round_trips() {
        let setup = ChildSetup {
            memory: Some(1 << 28),
            cpu_secs: Some(3),
            stack_size: None,
            sandbox: None,
        };
        let frame = setup.frame().unwrap();
        let frames = wire::split_frames(&frame).unwrap();
        assert_eq!(frames[0].kind, wire::FrameKind::Setup);
        assert!(frames[0].payload.len() as u64 <= MAX_SETUP_LEN);
        assert_eq!(ChildSetup::decode(frames[0].payload).unwrap(), setup);
    }
}
