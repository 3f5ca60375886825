//! The one error type of the jobs module.

use std::io;
use std::path::PathBuf;

use super::info::JobId;

/// What went wrong in a [`Jobs`](super::Jobs) call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// No job with this id belongs to the caller. Also returned for a job of
    /// another owner, so that a client cannot learn that another client's
    /// job exists. The message is the same for every id (it does not repeat
    /// the id), so it cannot tell the two cases apart either.
    #[error(
        "no such job for this owner: check the job id, and use the owner id that started the job"
    )]
    NotFound {
        /// The id that was asked for.
        id: JobId,
    },

    /// [`Command::new`](super::Command::new) got an empty program name.
    #[error(
        "the program name is empty: pass the program to run, e.g. Command::new(\"ls\", [\"-l\"])"
    )]
    EmptyProgram {},

    /// The program does not exist (or is not in `PATH`).
    #[error("program {program:?} not found: check the name, or give its full path")]
    ProgramNotFound {
        /// The program as given.
        program: String,
    },

    /// The program exists but may not be executed.
    #[error("program {program:?} is not executable: check its permissions (chmod +x)")]
    NotExecutable {
        /// The program as given.
        program: String,
    },

    /// The working directory given with
    /// [`Command::current_dir`](super::Command::current_dir) is not a directory.
    #[error("working directory {dir:?} is not a directory: create it or pick another one")]
    BadWorkingDir {
        /// The directory as given.
        dir: PathBuf,
    },

    /// Starting the program failed for another reason.
    #[error("could not start {program:?} ({source}): check the command and the system limits")]
    Spawn {
        /// The program as given.
        program: String,
        /// What the system said.
        #[source]
        source: io::Error,
    },

    /// A resource limit of [`Command`](super::Command) that makes no sense.
    #[error("the {limit} limit is invalid: {reason}")]
    BadLimit {
        /// `memory`, `cpu` or `pids`.
        limit: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A resource limit that this host cannot enforce: no cgroup controller
    /// for it is delegated (v2) or writable (v1). The job was not started;
    /// a limit is never silently ignored.
    #[error(
        "the {limit} limit cannot be enforced here ({reason}): run the supervisor where the {limit} \
         cgroup controller is delegated (cgroup v2, e.g. under systemd with Delegate=yes) or writable \
         (cgroup v1), or start the job without that limit"
    )]
    LimitUnsupported {
        /// `memory`, `cpu` or `pids`.
        limit: &'static str,
        /// What the host lacks.
        reason: String,
    },

    /// [`Jobs::stop`](super::Jobs::stop) on a [`Lost`](super::Status::Lost)
    /// job that ran without a cgroup: what is left of it cannot be found
    /// safely, because its pid and process group id may have been reused
    /// since its supervisor died. Nothing was signalled. Its leader died
    /// with its supervisor (parent-death signal); processes it started may
    /// remain.
    #[error(
        "the job was lost without a cgroup, so what is left of it cannot be told apart from \
         unrelated processes that reused its pid {pid}: nothing was signalled; look for its \
         processes by hand (ps -eo pid,pgid,args | grep the command)"
    )]
    LostUntracked {
        /// The id that was asked for.
        id: JobId,
        /// The pid (and process group id) the job's leader had.
        pid: u32,
    },

    /// Another [`Jobs`](super::Jobs), in this process or another one, already
    /// supervises this log directory.
    #[error(
        "log directory {dir:?} is already used by another live Jobs: drop that one first, or use another directory"
    )]
    DirInUse {
        /// The log directory.
        dir: PathBuf,
    },

    /// A file in the log directory could not be created, read or written.
    #[error(
        "i/o error on {path:?} ({source}): check that the log directory exists and is writable"
    )]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },

    /// The persisted jobs table could not be opened, read or written.
    #[error(
        "jobs table {path:?} failed ({source}): check the disk, or move the file away to start a new table"
    )]
    Store {
        /// The database file.
        path: PathBuf,
        /// What the database said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl JobError {
    /// Maps a failed spawn of `program` to the error that says what to fix.
    pub(crate) fn from_spawn(program: &str, source: io::Error) -> JobError {
        let program = program.to_owned();
        match source.kind() {
            io::ErrorKind::NotFound => JobError::ProgramNotFound { program },
            io::ErrorKind::PermissionDenied => JobError::NotExecutable { program },
            _ => JobError::Spawn { program, source },
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> JobError {
        let path = path.into();
        move |source| JobError::Io { path, source }
    }
}
