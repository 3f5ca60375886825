//! Starting a job's process (Linux only) so that it dies with its
//! supervisor and never runs outside its cgroups.
//!
//! Between fork and exec the child:
//! 1. asks for SIGKILL when its parent dies (`PR_SET_PDEATHSIG`), then checks
//!    its parent is still this process (it may have died before the request);
//! 2. writes itself into each of its cgroups' `cgroup.procs`.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits,
//! not the process. So every job is forked on one library thread that never
//! exits while the process lives (as the pools' keeper does): a job started
//! from a short-lived thread would otherwise die with that thread.

use std::io::{self, PipeReader};
use std::os::fd::OwnedFd;
use std::process::Child;
use std::sync::mpsc::{self, Sender};
use std::sync::{Mutex, PoisonError};

use nix::unistd::Pid;

use super::command::Command;

type Spawn = Box<dyn FnOnce() + Send>;

/// The spawner thread's queue, and the process it belongs to: a forked copy
/// of this process has the queue but not the thread, and starts its own.
static SPAWNER: Mutex<Option<(u32, Sender<Spawn>)>> = Mutex::new(None);

/// Starts `command` as a job in the cgroups whose `cgroup.procs` files are
/// `cgroup_procs`; with [`Command::merged_output`], also returns the read end
/// of the one pipe both streams go to.
pub(crate) fn spawn(
    command: &Command,
    cgroup_procs: Vec<OwnedFd>,
) -> io::Result<(Child, Option<PipeReader>)> {
    let (mut std_command, merged) = command.to_std()?;
    crate::sys::before_exec_join(&mut std_command, Pid::this(), cgroup_procs);
    let child = on_spawner_thread(move || std_command.spawn())?;
    Ok((child, merged))
}

/// Runs `start` on the spawner thread and returns its result.
fn on_spawner_thread<T: Send + 'static>(start: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = mpsc::sync_channel(1);
    let job: Spawn = Box::new(move || {
        let _ = done.send(start());
    });
    {
        let mut spawner = SPAWNER.lock().unwrap_or_else(PoisonError::into_inner);
        let pid = std::process::id();
        let sender = match &*spawner {
            Some((owner, sender)) if *owner == pid => sender,
            _ => {
                let (sender, jobs) = mpsc::channel::<Spawn>();
                std::thread::Builder::new()
                    .name("bombsquad-jobs-spawner".to_owned())
                    .spawn(move || {
                        for job in jobs {
                            // A panic must not end this thread: its jobs would die with it.
                            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                        }
                    })
                    .expect("start the bombsquad jobs spawner thread");
                &spawner.insert((pid, sender)).1
            }
        };
        // The thread never exits, so its receiver lives as long as the process.
        let _ = sender.send(job);
    }
    result
        .recv()
        .expect("the spawner thread runs every job it is given")
}
