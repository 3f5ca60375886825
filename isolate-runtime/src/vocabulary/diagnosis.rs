//! What the parent made of a crash: the fault record the child's handler
//! sent, and the likely cause (a hint). Everything here is a hint: the
//! wait status stays the truth.

use crate::vocabulary::report::human_bytes;
use crate::wire::{self, FrameKind, HEADER_LEN};

/// The length of a fault record on the wire.
pub(crate) const RECORD_LEN: usize = 16;
/// The length of the frame that carries one: what a crash leaves at the
/// end of a reply.
pub(crate) const RECORD_FRAME_LEN: usize = HEADER_LEN + RECORD_LEN;

/// SIGSYS's `si_code` when a seccomp filter trapped the call.
pub(crate) const SYS_SECCOMP: i32 = 1;

/// A fault, as the handler saw it: the signal, its `si_code`, and
/// `si_addr` (the faulting address, or the instruction for SIGILL/SIGFPE);
/// for a SIGSYS from a seccomp filter (`si_code` [`SYS_SECCOMP`]),
/// `si_syscall`, the number of the call it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FaultRecord {
    pub(crate) signal: i32,
    pub(crate) code: i32,
    pub(crate) address: usize,
}

impl FaultRecord {
    /// Reads a record's payload.
    pub(crate) fn decode(payload: &[u8]) -> Option<Self> {
        let payload: &[u8; RECORD_LEN] = payload.try_into().ok()?;
        let (signal, rest) = payload.split_first_chunk::<4>()?;
        let (code, address) = rest.split_first_chunk::<4>()?;
        Some(Self {
            signal: i32::from_le_bytes(*signal),
            code: i32::from_le_bytes(*code),
            address: usize::try_from(u64::from_le_bytes(address.try_into().ok()?)).ok()?,
        })
    }

    /// The record at the very end of a reply, where a crashing child's
    /// handler puts it. Found even after a frame the crash cut short
    /// (docs/FAULTS.md C8), which makes the reply as a whole unreadable.
    pub(crate) fn trailing(reply: &[u8]) -> Option<Self> {
        let start = reply.len().checked_sub(RECORD_FRAME_LEN)?;
        match wire::split_frames(&reply[start..]).ok()?.as_slice() {
            [frame] if frame.kind == FrameKind::Fault => Self::decode(frame.payload),
            _ => None,
        }
    }
}

/// The likely cause of an abnormal end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Hint {
    /// SIGABRT after std's `memory allocation of N bytes failed`.
    OutOfMemory {
        requested: Option<u64>,
        limit: Option<u64>,
    },
    /// SIGABRT after std's stack-overflow message.
    StackOverflow,
    /// SIGXCPU, or SIGKILL once the CPU time passed the hard limit.
    CpuLimit { secs: Option<u64> },
    /// A SIGKILL this library did not send.
    OutsideKill { oom_kill_rose: bool },
    /// SIGSYS from the sandbox's seccomp filter: the call it stopped.
    SandboxViolation { syscall: Option<&'static str> },
}

/// What the parent made of a crash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Diagnosis {
    /// The handler's record, when it matches the signal that killed the child.
    pub(crate) fault: Option<FaultRecord>,
    pub(crate) hint: Option<Hint>,
}

impl Hint {
    /// Replaces the signal's usual meaning in a report.
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::OutOfMemory { requested, limit } => {
                let mut text = "out of memory".to_owned();
                if let Some(bytes) = requested {
                    text += &format!(": allocation of {} failed", human_bytes(*bytes));
                }
                if let Some(limit) = limit {
                    text += &format!(" under the {} limit", human_bytes(*limit));
                }
                text
            }
            Self::StackOverflow => "stack overflow".to_owned(),
            Self::CpuLimit { secs: Some(secs) } => format!("CPU time limit of {secs} s exceeded"),
            Self::CpuLimit { secs: None } => "CPU time limit exceeded".to_owned(),
            Self::SandboxViolation { syscall } => format!(
                "it called {}, which sandbox = \"compute\" forbids",
                syscall.unwrap_or("a system call")
            ),
            Self::OutsideKill { oom_kill_rose } => {
                let mut text = "not sent by bombsquad, possibly the OOM killer".to_owned();
                if *oom_kill_rose {
                    text += " (the cgroup's oom_kill count rose)";
                }
                text
            }
        }
    }
}

/// What a fault's `si_code` says, with the address where it has one:
/// "address 0x0 not mapped".
pub(crate) fn describe_fault(record: &FaultRecord) -> String {
    let at = fault_address(record).map(|a| format!("{a:#x}"));
    let at = at.as_deref().unwrap_or("?");
    match (record.signal, record.code) {
        (_, SI_USER) => "sent by kill()".to_owned(),
        (_, SI_TKILL) => "sent by raise() or tkill(), no faulting address".to_owned(),
        (_, SI_QUEUE) => "sent by sigqueue()".to_owned(),
        (_, SI_KERNEL) => "general protection fault, no faulting address".to_owned(),
        (libc::SIGSYS, SYS_SECCOMP) => {
            format!("system call {} refused by a seccomp filter", record.address)
        }
        (libc::SIGSYS, _) => format!("bad system call at {at}"),
        (libc::SIGSEGV, 1) => format!("address {at} not mapped"),
        (libc::SIGSEGV, 2) => format!("invalid permissions for mapped object at {at}"),
        (libc::SIGSEGV, 3) => format!("failed address bound checks at {at}"),
        (libc::SIGSEGV, 4) => format!("protection key check failed at {at}"),
        (libc::SIGBUS, 1) => format!("invalid address alignment at {at}"),
        (libc::SIGBUS, 2) => format!("nonexistent physical address at {at}"),
        (libc::SIGBUS, 3) => format!("object-specific hardware error at {at}"),
        (libc::SIGBUS, 4 | 5) => format!("hardware memory error at {at}"),
        (libc::SIGFPE, code @ 1..=8) => {
            let what = [
                "integer divide by zero",
                "integer overflow",
                "floating-point divide by zero",
                "floating-point overflow",
                "floating-point underflow",
                "floating-point inexact result",
                "invalid floating-point operation",
                "subscript out of range",
            ][(code - 1) as usize];
            format!("{what} at instruction {at}")
        }
        (libc::SIGILL, code @ 1..=8) => {
            let what = [
                "illegal opcode",
                "illegal operand",
                "illegal addressing mode",
                "illegal trap",
                "privileged opcode",
                "privileged register",
                "coprocessor error",
                "internal stack error",
            ][(code - 1) as usize];
            format!("{what} at instruction {at}")
        }
        (_, code) => format!("si_code {code} at {at}"),
    }
}

pub(crate) const SI_USER: i32 = 0;
pub(crate) const SI_KERNEL: i32 = 0x80;
pub(crate) const SI_QUEUE: i32 = -1;
pub(crate) const SI_TKILL: i32 = -6;

/// The faulting address, when the kernel reported one: a signal sent by a
/// process (`si_code` ≤ 0) or a general protection fault has none.
pub(crate) fn fault_address(record: &FaultRecord) -> Option<usize> {
    let seccomp = record.signal == libc::SIGSYS && record.code == SYS_SECCOMP;
    (record.code > 0 && record.code != SI_KERNEL && !seccomp).then_some(record.address)
}
