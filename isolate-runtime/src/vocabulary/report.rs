//! What a failed call tells the user: who died, how, after how long, with
//! how much memory, and the end of what it wrote to stderr.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::vocabulary::diagnosis::{self, Diagnosis, Hint};
use crate::vocabulary::error::Location;
use crate::vocabulary::output_tail::OutputTail;
use crate::vocabulary::panic_report::PanicReport;
use crate::vocabulary::sandbox_support::SandboxSupport;
use crate::vocabulary::termination::Termination;

/// What the parent observed of a child, whatever the outcome: its name and
/// pid, how long it ran, what it consumed, and the end of its stderr.
///
/// Carried by [`NonzeroExitcode`] and by [`Error::Timeout`](crate::Error::Timeout).
#[derive(Debug, Clone)]
pub struct CallReport {
    pub(crate) function: Option<Cow<'static, str>>,
    pub(crate) pid: u32,
    pub(crate) wall_time: Duration,
    pub(crate) usage: Option<Usage>,
    /// Boxed, as `NonzeroExitcode::report` is, so `Error` stays within
    /// clippy's `result_large_err` bound.
    pub(crate) stderr: Box<OutputTail>,
    /// What the kernel let the sandbox enforce, when the call had one.
    pub(crate) sandbox: Option<SandboxSupport>,
    /// The stderr was replayed to the caller's as it arrived.
    pub(crate) stderr_replayed: bool,
}

/// Resource usage from `wait4(2)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Usage {
    pub(crate) user: Duration,
    pub(crate) system: Duration,
    pub(crate) peak_rss: u64,
}

impl Usage {
    pub(crate) fn from_rusage(usage: &libc::rusage) -> Self {
        let time = |t: libc::timeval| {
            Duration::new(
                u64::try_from(t.tv_sec).unwrap_or(0),
                u32::try_from(t.tv_usec).unwrap_or(0) * 1000,
            )
        };
        Self {
            user: time(usage.ru_utime),
            system: time(usage.ru_stime),
            // Linux reports kilobytes.
            peak_rss: u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024,
        }
    }
}

impl CallReport {
    /// The isolated function's name (`None` for a closure run with
    /// [`fork`](crate::fork) and no [`Isolate::name`](crate::Isolate::name)).
    #[must_use]
    pub fn function(&self) -> Option<&str> {
        self.function.as_deref()
    }

    /// The child's process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// From just before the child was started to its reaping.
    #[must_use]
    pub fn wall_time(&self) -> Duration {
        self.wall_time
    }

    /// CPU time the child spent in user mode.
    #[must_use]
    pub fn user_time(&self) -> Option<Duration> {
        self.usage.map(|u| u.user)
    }

    /// CPU time the child spent in the kernel.
    #[must_use]
    pub fn system_time(&self) -> Option<Duration> {
        self.usage.map(|u| u.system)
    }

    /// The child's peak resident set size in bytes (`ru_maxrss`). A forked
    /// child counts the parent's pages it maps, so this includes the
    /// parent's resident memory at the fork.
    #[must_use]
    pub fn peak_rss(&self) -> Option<u64> {
        self.usage.map(|u| u.peak_rss)
    }

    /// The last 64 KiB the child wrote to stderr (empty with
    /// [`Stderr::Null`](crate::Stderr::Null)).
    #[must_use]
    pub fn stderr_tail(&self) -> &[u8] {
        &self.stderr.bytes
    }

    /// What the kernel let the call's [`Sandbox`](crate::Sandbox) enforce,
    /// when it had one: all of it, unless the sandbox was
    /// [`best_effort`](crate::Sandbox::best_effort) on a kernel that
    /// lacks something ([`SandboxSupport::is_complete`]).
    #[must_use]
    pub fn sandbox(&self) -> Option<SandboxSupport> {
        self.sandbox
    }

    /// Whether the child's stderr was also replayed to the caller's stderr
    /// as it arrived ([`Stderr::Inherit`](crate::Stderr::Inherit), the
    /// default), so that [`stderr_tail`](Self::stderr_tail) repeats what
    /// the caller already printed: a report of your own can leave it out.
    #[must_use]
    pub fn stderr_replayed(&self) -> bool {
        self.stderr_replayed
    }

    /// How many bytes of stderr came before the kept tail.
    #[must_use]
    pub fn stderr_dropped(&self) -> u64 {
        self.stderr.dropped
    }

    /// "risky_business (pid 42)", or "the isolated call (pid 42)".
    pub(crate) fn subject(&self) -> String {
        let name = self.function().unwrap_or("the isolated call");
        format!("{name} (pid {})", self.pid)
    }

    /// ", after 3 ms, peak RSS 2.1 MiB"
    pub(crate) fn write_costs(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, ", after {}", human_duration(self.wall_time))?;
        if let Some(usage) = self.usage {
            write!(f, ", peak RSS {}", human_bytes(usage.peak_rss))?;
        }
        Ok(())
    }
}

/// A child that was killed by a signal or exited with a nonzero code.
///
/// [`exitcode`](Self::exitcode) follows Python's `multiprocessing`: the exit
/// code, or minus the signal number (-9 for SIGKILL, -11 for SIGSEGV). The
/// rest of what was observed (time, memory, stderr) is in
/// [`report`](Self::report), and the most used parts have accessors here.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let err = bombsquad::fork(|| -> u8 { std::process::abort() }).unwrap_err();
/// let bombsquad::Error::NonzeroExitcode(e) = err else { panic!("{err}") };
/// assert_eq!(e.signal(), Some(libc::SIGABRT));
/// assert_eq!(e.exitcode(), -6);
/// assert_eq!(e.signal_name(), Some("SIGABRT"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct NonzeroExitcode {
    termination: Termination,
    // Boxed: every `Result<_, Error>` carries this variant's size.
    panic: Option<Box<PanicReport>>,
    report: Box<CallReport>,
    /// Boxed: most errors never carry one, and `Error` stays small.
    diagnosis: Box<Diagnosis>,
}

impl NonzeroExitcode {
    pub(crate) fn new(
        termination: Termination,
        panic: Option<PanicReport>,
        report: CallReport,
    ) -> Self {
        Self {
            termination,
            panic: panic.map(Box::new),
            report: Box::new(report),
            diagnosis: Box::default(),
        }
    }

    pub(crate) fn with_diagnosis(mut self, diagnosis: Diagnosis) -> Self {
        *self.diagnosis = diagnosis;
        self
    }

    /// The exit code, or minus the signal number when a signal killed the
    /// child (-9, -11, -6), as in Python.
    #[must_use]
    pub fn exitcode(&self) -> i32 {
        match self.termination {
            Termination::Exited(code) => code,
            Termination::Signaled { signal, .. } => -signal,
        }
    }

    /// The exit code, when the child exited (only its low 8 bits survive).
    #[must_use]
    pub fn code(&self) -> Option<i32> {
        match self.termination {
            Termination::Exited(code) => Some(code),
            Termination::Signaled { .. } => None,
        }
    }

    /// The signal that killed the child, if one did.
    #[must_use]
    pub fn signal(&self) -> Option<i32> {
        match self.termination {
            Termination::Exited(_) => None,
            Termination::Signaled { signal, .. } => Some(signal),
        }
    }

    /// The name of the signal that killed the child ("SIGSEGV").
    #[must_use]
    pub fn signal_name(&self) -> Option<&'static str> {
        self.signal()
            .and_then(|s| Signal::try_from(s).ok())
            .map(Signal::as_str)
    }

    /// Whether the kernel wrote a core dump (children run with
    /// `RLIMIT_CORE` 0, so normally `false`).
    #[must_use]
    pub fn core_dumped(&self) -> bool {
        matches!(
            self.termination,
            Termination::Signaled {
                core_dumped: true,
                ..
            }
        )
    }

    /// The child's process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.report.pid
    }

    /// The isolated function's name, when it has one.
    #[must_use]
    pub fn function(&self) -> Option<&str> {
        self.report.function()
    }

    /// The last 64 KiB the child wrote to stderr.
    #[must_use]
    pub fn stderr_tail(&self) -> &[u8] {
        self.report.stderr_tail()
    }

    /// The child's peak resident set size in bytes.
    #[must_use]
    pub fn peak_rss(&self) -> Option<u64> {
        self.report.peak_rss()
    }

    /// CPU time the child spent in user mode.
    #[must_use]
    pub fn user_time(&self) -> Option<Duration> {
        self.report.user_time()
    }

    /// CPU time the child spent in the kernel.
    #[must_use]
    pub fn system_time(&self) -> Option<Duration> {
        self.report.system_time()
    }

    /// From just before the child was started to its reaping.
    #[must_use]
    pub fn wall_time(&self) -> Duration {
        self.report.wall_time()
    }

    /// Everything observed of the child.
    #[must_use]
    pub fn report(&self) -> &CallReport {
        &self.report
    }

    /// The faulting address of a SIGSEGV or SIGBUS (the instruction, for
    /// SIGILL and SIGFPE), as the child's fault handler saw it: `Some(0)`
    /// for a null pointer. `None` for other signals, and for a signal sent
    /// by a process (`raise`, `kill`), which has no address.
    ///
    /// # Examples
    ///
    /// ```
    /// let err = bombsquad::fork(|| unsafe { libc::strlen(std::ptr::null()) }).unwrap_err();
    /// let bombsquad::Error::NonzeroExitcode(e) = err else { panic!("{err}") };
    /// assert_eq!(e.fault_address(), Some(0));
    /// assert_eq!(e.fault_description().as_deref(), Some("address 0x0 not mapped"));
    /// ```
    #[must_use]
    pub fn fault_address(&self) -> Option<usize> {
        self.diagnosis
            .fault
            .as_ref()
            .and_then(diagnosis::fault_address)
    }

    /// The fault's `si_code` (`SEGV_MAPERR` = 1, `BUS_ADRERR` = 2,
    /// `FPE_INTDIV` = 1, `SI_TKILL` = -6 for `raise`...), when the child's
    /// fault handler reported one (SIGSEGV, SIGBUS, SIGILL, SIGFPE).
    #[must_use]
    pub fn fault_code(&self) -> Option<i32> {
        self.diagnosis.fault.map(|f| f.code)
    }

    /// What the fault's `si_code` means, with the address:
    /// "address 0x0 not mapped", "invalid permissions for mapped object at
    /// 0x7f..", "integer divide by zero at instruction 0x55..".
    #[must_use]
    pub fn fault_description(&self) -> Option<String> {
        self.diagnosis.fault.as_ref().map(diagnosis::describe_fault)
    }

    /// Whether the child ran out of memory: it aborted after std's
    /// `memory allocation of N bytes failed` (found anywhere in the stderr
    /// tail, backtrace or not). Typically under [`Isolate::memory`](crate::Isolate::memory).
    /// Needs the stderr tail, so never with [`Stderr::Null`](crate::Stderr::Null).
    /// A kill by the kernel OOM killer is a SIGKILL instead; see
    /// [`is_possible_oom_kill`](Self::is_possible_oom_kill).
    #[must_use]
    pub fn is_oom(&self) -> bool {
        matches!(self.diagnosis.hint, Some(Hint::OutOfMemory { .. }))
    }

    /// Whether the child was killed by a SIGKILL this library did not send:
    /// the kernel OOM killer, or someone else. [`Display`](fmt::Display)
    /// says "(the cgroup's oom_kill count rose)" when the cgroup v2
    /// `memory.events` counter rose during the call.
    #[must_use]
    pub fn is_possible_oom_kill(&self) -> bool {
        matches!(self.diagnosis.hint, Some(Hint::OutsideKill { .. }))
    }

    /// Whether the cgroup's `oom_kill` counter rose during the call (cgroup
    /// v2 `memory.events` of the parent's cgroup, which the child shares):
    /// evidence, not proof, that the OOM killer took this child.
    #[must_use]
    pub fn cgroup_oom_kill_rose(&self) -> bool {
        matches!(
            self.diagnosis.hint,
            Some(Hint::OutsideKill {
                oom_kill_rose: true
            })
        )
    }

    /// Whether the child overflowed its stack: SIGABRT after std's "has
    /// overflowed its stack". See [`Isolate::stack_size`](crate::Isolate::stack_size).
    #[must_use]
    pub fn is_stack_overflow(&self) -> bool {
        matches!(self.diagnosis.hint, Some(Hint::StackOverflow))
    }

    /// Whether the child used up its CPU time: killed by SIGXCPU (or by the
    /// SIGKILL that follows at the hard limit). See [`Isolate::cpu`](crate::Isolate::cpu).
    #[must_use]
    pub fn is_cpu_limit(&self) -> bool {
        matches!(self.diagnosis.hint, Some(Hint::CpuLimit { .. }))
    }

    /// Whether the sandbox stopped the child: it was killed by SIGSYS for a
    /// system call that [`Sandbox::compute`](crate::Sandbox::compute)
    /// forbids. A violation is never reported as a crash: `on_fault` does
    /// not run for it. A SIGSYS of an unsandboxed call is not one.
    #[must_use]
    pub fn is_sandbox_violation(&self) -> bool {
        matches!(self.diagnosis.hint, Some(Hint::SandboxViolation { .. }))
    }

    /// The system call the sandbox stopped ("ptrace", "execve"), when the
    /// child's fault handler could report it.
    ///
    /// # Examples
    ///
    /// See [`Isolate::sandbox`](crate::Isolate::sandbox).
    #[must_use]
    pub fn sandbox_violation(&self) -> Option<&'static str> {
        match self.diagnosis.hint {
            Some(Hint::SandboxViolation { syscall }) => syscall,
            _ => None,
        }
    }

    /// The message of the first panic the child reported before it died: a panic
    /// while unwinding, or any panic in a `panic = "abort"` build.
    #[must_use]
    pub fn panic_message(&self) -> Option<&str> {
        self.panic.as_ref().map(|p| p.message.as_str())
    }

    /// Where that panic happened.
    #[must_use]
    pub fn panic_location(&self) -> Option<&Location> {
        self.panic.as_ref().and_then(|p| p.location.as_ref())
    }
}

/// What a signal usually means when it kills an isolated call.
fn signal_meaning(signal: i32) -> &'static str {
    match signal {
        libc::SIGSEGV => "segmentation fault",
        libc::SIGBUS => "bus error",
        libc::SIGILL => "illegal instruction",
        libc::SIGFPE => "arithmetic exception",
        libc::SIGABRT => "aborted",
        libc::SIGKILL => "not sent by bombsquad, possibly the OOM killer",
        libc::SIGTERM => "terminated",
        libc::SIGINT => "interrupted",
        libc::SIGXCPU => "CPU time limit exceeded",
        libc::SIGXFSZ => "file size limit exceeded",
        libc::SIGSYS => "bad system call",
        libc::SIGPIPE => "wrote to a pipe with no reader",
        _ => "killed by a signal",
    }
}

impl fmt::Display for NonzeroExitcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.report.subject())?;
        match self.termination {
            Termination::Exited(code) => write!(f, " exited with code {code}")?,
            Termination::Signaled { signal, .. } => {
                let name = self.signal_name().unwrap_or("an unknown signal");
                match &self.diagnosis.hint {
                    Some(hint @ Hint::SandboxViolation { .. }) => write!(
                        f,
                        " was stopped by the sandbox ({name}): {}",
                        hint.describe()
                    )?,
                    Some(hint) => write!(f, " was killed by {name}: {}", hint.describe())?,
                    None => write!(f, " was killed by {name}: {}", signal_meaning(signal))?,
                }
                if let Some(fault) = self.fault_description()
                    && !self.is_sandbox_violation()
                {
                    write!(f, ", {fault}")?;
                }
            }
        }
        if self.core_dumped() {
            f.write_str(", core dumped")?;
        }
        self.report.write_costs(f)?;
        if let Some(panic) = &self.panic {
            write!(f, ", after panicking")?;
            if let Some(location) = &panic.location {
                write!(f, " at {location}")?;
            }
            write!(f, ": {}", panic.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for NonzeroExitcode {}

/// "850 µs", "3 ms", "1.25 s", "2 min 5 s".
pub(crate) fn human_duration(duration: Duration) -> String {
    let micros = duration.as_micros();
    match micros {
        0..1_000 => format!("{micros} µs"),
        1_000..10_000_000 => format!("{} ms", micros / 1_000),
        10_000_000..120_000_000 => format!("{:.1} s", duration.as_secs_f64()),
        _ => {
            let secs = duration.as_secs();
            format!("{} min {} s", secs / 60, secs % 60)
        }
    }
}

/// "512 B", "2.1 MiB", "1.0 GiB".
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    #[expect(clippy::cast_precision_loss, reason = "one decimal is shown")]
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(Duration::from_micros(850)), "850 µs");
        assert_eq!(human_duration(Duration::from_millis(3)), "3 ms");
        assert_eq!(human_duration(Duration::from_millis(12_340)), "12.3 s");
        assert_eq!(human_duration(Duration::from_secs(125)), "2 min 5 s");
    }

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(2_202_009), "2.1 MiB");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
    }
}
