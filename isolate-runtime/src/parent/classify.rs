//! Why a child died, as far as the parent can tell: the fault record its
//! handler sent, std's messages in its stderr tail (an allocation failure, a
//! stack overflow; searched in the whole tail, since `RUST_BACKTRACE=1`
//! puts a backtrace after them, docs/FAULTS.md H6), the limits it ran under, and
//! the cgroup's `oom_kill` counter for a SIGKILL nobody here sent (L12).
//!
//! Everything here is a hint: the wait status stays the truth.

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::child::limits;
use crate::options::isolate::Isolate;
use crate::options::sandbox;
use crate::vocabulary::diagnosis::{Diagnosis, FaultRecord, Hint, SYS_SECCOMP};
use crate::vocabulary::report::Usage;
use crate::vocabulary::termination::Termination;

/// What std prints before aborting on a failed allocation.
const ALLOC_FAILED: &str = "memory allocation of ";
/// What std prints before aborting on a stack overflow (and what the fault
/// handler prints when std's handler is not installed).
const STACK_OVERFLOW: [&str; 2] = [
    "has overflowed its stack",
    "fatal runtime error: stack overflow",
];

/// Reads the signs of a child that ended with `termination`.
pub(crate) fn diagnose(
    termination: Termination,
    reply: &[u8],
    stderr_tail: &[u8],
    usage: Usage,
    options: &Isolate,
    oom: &OomWatch,
) -> Diagnosis {
    let Termination::Signaled { signal, .. } = termination else {
        return Diagnosis::default();
    };
    let fault = FaultRecord::trailing(reply).filter(|record| record.signal == signal);
    let cpu_secs = options.cpu.map(limits::cpu_secs);
    let hint = match signal {
        // Only a sandboxed call's SIGSYS is the sandbox's doing.
        libc::SIGSYS if options.sandbox.is_some() => Some(Hint::SandboxViolation {
            syscall: fault
                .filter(|record| record.code == SYS_SECCOMP)
                .and_then(|record| sandbox::name_of_denied(record.address as i64)),
        }),
        libc::SIGABRT => aborted(stderr_tail, options.memory),
        libc::SIGXCPU => Some(Hint::CpuLimit { secs: cpu_secs }),
        libc::SIGKILL => Some(match cpu_secs {
            // The hard limit is one second above the soft one.
            Some(secs) if (usage.user + usage.system).as_secs() > secs => {
                Hint::CpuLimit { secs: Some(secs) }
            }
            _ => Hint::OutsideKill {
                oom_kill_rose: oom.rose(),
            },
        }),
        _ => None,
    };
    Diagnosis { fault, hint }
}

/// Why a child aborted, from std's last words.
fn aborted(stderr_tail: &[u8], limit: Option<u64>) -> Option<Hint> {
    let text = String::from_utf8_lossy(stderr_tail);
    if STACK_OVERFLOW.iter().any(|m| text.contains(m)) {
        return Some(Hint::StackOverflow);
    }
    let at = text.rfind(ALLOC_FAILED)?;
    let rest = &text[at + ALLOC_FAILED.len()..];
    let (number, rest) = rest.split_once(' ')?;
    rest.starts_with("bytes failed").then(|| Hint::OutOfMemory {
        requested: number.parse().ok(),
        limit,
    })
}

/// The `oom_kill` counter of this process's cgroup (cgroup v2
/// `memory.events`), read before a call and again after a SIGKILL. The
/// child starts in its parent's cgroup, so a rise is evidence, not proof:
/// another member of the cgroup may have been the victim.
#[derive(Debug)]
pub(crate) struct OomWatch {
    before: Option<u64>,
}

impl OomWatch {
    pub(crate) fn start() -> Self {
        Self {
            before: oom_kills(),
        }
    }

    fn rose(&self) -> bool {
        matches!((self.before, oom_kills()), (Some(before), Some(after)) if after > before)
    }
}

fn oom_kills() -> Option<u64> {
    use std::io::Read as _;
    // Opened per call, not kept: a descriptor held for the process's life
    // would show up in every descriptor count the host makes. One `read`
    // (a few lines, well under the buffer), not `read_to_string`'s
    // `statx` and three.
    let mut events = [0u8; 1024];
    let len = std::fs::File::open(memory_events()?)
        .ok()?
        .read(&mut events)
        .ok()?;
    oom_kill_count(std::str::from_utf8(&events[..len]).ok()?)
}

fn oom_kill_count(events: &str) -> Option<u64> {
    events
        .lines()
        .find_map(|line| line.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

/// The file holding this process's cgroup `oom_kill` counter, found once:
/// cgroup v2 `memory.events`, or on a v1 memory controller (hybrid hosts)
/// `memory.oom_control`, which has the same `oom_kill N` line.
fn memory_events() -> Option<&'static PathBuf> {
    static PATH: OnceLock<Option<PathBuf>> = OnceLock::new();
    PATH.get_or_init(|| {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        counter_files(&mounts, &cgroups)
            .into_iter()
            .find(|file| file.exists())
    })
    .as_ref()
}

/// Where the `oom_kill` counter may be, v2 first, from `/proc/self/mountinfo`
/// and `/proc/self/cgroup`.
fn counter_files(mountinfo: &str, cgroups: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let (Some(root), Some(mount_point)) = (fields.get(3), fields.get(4)) else {
            continue;
        };
        let mut right = right.split(' ');
        let (fs_type, options) = (right.next(), right.nth(1).unwrap_or(""));
        let (path, file) = match fs_type {
            Some("cgroup2") => (cgroup_path(cgroups, |c| c.is_empty()), "memory.events"),
            Some("cgroup") if options.split(',').any(|o| o == "memory") => (
                cgroup_path(cgroups, |c| c.split(',').any(|c| c == "memory")),
                "memory.oom_control",
            ),
            _ => continue,
        };
        let Some(path) = path else { continue };
        // A mount of a subtree (a container without a cgroup namespace)
        // shows the subtree at its mount point.
        let path = path
            .strip_prefix(root)
            .filter(|_| *root != "/")
            .unwrap_or(path);
        let file = PathBuf::from(mount_point)
            .join(path.trim_start_matches('/'))
            .join(file);
        if fs_type == Some("cgroup2") {
            files.insert(0, file);
        } else {
            files.push(file);
        }
    }
    files
}

/// The path of the `/proc/self/cgroup` line ("id:controllers:path") whose
/// controllers fit.
fn cgroup_path(cgroups: &str, fits: impl Fn(&str) -> bool) -> Option<&str> {
    cgroups.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        fits(controllers).then_some(path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocabulary::diagnosis::{SI_TKILL, describe_fault, fault_address};

    fn record(signal: i32, code: i32, address: usize) -> FaultRecord {
        FaultRecord {
            signal,
            code,
            address,
        }
    }

    #[test]
    fn si_codes_read_as_words() {
        assert_eq!(
            describe_fault(&record(libc::SIGSEGV, 1, 0)),
            "address 0x0 not mapped"
        );
        assert_eq!(
            describe_fault(&record(libc::SIGSEGV, 2, 0x1000)),
            "invalid permissions for mapped object at 0x1000"
        );
        assert_eq!(
            describe_fault(&record(libc::SIGBUS, 2, 0x7f00)),
            "nonexistent physical address at 0x7f00"
        );
        assert_eq!(
            describe_fault(&record(libc::SIGFPE, 1, 0x55)),
            "integer divide by zero at instruction 0x55"
        );
        assert_eq!(
            describe_fault(&record(libc::SIGILL, 2, 0x55)),
            "illegal operand at instruction 0x55"
        );
        let raised = record(libc::SIGFPE, SI_TKILL, 1234);
        assert_eq!(
            describe_fault(&raised),
            "sent by raise() or tkill(), no faulting address"
        );
        assert_eq!(fault_address(&raised), None);
    }

    #[test]
    fn std_messages_are_found_anywhere_in_the_tail() {
        let oom =
            b"memory allocation of 1073741824 bytes failed\nstack backtrace:\n   0: std::alloc\n";
        assert_eq!(
            aborted(oom, Some(256 << 20)),
            Some(Hint::OutOfMemory {
                requested: Some(1 << 30),
                limit: Some(256 << 20)
            })
        );
        assert_eq!(
            aborted(oom, Some(256 << 20)).unwrap().describe(),
            "out of memory: allocation of 1.0 GiB failed under the 256.0 MiB limit"
        );
        let overflow = b"\nthread 'main' (7) has overflowed its stack\nfatal runtime error: stack overflow, aborting\n";
        assert_eq!(aborted(overflow, None), Some(Hint::StackOverflow));
        assert_eq!(aborted(b"plain abort", None), None);
        assert_eq!(aborted(b"memory allocation of many things", None), None);
    }

    #[test]
    fn the_oom_kill_counter_is_read_from_memory_events() {
        let events = "low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(oom_kill_count(events), Some(2));
        assert_eq!(oom_kill_count("low 0\n"), None);
    }

    #[test]
    fn the_counter_is_found_on_v2_and_on_a_v1_memory_controller() {
        let mounts = "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
                      40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n";
        let cgroups = "9:name=systemd:/\n4:memory:/jobs/7f\n0::/user.slice\n";
        assert_eq!(
            counter_files(mounts, cgroups),
            [
                PathBuf::from("/sys/fs/cgroup/unified/user.slice/memory.events"),
                PathBuf::from("/sys/fs/cgroup/memory/jobs/7f/memory.oom_control"),
            ]
        );
        let subtree = "30 20 0:26 /docker/ab /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            counter_files(subtree, "0::/docker/ab\n"),
            [PathBuf::from("/sys/fs/cgroup/memory.events")]
        );
    }

    #[test]
    fn a_kill_with_the_counter_risen_says_so() {
        assert_eq!(
            Hint::OutsideKill {
                oom_kill_rose: true
            }
            .describe(),
            "not sent by bombsquad, possibly the OOM killer (the cgroup's oom_kill count rose)"
        );
    }
}
