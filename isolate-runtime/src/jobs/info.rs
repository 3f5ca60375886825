//! The plain data a client sees about a job: ids, status and the job record.

use std::fmt;
use std::path::PathBuf;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::command::Command;

/// Identifies one job. Random (UUID v4), so it cannot be guessed.
pub type JobId = uuid::Uuid;

/// Identifies the client that started a job. Only that owner can query, stop
/// or read the job.
pub type OwnerId = uuid::Uuid;

/// How [`Jobs::stop`](super::Jobs::stop) ends a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StopType {
    /// SIGTERM to the job's process group, then SIGKILL once the grace period
    /// (see [`JobsBuilder::stop_grace`](super::JobsBuilder::stop_grace)) has passed.
    Term,
    /// SIGKILL to the job's process group at once.
    Kill,
}

/// One of a job's two output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Stream {
    /// The job's standard output.
    Stdout,
    /// The job's standard error.
    Stderr,
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Status {
    /// The job's leader process has not exited yet.
    Running,
    /// The leader exited on its own with this exit code.
    Exited(i32),
    /// The leader was killed by this signal, which `Jobs` did not send.
    Signaled(i32),
    /// The kernel's OOM killer killed a process of the job because the job
    /// exceeded its [memory limit](super::Command::memory_limit).
    OutOfMemory,
    /// The job was ended through [`Jobs::stop`](super::Jobs::stop) (or by dropping
    /// [`Jobs`](super::Jobs), which counts as [`StopType::Kill`]).
    Stopped(StopType),
    /// The table says the job was running, but the supervisor that started it
    /// is gone (it crashed or was killed before it could record the end). Its
    /// leader died with the supervisor (parent-death signal); whatever else
    /// it started was killed through its cgroup by the next `Jobs` over the
    /// directory, if it had one. `Jobs` never signals a lost job's pid,
    /// which may have been reused.
    Lost,
}

impl Status {
    /// True while the job's leader has not exited.
    pub fn is_running(&self) -> bool {
        matches!(self, Status::Running)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Running => write!(f, "running"),
            Status::Exited(code) => write!(f, "exited with code {code}"),
            Status::Signaled(signal) => write!(f, "killed by signal {signal}"),
            Status::Stopped(StopType::Term) => write!(f, "stopped (term)"),
            Status::Stopped(StopType::Kill) => write!(f, "stopped (kill)"),
            Status::OutOfMemory => write!(f, "out of memory"),
            Status::Lost => write!(f, "lost"),
        }
    }
}

/// Everything known about one job, as returned by
/// [`Jobs::query`](super::Jobs::query) and [`Jobs::list`](super::Jobs::list).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobInfo {
    /// The job's id.
    pub id: JobId,
    /// What was started.
    pub command: Command,
    /// The pid of the job's leader, which is also its process group id.
    /// Meaningless once the job has ended: the pid may have been reused.
    pub pid: u32,
    /// The client that started the job.
    pub owner: OwnerId,
    /// Where the job is in its life.
    pub status: Status,
    /// When the job was started.
    pub started_at: SystemTime,
    /// When the job's end was recorded; `None` while running, and for
    /// [`Status::Lost`] jobs, whose end nobody saw.
    pub ended_at: Option<SystemTime>,
    /// The job's cgroup directories (empty if it has none). They are removed
    /// when the job ends, and the list cleared; a [`Status::Lost`] job keeps
    /// it, so that [`Jobs::stop`](super::Jobs::stop) can find what is left.
    #[serde(default)]
    pub cgroups: Vec<PathBuf>,
}
