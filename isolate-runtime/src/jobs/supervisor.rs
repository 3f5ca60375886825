//! One running job: its process, the thread that waits for it, and stopping.
//!
//! The leader is reaped exactly once, by its waiter thread, and never
//! signalled after that: the waiter first waits with `WNOWAIT` (the leader
//! stays a zombie, so neither its pid nor its process group id can be
//! reused), then reaps under the same lock that [`LiveJob::stop`] holds while
//! signalling. Whatever is left of the group is killed just before the reap,
//! and whatever is left in the job's cgroups (processes that left the group)
//! just after it, so a job never outlives its leader.

use std::fs::File;
use std::io::{self, PipeReader, PipeWriter};
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;

use super::cgroup::{self, JobCgroups};
use super::command::Command;
use super::drain;
use super::error::JobError;
use super::info::{JobId, JobInfo, OwnerId, Status, StopType};
use super::launch;
use super::log::{self, LogShared, LogWriter};

/// A job started by this process, from spawn until its end is recorded.
#[derive(Debug)]
pub(crate) struct LiveJob {
    pid: Pid,
    owner: OwnerId,
    state: Mutex<JobState>,
    /// Signalled once the end is settled (see [`JobState::settled`]).
    settled: Condvar,
    process: Mutex<Process>,
    log: Arc<LogShared>,
}

#[derive(Debug)]
struct JobState {
    info: JobInfo,
    /// The end is final: status set, log complete, end persisted.
    settled: bool,
}

/// Everything that must change together with reaping, under one lock.
#[derive(Debug)]
struct Process {
    child: Child,
    reaped: bool,
    /// Set by `stop` before it signals, so the end reads `Stopped`.
    intent: Option<StopType>,
    /// Removed (with what is left in them) right after the reap.
    cgroups: JobCgroups,
}

/// A job whose process runs but whose threads are not started yet, so the
/// caller can persist it first (its end must be written after its start).
#[derive(Debug)]
pub(crate) struct Spawned {
    job: Arc<LiveJob>,
    log: LogWriter,
    /// The one pipe of a job with merged output.
    merged: Option<PipeReader>,
}

/// Spawns `command` as job `id`, its output going to `log`.
///
/// # Errors
///
/// [`JobError::LimitUnsupported`] if a limit cannot be enforced;
/// [`JobError::ProgramNotFound`], [`JobError::NotExecutable`] or
/// [`JobError::Spawn`] if the process could not be started.
pub(crate) fn spawn(
    id: JobId,
    owner: OwnerId,
    command: Command,
    log: LogWriter,
) -> Result<Spawned, JobError> {
    let mut cgroups = JobCgroups::create(id, &command.limits())?;
    let launched = cgroups
        .procs_files()
        .and_then(|procs| launch::spawn(&command, procs));
    let (child, merged) = match launched {
        Ok(launched) => launched,
        Err(source) => {
            cgroups.remove();
            return Err(JobError::from_spawn(command.program(), source));
        }
    };
    let pid = child.id();
    let info = JobInfo {
        id,
        command,
        pid,
        owner,
        status: Status::Running,
        started_at: SystemTime::now(),
        ended_at: None,
        cgroups: cgroups.dirs().to_vec(),
    };
    let job = LiveJob {
        pid: Pid::from_raw(pid as i32),
        owner,
        state: Mutex::new(JobState {
            info,
            settled: false,
        }),
        settled: Condvar::new(),
        process: Mutex::new(Process {
            child,
            reaped: false,
            intent: None,
            cgroups,
        }),
        log: log.shared(),
    };
    Ok(Spawned {
        job: Arc::new(job),
        log,
        merged,
    })
}

impl Spawned {
    /// The job as just started.
    pub(crate) fn info(&self) -> JobInfo {
        self.job.info()
    }

    /// Starts the drain and waiter threads. `on_end` runs on the waiter
    /// thread with the final record, once the log is complete; waiters are
    /// woken after it returns. Joining the returned waiter thread also
    /// guarantees that `on_end` (and all it captured) is gone.
    ///
    /// # Errors
    ///
    /// [`JobError::Spawn`] if a thread could not be started; the job has
    /// then been killed and reaped, and `on_end` is not called.
    pub(crate) fn supervise(
        self,
        on_end: impl FnOnce(&JobInfo) + Send + 'static,
    ) -> Result<(Arc<LiveJob>, JoinHandle<()>), JobError> {
        let Spawned { job, log, merged } = self;
        let program = job.info().command.program().to_owned();
        let fail = |job: &LiveJob, source: io::Error| {
            job.kill_and_reap();
            log::close(&job.log);
            JobError::Spawn { program, source }
        };

        let pipes = match merged {
            Some(one) => Some((File::from(OwnedFd::from(one)), None)),
            None => {
                let mut process = job.lock_process();
                let stdout = process.child.stdout.take().map(OwnedFd::from);
                let stderr = process.child.stderr.take().map(OwnedFd::from);
                stdout
                    .zip(stderr)
                    .map(|(out, err)| (File::from(out), Some(File::from(err))))
            }
        };
        let Some((stdout, stderr)) = pipes else {
            let missing = io::Error::other("the job's output pipes are missing");
            return Err(fail(&job, missing));
        };
        let drained = match drain::spawn(stdout, stderr, log) {
            Ok(drained) => drained,
            Err(source) => return Err(fail(&job, source)),
        };

        let waiting = Arc::clone(&job);
        let waiter = thread::Builder::new()
            .name("bombsquad-job-waiter".into())
            .spawn(move || waiting.wait_for_end(drained, on_end));
        match waiter {
            Ok(handle) => Ok((job, handle)),
            // The drain thread stops by itself: the pipes close once the
            // group is dead and its "leader gone" pipe was dropped.
            Err(source) => Err(fail(&job, source)),
        }
    }

    /// Kills and reaps the job without ever supervising it (its start could
    /// not be recorded).
    pub(crate) fn abort(self) {
        self.job.kill_and_reap();
        log::close(&self.job.log);
    }
}

impl LiveJob {
    /// The client that started the job.
    pub(crate) fn owner(&self) -> OwnerId {
        self.owner
    }

    /// The job's current record.
    pub(crate) fn info(&self) -> JobInfo {
        self.lock_state().info.clone()
    }

    /// The broadcast that live readers of the job's log wait on.
    pub(crate) fn log(&self) -> Arc<LogShared> {
        Arc::clone(&self.log)
    }

    /// Waits until the job's end is settled, at most `timeout` (`None`:
    /// forever); the final record, or `None` on timeout.
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> Option<JobInfo> {
        let state = self.lock_state();
        let unsettled = |state: &mut JobState| !state.settled;
        let state = match timeout {
            None => self
                .settled
                .wait_while(state, unsettled)
                .unwrap_or_else(|p| p.into_inner()),
            Some(timeout) => {
                self.settled
                    .wait_timeout_while(state, timeout, unsettled)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
        };
        state.settled.then(|| state.info.clone())
    }

    /// Stops the job as `how` says; does nothing if its leader has already
    /// exited. A `Term` while a stop is under way changes nothing; a `Kill`
    /// always goes through, and the job then ends as `Stopped(Kill)`.
    pub(crate) fn stop(self: &Arc<Self>, how: StopType, grace: Duration) {
        let mut process = self.lock_process();
        if process.reaped || self.has_exited() {
            return;
        }
        match how {
            StopType::Kill => {
                process.intent = Some(StopType::Kill);
                let _ = killpg(self.pid, Signal::SIGKILL);
            }
            StopType::Term if process.intent.is_none() => {
                process.intent = Some(StopType::Term);
                let _ = killpg(self.pid, Signal::SIGTERM);
                drop(process);
                self.kill_after(grace);
            }
            StopType::Term => {}
        }
    }

    /// Sends SIGKILL to the group after `grace`, unless the job has ended.
    fn kill_after(self: &Arc<Self>, grace: Duration) {
        let job = Arc::clone(self);
        let timer = thread::Builder::new()
            .name("bombsquad-job-grace".into())
            .spawn(move || {
                let state = job.lock_state();
                let (state, _) = job
                    .settled
                    .wait_timeout_while(state, grace, |state| !state.settled)
                    .unwrap_or_else(|p| p.into_inner());
                if !state.settled {
                    drop(state);
                    job.kill_group_unless_reaped();
                }
            });
        if timer.is_err() {
            // No thread for the grace period: better stop too hard than not at all.
            self.kill_group_unless_reaped();
        }
    }

    fn kill_group_unless_reaped(&self) {
        let process = self.lock_process();
        if !process.reaped && !self.has_exited() {
            let _ = killpg(self.pid, Signal::SIGKILL);
        }
    }

    fn kill_and_reap(&self) {
        let mut process = self.lock_process();
        if !process.reaped {
            process.intent = Some(StopType::Kill);
            let _ = killpg(self.pid, Signal::SIGKILL);
            let _ = process.child.wait();
            process.reaped = true;
            process.cgroups.remove();
        }
    }

    /// True if the leader has exited (it may still await reaping).
    fn has_exited(&self) -> bool {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        !matches!(waitid(Id::Pid(self.pid), flags), Ok(WaitStatus::StillAlive))
    }

    /// The waiter thread: waits for the leader, kills what is left of its
    /// group, reaps it, lets the log complete, then records the end.
    fn wait_for_end(
        self: Arc<Self>,
        (drain, leader_gone): (JoinHandle<()>, PipeWriter),
        on_end: impl FnOnce(&JobInfo),
    ) {
        let still_ours = self.wait_until_exited();
        let (exit, intent, out_of_memory) = {
            let mut process = self.lock_process();
            if still_ours {
                // The leader is a zombie here, so the group id is still ours.
                let _ = killpg(self.pid, Signal::SIGKILL);
            }
            let exit = process.child.wait();
            process.reaped = true;
            let out_of_memory = cgroup::oom_killed(process.cgroups.dirs());
            process.cgroups.remove();
            (exit, process.intent, out_of_memory)
        };
        drop(leader_gone);
        let _ = drain.join();

        let info = {
            let mut state = self.lock_state();
            state.info.status = status_of(exit, intent, out_of_memory);
            state.info.ended_at = Some(SystemTime::now());
            state.info.cgroups.clear();
            state.info.clone()
        };
        log::close(&self.log);
        on_end(&info);
        self.lock_state().settled = true;
        self.settled.notify_all();
    }

    /// Blocks until the leader has exited, without reaping it. False if it
    /// is no longer our child to wait for (something else in this process
    /// reaped it), so its pid must not be signalled any more.
    fn wait_until_exited(&self) -> bool {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
        loop {
            match waitid(Id::Pid(self.pid), flags) {
                Err(Errno::EINTR) => continue,
                outcome => return outcome.is_ok(),
            }
        }
    }

    fn lock_state(&self) -> MutexGuard<'_, JobState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_process(&self) -> MutexGuard<'_, Process> {
        self.process.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The status a reaped job ends with: a recorded stop wins over how the
/// process actually died, and an OOM kill in the job's cgroup over the exit
/// status it caused.
fn status_of(exit: io::Result<ExitStatus>, intent: Option<StopType>, oom: bool) -> Status {
    if let Some(how) = intent {
        return Status::Stopped(how);
    }
    if oom {
        return Status::OutOfMemory;
    }
    match exit {
        Ok(exit) => match (exit.code(), exit.signal()) {
            (Some(code), _) => Status::Exited(code),
            (None, Some(signal)) => Status::Signaled(signal),
            (None, None) => Status::Lost,
        },
        // Someone else reaped our child (e.g. SIGCHLD set to SIG_IGN in
        // this process): its end is unknown.
        Err(_) => Status::Lost,
    }
}
