//! How a child process ended.

/// How the child process ended, from its wait status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Termination {
    /// `WIFEXITED`: the low 8 bits of the exit code.
    Exited(i32),
    /// `WIFSIGNALED`: the signal, and `WCOREDUMP`.
    Signaled { signal: i32, core_dumped: bool },
}

impl Termination {
    pub(crate) fn from_wait_status(status: i32) -> Self {
        if libc::WIFSIGNALED(status) {
            Self::Signaled {
                signal: libc::WTERMSIG(status),
                core_dumped: libc::WCOREDUMP(status),
            }
        } else {
            Self::Exited(libc::WEXITSTATUS(status))
        }
    }
}
