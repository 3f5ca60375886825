//! The sandbox (Linux only): isolated code that may compute but not reach
//! out. Crashes are stopped by the process boundary; this stops intent: a
//! parser taken over by a hostile input cannot read `~/.ssh`, open a
//! socket, run a program or trace its siblings (docs/FAULTS.md K1-K6).
//!
//! Two kernel mechanisms, applied by the child to itself as the last step
//! of its set-up, before the function runs and before the library starts
//! any thread in it (both apply to the calling thread and what it creates):
//!
//! - **Landlock** handles every file-system right the kernel knows, with
//!   rules only for the paths the builder names: any other `open` fails with
//!   `PermissionDenied`. Signals and abstract Unix sockets are scoped to the
//!   sandbox where the kernel supports it (Landlock ABI 6).
//! - **seccomp** filters with a *deny-list*: new sockets fail with
//!   `PermissionDenied`; new processes fail (`clone` without
//!   `CLONE_THREAD`, `fork`, `vfork`; `clone3` answers `ENOSYS` so libc
//!   falls back to `clone`, whose flags a filter can read); and dangerous
//!   calls (exec, ptrace, mounts, namespaces, bpf, io_uring...) kill the
//!   child with SIGSYS, the error naming the call. A deny-list, not an
//!   allow-list: a new libc version that uses a new harmless syscall keeps
//!   working, while Landlock closes the file system whatever call is used.
//!
//! `no_new_privs` is set, so nothing the child runs can gain privileges.

mod enter;
mod syscalls;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::sys;
use crate::vocabulary::error::Error;
use crate::vocabulary::sandbox_support::SandboxSupport;

pub(crate) use enter::enter;
pub(crate) use syscalls::name_of_denied;

/// What an isolated call may do beyond computing. Set it with
/// [`Isolate::sandbox`](crate::Isolate::sandbox) or
/// `#[bombsquad(sandbox = "compute")]`.
///
/// [`Sandbox::compute`] is the one policy so far: computation works
/// (allocation, threads, `HashMap`'s random keys, panics, output, progress,
/// limits), while files, the network, new processes and dangerous system
/// calls are denied. Linux only.
///
/// | the function tries to | it gets |
/// |---|---|
/// | open a file outside [`read_only`](Self::read_only) / [`read_write`](Self::read_write) | `PermissionDenied` |
/// | create a socket (`TcpStream::connect`, `UdpSocket::bind`) | `PermissionDenied` |
/// | start a process (`Command::spawn`, `fork`) | `PermissionDenied`; the program never runs |
/// | `execve`, `ptrace`, `mount`, `unshare`, `bpf`, `io_uring_setup`... | killed by SIGSYS; [`NonzeroExitcode::sandbox_violation`](crate::NonzeroExitcode::sandbox_violation) names the call |
///
/// An isolated call made from inside a sandboxed one fails (it cannot
/// start a process). A [`RemoteWorker`](crate::RemoteWorker) program is
/// not sandboxed by the library: it sets up its own.
///
/// # Examples
///
/// ```
/// use bombsquad::{Isolate, Sandbox};
///
/// let sandboxed = Isolate::new().sandbox(Sandbox::compute());
/// let read = sandboxed
///     .fork(|| std::fs::read("/etc/passwd").map_err(|e| e.to_string()))
///     .unwrap();
/// assert_eq!(read, Err("Permission denied (os error 13)".to_owned()));
/// assert_eq!(sandboxed.fork(|| (1..=10).sum::<u32>()).unwrap(), 55);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Sandbox {
    policy: SandboxPolicy,
}

/// What travels to the child (in the `Setup` frame, or copied by a fork).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SandboxPolicy {
    pub(crate) read_only: Vec<PathBuf>,
    pub(crate) read_write: Vec<PathBuf>,
    pub(crate) best_effort: bool,
}

impl Sandbox {
    /// Computation only: no file, no network, no new process.
    pub fn compute() -> Self {
        Self {
            policy: SandboxPolicy {
                read_only: Vec::new(),
                read_write: Vec::new(),
                best_effort: false,
            },
        }
    }

    /// Lets the function read the file or directory tree at `path`.
    pub fn read_only(mut self, path: impl Into<PathBuf>) -> Self {
        self.policy.read_only.push(path.into());
        self
    }

    /// Lets the function read, write, create and remove files in the tree
    /// at `path` (or read and write the file at `path`).
    pub fn read_write(mut self, path: impl Into<PathBuf>) -> Self {
        self.policy.read_write.push(path.into());
        self
    }

    /// Applies what this kernel supports instead of failing when it lacks
    /// something the policy needs (Landlock absent or older than ABI 3):
    /// the call then runs with the seccomp filters alone, or with an older
    /// Landlock. [`Sandbox::support`] says what a call would get.
    pub fn best_effort(mut self) -> Self {
        self.policy.best_effort = true;
        self
    }

    /// What this kernel lets a sandboxed call have.
    ///
    /// # Examples
    ///
    /// ```
    /// let support = bombsquad::Sandbox::support();
    /// if support.is_complete() {
    ///     assert!(support.landlock_abi().unwrap() >= 3);
    /// }
    /// ```
    pub fn support() -> SandboxSupport {
        SandboxSupport::new(sys::landlock_abi())
    }

    pub(crate) fn policy(&self) -> &SandboxPolicy {
        &self.policy
    }
}

/// Checks, before any child starts, that the kernel can enforce `policy`.
///
/// # Errors
///
/// [`Error::Sandbox`] naming what is missing (unless the policy is best
/// effort), a path the policy names that does not exist, or an
/// architecture the seccomp filters are not written for.
pub(crate) fn check(policy: Option<&SandboxPolicy>) -> Result<(), Error> {
    let Some(policy) = policy else { return Ok(()) };
    enter::prepare();
    for path in policy.read_only.iter().chain(&policy.read_write) {
        if let Err(e) = std::fs::metadata(path) {
            return Err(Error::Sandbox {
                reason: format!("cannot grant access to {}: {e}", path.display()),
            });
        }
    }
    if syscalls::target_arch().is_none() {
        return Err(Error::Sandbox {
            reason: format!(
                "no seccomp filter for this architecture ({})",
                std::env::consts::ARCH
            ),
        });
    }
    if policy.best_effort {
        return Ok(());
    }
    match Sandbox::support().missing() {
        Some(reason) => Err(Error::Sandbox { reason }),
        None => Ok(()),
    }
}
