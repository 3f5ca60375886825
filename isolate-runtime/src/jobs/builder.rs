//! [`JobsBuilder`]: where the logs go, how long they stay, how gently jobs
//! are stopped; and opening the log directory.

use std::fs::{DirBuilder, File, OpenOptions, TryLockError};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use super::error::JobError;
use super::manager::Jobs;
use super::retention::Retention;
use super::store::Store;

const LOCK_FILE: &str = "jobs.lock";
const TABLE_FILE: &str = "jobs.redb";

/// How long a directory may look in use before [`JobError::DirInUse`].
const LOCK_PATIENCE: Duration = Duration::from_millis(250);
const LOCK_RETRY: Duration = Duration::from_millis(5);

/// The grace between SIGTERM and SIGKILL unless configured.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(2);

/// Configures a [`Jobs`]; from [`Jobs::builder`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use bombsquad::jobs::{Jobs, Retention};
///
/// let dir = tempfile::tempdir()?;
/// let jobs = Jobs::builder()
///     .log_dir(dir.path().join("jobs"))
///     .retention(Retention::default().max_total_bytes(64 << 20))
///     .stop_grace(Duration::from_millis(500))
///     .build()?;
/// assert_eq!(jobs.log_dir(), dir.path().join("jobs"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct JobsBuilder {
    log_dir: Option<PathBuf>,
    retention: Retention,
    stop_grace: Duration,
}

impl Default for JobsBuilder {
    fn default() -> Self {
        JobsBuilder {
            log_dir: None,
            retention: Retention::default(),
            stop_grace: DEFAULT_STOP_GRACE,
        }
    }
}

impl JobsBuilder {
    /// Keeps logs and the jobs table in `dir` (created 0700 if missing), so
    /// a later `Jobs` over the same directory finds the finished jobs.
    /// Without it, a fresh temporary directory is used and removed on drop.
    pub fn log_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.log_dir = Some(dir.into());
        self
    }

    /// How long and how much finished jobs' logs are kept; see [`Retention`].
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// How long [`StopType::Term`](super::StopType::Term) waits after
    /// SIGTERM before sending SIGKILL ([`DEFAULT_STOP_GRACE`] unless set).
    pub fn stop_grace(mut self, grace: Duration) -> Self {
        self.stop_grace = grace;
        self
    }

    /// Opens (or creates) the log directory, takes its lock, opens the jobs
    /// table, marks jobs left `Running` by a dead supervisor as `Lost`, and
    /// applies the retention policy.
    ///
    /// # Errors
    ///
    /// [`JobError::DirInUse`] if another live `Jobs` uses the directory
    /// (reported only after a quarter second of retries, because a child
    /// process between fork and exec briefly holds the lock of a `Jobs`
    /// dropped just before);
    /// [`JobError::Io`] or [`JobError::Store`] if it cannot be set up.
    pub fn build(self) -> Result<Jobs, JobError> {
        let (dir, temp_dir) = match self.log_dir {
            Some(dir) => (create_private_dir(dir)?, None),
            None => {
                let temp_dir = tempfile::Builder::new()
                    .prefix("bombsquad-jobs-")
                    .tempdir()
                    .map_err(JobError::io(std::env::temp_dir()))?;
                (temp_dir.path().to_owned(), Some(temp_dir))
            }
        };
        let (dir_lock, store) = open_dir(&dir)?;
        // We hold the lock, so no live supervisor can own a `Running` row.
        store.mark_running_as_lost()?;
        Jobs::from_parts(
            dir,
            temp_dir,
            dir_lock,
            store,
            self.retention,
            self.stop_grace,
        )
    }
}

/// Takes the directory lock and opens the jobs table.
///
/// A child process of this one, between its fork and its exec, holds copies
/// of our descriptors and so, for that instant, the `flock` of a `Jobs`
/// dropped just before, and redb's lock. That is common, not rare: with
/// another thread spawning processes in a loop, nearly every immediate
/// re-open failed in a measurement, while with retries every one succeeded
/// within about 50 ms. So "in use" is retried for [`LOCK_PATIENCE`] before it
/// is reported.
fn open_dir(dir: &Path) -> Result<(File, Store), JobError> {
    let deadline = Instant::now() + LOCK_PATIENCE;
    loop {
        let opened = lock_dir(dir).and_then(|lock| Ok((lock, Store::open(&dir.join(TABLE_FILE))?)));
        match opened {
            Err(JobError::DirInUse { .. }) if Instant::now() < deadline => {
                thread::sleep(LOCK_RETRY);
            }
            other => return other,
        }
    }
}

fn create_private_dir(dir: PathBuf) -> Result<PathBuf, JobError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(JobError::io(&dir))?;
    Ok(dir)
}

/// Takes the directory's exclusive lock, held until the returned file is
/// closed. `flock` locks belong to the open file, so a second `Jobs` in the
/// same process is refused just like one in another process.
fn lock_dir(dir: &Path) -> Result<File, JobError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(JobError::io(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(JobError::DirInUse {
            dir: dir.to_owned(),
        }),
        Err(TryLockError::Error(source)) => Err(JobError::Io { path, source }),
    }
}
