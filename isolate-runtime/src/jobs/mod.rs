//! Supervise arbitrary Linux commands as jobs: start, monitor, stream and
//! stop them, each owned by the client that started it.
//!
//! Use it as `bombsquad::jobs`.
//!
//! - A job is a [`Command`] started with [`Jobs::start`] for an [`OwnerId`].
//!   It leads its own process group, reads `/dev/null`, and its stdout and
//!   stderr go, chunk by chunk and tagged with their stream, to one log file
//!   in the log directory.
//! - [`Jobs::stream`] reads that log from the start and follows it while the
//!   job runs (woken on every append, no polling); [`Jobs::stream_only`]
//!   reads one stream.
//! - [`Jobs::stop`] ends the whole process group ([`StopType`]); the job's
//!   [`Status`] then says it was stopped rather than killed by a signal.
//! - The jobs table is persisted (with `redb`) next to the logs, so a new
//!   [`Jobs`] over the same directory lists finished jobs and their logs,
//!   and reports jobs whose supervisor died as [`Status::Lost`].
//! - [`Retention`] bounds the logs by age and total size, never touching a
//!   running job.
//! - [`Command::memory_limit`], [`Command::cpu_limit`] and
//!   [`Command::pids_limit`] are enforced with a cgroup per job (v2 where the
//!   controller is delegated, v1 otherwise); a limit the host cannot enforce
//!   is an error ([`JobError::LimitUnsupported`]), never ignored.
//!
//! Linux only. Requires the Cargo feature `jobs`.
//!
//! # Jobs die with their supervisor
//!
//! A job needs a live supervisor: dropping [`Jobs`] kills its running jobs.
//! If the supervisor process dies without that (a crash, SIGKILL), each
//! job's leader gets SIGKILL from the kernel (`PR_SET_PDEATHSIG`; jobs are
//! forked on one long-lived library thread, since that signal follows the
//! forking *thread*). Processes a job started live on until the next
//! [`Jobs`] over the same directory kills them through the job's cgroup (or
//! a guard does at once, as the `bombsquad-jobs` service's does), and lists
//! the job as [`Status::Lost`]. Every job gets a cgroup of its own when the
//! host lets this process create one (on cgroup v2, or a v1 `pids`
//! hierarchy); without one, what a lost job left behind cannot be found
//! safely, and [`Jobs::stop`] says so ([`JobError::LostUntracked`]).
//!
//! # Examples
//!
//! ```
//! use std::io::Read;
//! use bombsquad::jobs::{Command, Jobs, OwnerId, Status, Stream};
//!
//! let jobs = Jobs::new()?;
//! let me = OwnerId::new_v4();
//! let id = jobs.start(Command::new("sh", ["-c", "echo out; echo err >&2; exit 3"]), me)?;
//!
//! let mut merged = String::new();
//! jobs.stream(id, me)?.read_to_string(&mut merged)?; // EOF once the job ended
//! // Two pipes: the order between the streams is not promised (see
//! // `Command::merged_output` for the exact order).
//! assert!(merged == "out\nerr\n" || merged == "err\nout\n");
//!
//! let mut stderr = String::new();
//! jobs.stream_only(id, me, Stream::Stderr)?.read_to_string(&mut stderr)?;
//! assert_eq!(stderr, "err\n");
//!
//! assert_eq!(jobs.wait(id, me)?.status, Status::Exited(3));
//! assert_eq!(jobs.list(me).len(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod builder;
mod cgroup;
mod command;
mod drain;
mod error;
mod info;
mod launch;
mod log;
mod manager;
mod retention;
mod store;
mod supervisor;

pub use builder::{DEFAULT_STOP_GRACE, JobsBuilder};
pub use cgroup::Limits;
pub use command::Command;
pub use error::JobError;
pub use info::{JobId, JobInfo, OwnerId, Status, StopType, Stream};
pub use log::OutputReader;
pub use manager::Jobs;
pub use retention::Retention;
