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
