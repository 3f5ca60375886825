//! [`Jobs`]: the supervisor a client talks to.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use tempfile::TempDir;

use super::builder::JobsBuilder;
use super::cgroup;
use super::command::Command;
use super::error::JobError;
use super::info::{JobId, JobInfo, OwnerId, Status, StopType, Stream};
use super::log::{LogWriter, OutputReader};
use super::retention::Retention;
use super::store::Store;
use super::supervisor::{self, LiveJob};

/// Starts, monitors, streams and stops commands ("jobs"), each owned by the
/// client ([`OwnerId`]) that started it.
///
/// Every call takes the caller's owner id; a job of another owner is
/// reported exactly like a job that does not exist ([`JobError::NotFound`]).
///
/// A job runs as the leader of its own process group, with stdin from
/// `/dev/null` and its stdout and stderr logged to the log directory. The job
/// ends when its leader exits; whatever is left of its process group is then
/// killed with SIGKILL, so background processes never outlive their job.
///
/// A job needs a live supervisor: the `Jobs` that started it. Jobs whose
/// supervisor died without being dropped (crash, SIGKILL) are reported as
/// [`Status::Lost`](super::Status::Lost) by the next `Jobs` over the same
/// directory.
///
/// Only one `Jobs` at a time, in this process or any other, may use a log
/// directory: it holds an exclusive `flock` on `jobs.lock` in it, and a
/// second one fails with [`JobError::DirInUse`].
///
/// # Drop
///
/// Dropping `Jobs` kills every job still running (SIGKILL to its process
/// group), reaps it, and records it as `Stopped(Kill)`. It blocks until that
/// is done, which is quick.
#[derive(Debug)]
pub struct Jobs {
    inner: Arc<Inner>,
    /// Waiter threads not known to be finished; joined on drop, so that no
    /// thread still holds `inner` (the directory lock) after the drop.
    waiters: Mutex<Vec<JoinHandle<()>>>,
}

/// What the waiter threads share with [`Jobs`].
#[derive(Debug)]
pub(crate) struct Inner {
    dir: PathBuf,
    store: Store,
    /// Jobs started by this `Jobs` whose end is not persisted yet.
    live: Mutex<HashMap<JobId, Arc<LiveJob>>>,
    retention: Retention,
    /// Keeps two retention passes from deleting under each other.
    retention_pass: Mutex<()>,
    stop_grace: Duration,
    /// Held (flock) for as long as this `Jobs` lives.
    _dir_lock: File,
    /// Declared last so the directory goes after everything in it is closed.
    _temp_dir: Option<TempDir>,
}

/// A job found for its owner: still supervised here, or finished.
enum Found {
    Live(Arc<LiveJob>),
    Done(Box<JobInfo>),
}

impl Jobs {
    /// A `Jobs` logging to a fresh private (0700) directory under the temp
    /// dir, removed again when the `Jobs` is dropped; default retention and
    /// stop grace. Use [`Jobs::builder`] for logs that outlive the `Jobs`.
    ///
    /// # Errors
    ///
    /// [`JobError::Io`] or [`JobError::Store`] if the directory or its jobs
    /// table cannot be created.
    pub fn new() -> Result<Jobs, JobError> {
        Jobs::builder().build()
    }

    /// Configures log directory, retention and stop grace period.
    pub fn builder() -> JobsBuilder {
        JobsBuilder::default()
    }

    pub(crate) fn from_parts(
        dir: PathBuf,
        temp_dir: Option<TempDir>,
        dir_lock: File,
        store: Store,
        retention: Retention,
        stop_grace: Duration,
    ) -> Result<Jobs, JobError> {
        let inner = Inner {
            dir,
            store,
            live: Mutex::default(),
            retention,
            retention_pass: Mutex::default(),
            stop_grace,
            _dir_lock: dir_lock,
            _temp_dir: temp_dir,
        };
        inner.apply_retention()?;
        Ok(Jobs {
            inner: Arc::new(inner),
            waiters: Mutex::default(),
        })
    }

    /// The directory holding the logs and the jobs table.
    pub fn log_dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Starts `command` as a job owned by `owner` and returns its id.
    ///
    /// # Errors
    ///
    /// [`JobError::EmptyProgram`], [`JobError::ProgramNotFound`],
    /// [`JobError::NotExecutable`], [`JobError::BadWorkingDir`] or
    /// [`JobError::Spawn`] if it cannot be started; no job is created then.
    /// [`JobError::Io`] or [`JobError::Store`] if its log or row cannot be
    /// written.
    pub fn start(&self, command: Command, owner: OwnerId) -> Result<JobId, JobError> {
        command.check()?;
        let id = JobId::new_v4();
        let log_path = self.inner.log_path(id);
        let log = LogWriter::create(&log_path).map_err(JobError::io(&log_path))?;
        let forget_log = || {
            let _ = std::fs::remove_file(&log_path);
        };

        let spawned = supervisor::spawn(id, owner, command, log).inspect_err(|_| forget_log())?;
        if let Err(error) = self.inner.store.put(&spawned.info()) {
            spawned.abort();
            forget_log();
            return Err(error);
        }
        // Holding the map while the threads start, so that even a job that
        // ends at once is inserted before its end removes it.
        let mut live = self.inner.lock_live();
        let inner = Arc::clone(&self.inner);
        match spawned.supervise(move |info| inner.job_ended(info)) {
            Ok((job, waiter)) => {
                live.insert(id, job);
                let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
                waiters.retain(|waiter| !waiter.is_finished());
                waiters.push(waiter);
                Ok(id)
            }
            Err(error) => {
                let _ = self.inner.store.remove(&[id]);
                forget_log();
                Err(error)
            }
        }
    }

    /// Stops a job: [`StopType::Term`] sends SIGTERM to its process group
    /// and SIGKILL after the grace period, [`StopType::Kill`] sends SIGKILL
    /// at once. Returns once the signal is sent; use [`Jobs::wait`] to wait
    /// for the end, which is then recorded as `Stopped(how)`.
    ///
    /// Stopping a job that has already ended does nothing and returns `Ok`:
    /// its status stays as it was. On a [`Lost`](super::Status::Lost) job
    /// (whose leader died with its supervisor), it kills whatever is left in
    /// the job's cgroups with SIGKILL, whatever `how` says; its pid is never
    /// signalled, since it may have been reused.
    ///
    /// # Errors
    ///
    /// [`JobError::NotFound`] if `owner` has no job `id`;
    /// [`JobError::LostUntracked`] for a lost job that ran without a cgroup,
    /// so what is left of it cannot be found safely (nothing is signalled).
    pub fn stop(&self, id: JobId, owner: OwnerId, how: StopType) -> Result<(), JobError> {
        match self.find(id, owner)? {
            Found::Live(job) => job.stop(how, self.inner.stop_grace),
            Found::Done(info) if info.status == Status::Lost => {
                if info.cgroups.is_empty() {
                    return Err(JobError::LostUntracked { id, pid: info.pid });
                }
                if !cgroup::remove_dirs(&info.cgroups) {
                    let source = io::Error::other("processes remain in it after SIGKILL");
                    let path = info.cgroups[0].clone();
                    return Err(JobError::Io { path, source });
                }
            }
            Found::Done(_) => {}
        }
        Ok(())
    }

    /// The job's current record.
    ///
    /// # Errors
    ///
    /// [`JobError::NotFound`] if `owner` has no job `id`;
    /// [`JobError::Store`] if the jobs table cannot be read.
    pub fn query(&self, id: JobId, owner: OwnerId) -> Result<JobInfo, JobError> {
        Ok(match self.find(id, owner)? {
            Found::Live(job) => job.info(),
            Found::Done(info) => *info,
        })
    }

    /// Blocks until the job has ended (and its log is complete), then
    /// returns its final record.
    ///
    /// # Errors
    ///
    /// As [`Jobs::query`].
    pub fn wait(&self, id: JobId, owner: OwnerId) -> Result<JobInfo, JobError> {
        match self.find(id, owner)? {
            Found::Live(job) => Ok(job.wait(None).unwrap_or_else(|| job.info())),
            Found::Done(info) => Ok(*info),
        }
    }

    /// Like [`Jobs::wait`], but gives up after `timeout` and returns `None`.
    ///
    /// # Errors
    ///
    /// As [`Jobs::query`].
    pub fn wait_timeout(
        &self,
        id: JobId,
        owner: OwnerId,
        timeout: Duration,
    ) -> Result<Option<JobInfo>, JobError> {
        match self.find(id, owner)? {
            Found::Live(job) => Ok(job.wait(Some(timeout))),
            Found::Done(info) => Ok(Some(*info)),
        }
    }

    /// The job's stdout and stderr merged in arrival order, from the start.
    /// On a running job the reader follows new output, blocking in `read`,
    /// and returns EOF once the job has ended and everything was read. Any
    /// number of readers may be open at once.
    ///
    /// # Errors
    ///
    /// [`JobError::NotFound`] if `owner` has no job `id`; [`JobError::Io`]
    /// if its log cannot be opened (e.g. removed by hand).
    pub fn stream(&self, id: JobId, owner: OwnerId) -> Result<OutputReader, JobError> {
        self.open_output(id, owner, None)
    }

    /// Like [`Jobs::stream`], for one of the two streams only.
    ///
    /// # Errors
    ///
    /// As [`Jobs::stream`].
    pub fn stream_only(
        &self,
        id: JobId,
        owner: OwnerId,
        stream: Stream,
    ) -> Result<OutputReader, JobError> {
        self.open_output(id, owner, Some(stream))
    }

    /// Every job of `owner` (running, finished, or lost), oldest first. If
    /// the jobs table cannot be read, lists only the jobs this `Jobs` is
    /// running; see [`Jobs::try_list`] to get the error instead.
    pub fn list(&self, owner: OwnerId) -> Vec<JobInfo> {
        self.try_list(owner).unwrap_or_else(|_| {
            let mut running: Vec<JobInfo> =
                self.live_of(owner).iter().map(|job| job.info()).collect();
            sort_oldest_first(&mut running);
            running
        })
    }

    /// Like [`Jobs::list`], but fails if the jobs table cannot be read.
    ///
    /// # Errors
    ///
    /// [`JobError::Store`] if the jobs table cannot be read.
    pub fn try_list(&self, owner: OwnerId) -> Result<Vec<JobInfo>, JobError> {
        // Live jobs first: a job that ends meanwhile is then either still in
        // this snapshot (with its final record) or already final in the table.
        let live = self.live_of(owner);
        let mut jobs: HashMap<JobId, JobInfo> = self
            .inner
            .store
            .all()?
            .into_iter()
            .filter(|info| info.owner == owner)
            .map(|info| (info.id, info))
            .collect();
        for job in live {
            let info = job.info();
            jobs.insert(info.id, info);
        }
        let mut jobs: Vec<JobInfo> = jobs.into_values().collect();
        sort_oldest_first(&mut jobs);
        Ok(jobs)
    }

    /// Applies the retention policy now; returns how many finished jobs
    /// (rows and logs) were removed. It is also applied when the `Jobs` is
    /// built and after every job ends.
    ///
    /// # Errors
    ///
    /// [`JobError::Store`] if the jobs table cannot be read or written.
    pub fn apply_retention(&self) -> Result<usize, JobError> {
        self.inner.apply_retention()
    }

    fn find(&self, id: JobId, owner: OwnerId) -> Result<Found, JobError> {
        let live = self.inner.lock_live().get(&id).cloned();
        let found = match live {
            Some(job) => (job.owner() == owner).then_some(Found::Live(job)),
            None => self
                .inner
                .store
                .get(id)?
                .filter(|info| info.owner == owner)
                .map(|info| Found::Done(Box::new(info))),
        };
        found.ok_or(JobError::NotFound { id })
    }

    fn live_of(&self, owner: OwnerId) -> Vec<Arc<LiveJob>> {
        let live = self.inner.lock_live();
        live.values()
            .filter(|job| job.owner() == owner)
            .cloned()
            .collect()
    }

    fn open_output(
        &self,
        id: JobId,
        owner: OwnerId,
        only: Option<Stream>,
    ) -> Result<OutputReader, JobError> {
        let live = match self.find(id, owner)? {
            Found::Live(job) => Some(job.log()),
            Found::Done(_) => None,
        };
        let path = self.inner.log_path(id);
        OutputReader::open(&path, only, live).map_err(JobError::io(path))
    }
}

impl Drop for Jobs {
    fn drop(&mut self) {
        let running: Vec<Arc<LiveJob>> = self.inner.lock_live().values().cloned().collect();
        for job in &running {
            job.stop(StopType::Kill, Duration::ZERO);
        }
        let waiters = std::mem::take(self.waiters.get_mut().unwrap_or_else(|p| p.into_inner()));
        for waiter in waiters {
            let _ = waiter.join();
        }
    }
}

impl Inner {
    fn log_path(&self, id: JobId) -> PathBuf {
        self.dir.join(format!("{id}.log"))
    }

    fn lock_live(&self) -> MutexGuard<'_, HashMap<JobId, Arc<LiveJob>>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs on a job's waiter thread once its end is known.
    fn job_ended(&self, info: &JobInfo) {
        // If the end cannot be persisted, keep the job in memory so this
        // `Jobs` keeps reporting it truthfully.
        if self.store.put(info).is_ok() {
            self.lock_live().remove(&info.id);
        }
        let _ = self.apply_retention();
    }

    fn apply_retention(&self) -> Result<usize, JobError> {
        let _pass = self
            .retention_pass
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let jobs: Vec<(JobInfo, u64)> = self
            .store
            .all()?
            .into_iter()
            .map(|info| {
                let bytes = log_size(&self.log_path(info.id));
                (info, bytes)
            })
            .collect();
        let chosen = self.retention.select(&jobs, SystemTime::now());
        if chosen.is_empty() {
            return Ok(0);
        }
        self.store.remove(&chosen)?;
        for id in &chosen {
            let path = self.log_path(*id);
            match std::fs::remove_file(&path) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => {
                    return Err(JobError::Io {
                        path,
                        source: error,
                    });
                }
                _ => {}
            }
        }
        Ok(chosen.len())
    }
}

fn log_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |meta| meta.len())
}

fn sort_oldest_first(jobs: &mut [JobInfo]) {
    jobs.sort_by_key(|info| (info.started_at, info.id));
}

/// `Jobs` is meant to be shared between threads (e.g. in an `Arc`), and
/// readers moved to other threads.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<Jobs>();
    shareable::<OutputReader>();
};
