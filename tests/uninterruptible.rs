//! A child that its call's timeout kills while it sits in uninterruptible
//! sleep (D state) cannot die until the kernel lets it go, and reaping it
//! blocks until then. The caller still gets its `Timeout` within a second
//! of the kill, and the library reaps the child once it has died
//! (docs/FAULTS.md D7).
//!
//! A frozen cgroup of the v1 freezer holds a real one there: its tasks
//! sleep in the freezer (`D`), and a SIGKILL takes effect only at the thaw.
//! Linux-only; it needs root and the v1 freezer hierarchy, and says why it
//! is skipped without them. Its own binary: it counts the process's
//! children.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use bombsquad::{Error, bombsquad};

const FREEZER: &str = "/sys/fs/cgroup/freezer";

/// How long the test keeps the child frozen at most, so that a library
/// that waits for it ends the test (failing it) instead of hanging it.
const FROZEN_AT_MOST: Duration = Duration::from_secs(30);

/// The caller must be back well before the thaw: at its 2 s deadline plus
/// the library's 1 s grace for a killed child, with room for a loaded
/// machine.
const BACK_WITHIN: Duration = Duration::from_secs(10);

#[bombsquad(start_method = "fork", timeout = "2s")]
fn forked() -> u8 {
    std::thread::sleep(Duration::from_secs(60));
    1
}

#[bombsquad(start_method = "forkserver", timeout = "2s")]
fn forkserved() -> u8 {
    std::thread::sleep(Duration::from_secs(60));
    2
}

#[bombsquad(start_method = "spawn", timeout = "2s")]
fn spawned() -> u8 {
    std::thread::sleep(Duration::from_secs(60));
    3
}

#[bombsquad(pool = 1, timeout = "2s")]
fn pooled() -> u8 {
    std::thread::sleep(Duration::from_secs(60));
    4
}

#[bombsquad(timeout = "2s")]
async fn awaited() -> u8 {
    tokio::time::sleep(Duration::from_secs(60)).await;
    5
}

#[bombsquad(pool = 1, timeout = "2s")]
async fn awaited_pooled() -> u8 {
    tokio::time::sleep(Duration::from_secs(60)).await;
    6
}

/// The longest a ticking task on the caller's current-thread runtime may
/// go unpolled while an awaited call waits for its killed child: a call
/// that waited for it on the runtime's thread would stop the ticks for
/// the whole grace (1 s).
const LONGEST_GAP: Duration = Duration::from_millis(700);

/// Runs `call` on a current-thread runtime beside a task that ticks every
/// 10 ms; returns its result and the longest time between two ticks while
/// it ran.
fn on_a_ticking_runtime<F: std::future::Future<Output = Result<u8, Error>>>(
    call: impl FnOnce() -> F,
) -> (Result<u8, Error>, Duration) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let ticking = tokio::spawn({
            let stop = stop.clone();
            async move {
                let (mut last, mut longest) = (Instant::now(), Duration::ZERO);
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    longest = longest.max(last.elapsed());
                    last = Instant::now();
                }
                longest
            }
        });
        let result = call().await;
        stop.store(true, Ordering::Relaxed);
        (result, ticking.await.unwrap())
    })
}

/// A cgroup of the v1 freezer made for one test, thawed and removed when
/// dropped, so that no process stays frozen whatever the test does.
struct Freezer {
    dir: PathBuf,
}

impl Freezer {
    /// `None`, saying why, when this test cannot freeze a process here.
    fn create(name: &str) -> Option<Self> {
        // SAFETY: always succeeds.
        if unsafe { libc::geteuid() } != 0 {
            println!("skipped: freezing a process needs root");
            return None;
        }
        if !Path::new(FREEZER).join("freezer.state").exists()
            && !Path::new(FREEZER).join("cgroup.procs").exists()
        {
            println!("skipped: no cgroup v1 freezer hierarchy at {FREEZER}");
            return None;
        }
        let dir = Path::new(FREEZER).join(format!("bombsquad-{name}-{}", std::process::id()));
        std::fs::create_dir(&dir).expect("create a freezer cgroup");
        Some(Self { dir })
    }

    /// Moves `pid` into the cgroup and freezes it: `pid` is in D state
    /// once this returns.
    fn freeze(&self, pid: i32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string()).expect("move the child");
        self.set_state("FROZEN");
        wait_for(Duration::from_secs(10), || {
            std::fs::read_to_string(self.dir.join("freezer.state")).unwrap() == "FROZEN\n"
        });
    }

    fn thaw(&self) {
        self.set_state("THAWED");
    }

    fn set_state(&self, state: &str) {
        std::fs::write(self.dir.join("freezer.state"), state).expect("set the freezer's state");
    }
}

impl Drop for Freezer {
    fn drop(&mut self) {
        self.thaw();
        // Whatever is left in it (a failed test's) goes back to the root.
        let procs = self.dir.join("cgroup.procs");
        for pid in std::fs::read_to_string(&procs).unwrap_or_default().lines() {
            let _ = std::fs::write(Path::new(FREEZER).join("cgroup.procs"), pid);
        }
        wait_for(Duration::from_secs(10), || {
            std::fs::read_to_string(&procs).is_ok_and(|procs| procs.is_empty())
        });
        std::fs::remove_dir(&self.dir).expect("remove the freezer cgroup");
    }
}

fn wait_for(at_most: Duration, mut done: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + at_most;
    while Instant::now() < until {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    done()
}

/// The state letter of `pid` (`/proc/PID/stat`), if it exists.
fn state_of(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

/// One test at a time: each freezes "the" call child of this process.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `call`, freezes its child (the call child this process did not
/// have before) while the function sleeps, and checks that the call's timeout comes
/// back without waiting for the thaw, and that the child is reaped after it.
fn a_killed_child_in_d_state_does_not_hold_the_caller(
    name: &str,
    call: impl FnOnce() -> Result<u8, Error>,
) {
    common::watchdog();
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(freezer) = Freezer::create(name) else {
        return;
    };
    let freezer = Arc::new(freezer);
    let (frozen, frozen_pid) = mpsc::channel();
    let (test_done, done) = mpsc::channel::<()>();
    let me = std::process::id();
    let before: Vec<i32> = common::call_children(me)
        .iter()
        .map(|&(pid, _)| pid)
        .collect();
    let freezing = {
        let freezer = freezer.clone();
        std::thread::spawn(move || {
            let mut child = None;
            let found = wait_for(Duration::from_secs(10), || {
                child = common::call_children(me)
                    .into_iter()
                    .map(|(pid, _)| pid)
                    .find(|pid| !before.contains(pid));
                child.is_some()
            });
            assert!(found, "no call child appeared");
            let pid = child.unwrap();
            freezer.freeze(pid);
            frozen.send(pid).unwrap();
            // A library that waits for the child ends the test this way.
            let _ = done.recv_timeout(FROZEN_AT_MOST);
            freezer.thaw();
        })
    };
    let started = Instant::now();
    let result = call();
    let back_after = started.elapsed();
    let pid = frozen_pid.recv().expect("the child was frozen");
    let state_when_back = state_of(pid);
    let _ = test_done.send(()); // gone already when the call outlasted the freeze
    freezing.join().unwrap();
    match result {
        Err(Error::Timeout { after, report, .. }) => {
            assert_eq!(after, Duration::from_secs(2), "{name}");
            assert_eq!(report.pid(), pid.cast_unsigned(), "{name}");
            // Not reaped when the caller got its error: no resource usage.
            assert_eq!(report.user_time(), None, "{name}");
            assert_eq!(report.peak_rss(), None, "{name}");
        }
        other => panic!("{name}: expected a timeout, got {other:?}"),
    }
    assert!(
        back_after < BACK_WITHIN,
        "{name}: the caller waited {back_after:?} for a killed child stuck in D state"
    );
    assert_eq!(
        state_when_back,
        Some('D'),
        "{name}: the child is still frozen when the caller is back"
    );
    assert!(
        wait_for(Duration::from_secs(10), || state_of(pid).is_none()),
        "{name}: the child was not reaped after the thaw: {:?}",
        state_of(pid)
    );
    drop(freezer); // the last handle: the cgroup is removed
}

#[test]
fn a_forked_child_in_d_state_is_reaped_after_the_callers_timeout() {
    a_killed_child_in_d_state_does_not_hold_the_caller("forked", forked);
}

#[test]
fn a_fork_server_child_in_d_state_is_reaped_after_the_callers_timeout() {
    // Started first, so that the call's child is the only new process.
    bombsquad::start_forkserver().unwrap();
    a_killed_child_in_d_state_does_not_hold_the_caller("forkserved", forkserved);
}

#[test]
fn a_spawned_child_in_d_state_is_reaped_after_the_callers_timeout() {
    a_killed_child_in_d_state_does_not_hold_the_caller("spawned", spawned);
}

#[test]
fn a_pooled_worker_in_d_state_is_reaped_after_the_callers_timeout() {
    a_killed_child_in_d_state_does_not_hold_the_caller("pooled", pooled);
}

/// [`a_killed_child_in_d_state_does_not_hold_the_caller`] for an awaited
/// call, whose runtime's other tasks must keep running meanwhile.
fn an_awaited_child_in_d_state_leaves_the_runtime_running<F>(name: &str, call: fn() -> F)
where
    F: std::future::Future<Output = Result<u8, Error>>,
{
    let mut longest = Duration::ZERO;
    a_killed_child_in_d_state_does_not_hold_the_caller(name, || {
        let (result, gap) = on_a_ticking_runtime(call);
        longest = gap;
        result
    });
    assert!(
        longest < LONGEST_GAP,
        "{name}: the runtime stood still for {longest:?}"
    );
}

#[test]
fn an_awaited_calls_child_in_d_state_is_not_waited_for_on_the_runtimes_thread() {
    an_awaited_child_in_d_state_leaves_the_runtime_running("awaited", awaited);
}

#[test]
fn an_awaited_pooled_worker_in_d_state_is_not_waited_for_on_the_runtimes_thread() {
    an_awaited_child_in_d_state_leaves_the_runtime_running("awaited-pooled", awaited_pooled);
}
