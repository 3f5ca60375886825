//! The keeper: one long-lived library thread that starts every worker
//! process, lets retired ones finish, and reaps the children a caller
//! stopped waiting for.
//!
//! Workers are started here, never on the caller's thread, because
//! `PR_SET_PDEATHSIG` fires when the *thread* that created the child exits,
//! not the process: a worker started from a test thread would die with that
//! test (docs/FAULTS.md F3). This thread never exits while the process lives.
//!
//! A child killed by its caller may not die at once: in uninterruptible
//! sleep (D state: I/O that does not return, a frozen cgroup) a SIGKILL
//! takes effect only when the kernel lets it go, and reaping it blocks until
//! then. Its caller waits a grace period, then hands it here
//! ([`reap_when_dead`]) and returns (docs/FAULTS.md D7). This thread never
//! waits for one either: it reaps each once it has died.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::parent::supervise::Child;

/// Work for the keeper thread.
enum Job {
    Run(Box<dyn FnOnce() + Send>),
    /// A worker that was asked to leave: reaped when it does, killed at
    /// `deadline` if it has not.
    Retire {
        child: Child,
        deadline: Instant,
    },
    /// A killed child that has not died yet: reaped once it has.
    Reap(Child),
}

/// How often the keeper looks at killed children that have not died yet
/// (a worker it is retiring is looked at every 10 ms).
const LOOK_AT_THE_KILLED: Duration = Duration::from_millis(100);

/// The keeper's queue, and the process it belongs to: a forked copy of
/// this process has the queue but not the thread, and starts its own.
static KEEPER: Mutex<Option<(u32, Sender<Job>)>> = Mutex::new(None);

fn submit(job: Job) {
    let mut keeper = KEEPER.lock().unwrap_or_else(PoisonError::into_inner);
    let pid = std::process::id();
    let sender = match &*keeper {
        Some((owner, sender)) if *owner == pid => sender,
        _ => {
            let (sender, jobs) = mpsc::channel();
            std::thread::Builder::new()
                .name("bombsquad-keeper".to_owned())
                .spawn(move || keep(&jobs))
                .expect("start the bombsquad keeper thread");
            &keeper.insert((pid, sender)).1
        }
    };
    // The keeper never exits, so its receiver lives as long as the process.
    let _ = sender.send(job);
}

/// Runs `start` on the keeper thread and returns its result.
pub(crate) fn run<T: Send + 'static>(start: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = mpsc::sync_channel(1);
    submit(Job::Run(Box::new(move || {
        let _ = done.send(start());
    })));
    result
        .recv()
        .expect("the keeper thread runs every job it is given")
}

/// Lets `child`, already asked to leave, exit within `grace`, then kills
/// its process group. Reaped either way, off the caller's thread.
pub(crate) fn retire(child: Child, grace: Duration) {
    submit(Job::Retire {
        child,
        deadline: Instant::now() + grace,
    });
}

/// Takes `child`, which its caller killed and stopped waiting for, and
/// reaps it once it has died.
pub(crate) fn reap_when_dead(child: Child) {
    submit(Job::Reap(child));
}

fn keep(jobs: &Receiver<Job>) {
    let mut retiring: Vec<(Child, Instant)> = Vec::new();
    let mut killed: Vec<Child> = Vec::new();
    loop {
        let job = match retiring.iter().map(|(_, deadline)| *deadline).min() {
            None if killed.is_empty() => jobs.recv().map_err(|_| RecvTimeoutError::Disconnected),
            None => jobs.recv_timeout(LOOK_AT_THE_KILLED),
            Some(deadline) => {
                // Wake at the nearest deadline, and every 10 ms to reap those that left.
                let wait = deadline
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(10));
                jobs.recv_timeout(wait)
            }
        };
        match job {
            Ok(Job::Run(start)) => {
                // A panicking job must not end this thread: its children
                // would die with it.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(start));
            }
            Ok(Job::Retire { child, deadline }) => retiring.push((child, deadline)),
            Ok(Job::Reap(child)) => killed.push(child),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        // Those past their deadline are killed, and reaped once dead.
        for (mut child, _) in retiring.extract_if(.., |(_, deadline)| now >= *deadline) {
            child.kill_group();
            killed.push(child);
        }
        // Dropping a `Child` that has died reaps it (and kills what is left
        // of its group) at once.
        retiring.retain(|(child, _)| !child.has_exited_within(Duration::ZERO));
        killed.retain(|child| !child.has_exited_within(Duration::ZERO));
    }
}
