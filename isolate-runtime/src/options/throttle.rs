//! The cap on how many children one process runs at once (docs/FAULTS.md G1):
//! a counting semaphore. A caller over the cap blocks until a permit is
//! free; it never fails. A permit is taken before the call's channel is
//! created and given back after the child is reaped, so the cap bounds
//! children, descriptors and zombies alike.
//!
//! The cap is what [`set_max_children`] last set; before that,
//! `BOMBSQUAD_MAX_CHILDREN` (a positive integer) when set, read once at the
//! first call; otherwise twice the CPUs (`std::thread::available_parallelism`).
//! A malformed variable fails every call with [`Error::InvalidOptions`]
//! until [`set_max_children`] decides instead.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::Waker;

use crate::vocabulary::error::Error;

/// The environment variable that overrides the default cap.
pub(crate) const MAX_CHILDREN_VAR: &str = "BOMBSQUAD_MAX_CHILDREN";

static THROTTLE: Throttle = Throttle::new();

/// The cap [`set_max_children`] set; 0 until it is called.
static SET_CAP: AtomicUsize = AtomicUsize::new(0);

/// The right to run one child; given back on drop.
#[derive(Debug)]
pub(crate) struct Permit(());

/// Sets how many isolated calls of this process may have a child running
/// at once, from now on; a call over the cap waits (it never fails) until
/// another call's child has been reaped, and its timeout starts only when
/// its own child does. Overrides `BOMBSQUAD_MAX_CHILDREN` and the default
/// of twice the CPUs. Callers already waiting are re-checked against the
/// new cap at once.
///
/// The cap bounds one-shot children (`#[bombsquad]` functions without
/// `pool`, [`fork`](crate::fork), [`Isolate::fork`](crate::Isolate::fork)):
/// a pool's workers are counted by its own `pool = N`.
///
/// Calls that wait on each other's results (one thread's call feeding
/// another's) could deadlock under a cap smaller than their number: raise
/// it for them.
///
/// # Examples
///
/// ```
/// bombsquad::set_max_children(16);
/// assert_eq!(bombsquad::fork(|| 6 * 7).unwrap(), 42);
/// ```
///
/// # Panics
///
/// If `n` is 0: no call could ever run.
pub fn set_max_children(n: usize) {
    assert!(
        n > 0,
        "set_max_children(0): no isolated call could ever run; the cap must be at least 1"
    );
    SET_CAP.store(n, Ordering::Relaxed);
    THROTTLE.cap_changed();
}

/// Whether calls may start: [`Error::InvalidOptions`] when
/// `BOMBSQUAD_MAX_CHILDREN` is malformed and [`set_max_children`] did not
/// decide instead.
pub(crate) fn check() -> Result<(), Error> {
    cap().map(drop)
}

/// Blocks until fewer than the cap of children are running, then takes a
/// permit for one more. Callers [`check`] first; a malformed variable is
/// taken as the default here.
pub(crate) fn acquire() -> Permit {
    THROTTLE.acquire();
    Permit(())
}

/// Takes a permit if fewer than the cap of children are running, or keeps
/// `waker` to be woken when one may be free (at the next release or cap
/// change): how an async caller waits without blocking its thread.
#[cfg(feature = "tokio")]
pub(crate) fn try_acquire_or_wake(waker: &Waker) -> Option<Permit> {
    THROTTLE
        .try_acquire_or_wake(|| cap().unwrap_or_else(|_| default_cap()), waker)
        // Lazily: a `Permit` made and dropped when none was taken would
        // release another call's.
        .then(|| Permit(()))
}

impl Drop for Permit {
    fn drop(&mut self) {
        THROTTLE.release();
    }
}

/// How many children may run at once, or why the environment's cap is
/// refused.
pub(crate) fn cap() -> Result<usize, Error> {
    match SET_CAP.load(Ordering::Relaxed) {
        0 => env_cap()
            .clone()
            .map_err(|message| Error::InvalidOptions { message }),
        set => Ok(set),
    }
}

/// The cap from `BOMBSQUAD_MAX_CHILDREN` or the CPUs, read once.
fn env_cap() -> &'static Result<usize, String> {
    static CAP: OnceLock<Result<usize, String>> = OnceLock::new();
    CAP.get_or_init(|| match std::env::var_os(MAX_CHILDREN_VAR) {
        None => Ok(default_cap()),
        Some(value) => parse_cap(&value.to_string_lossy()),
    })
}

fn default_cap() -> usize {
    2 * std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

fn parse_cap(value: &str) -> Result<usize, String> {
    value.trim().parse().ok().filter(|&n| n > 0).ok_or_else(|| {
        format!(
            "{MAX_CHILDREN_VAR}={value:?} is not a positive whole number: set it to how many \
             isolated calls may have a child running at once (unset, the cap is twice the \
             CPUs: {}), or call bombsquad::set_max_children",
            default_cap()
        )
    })
}

#[derive(Debug)]
struct Throttle {
    state: Mutex<State>,
    freed: Condvar,
}

#[derive(Debug)]
struct State {
    /// The process the count belongs to: a forked child inherits its
    /// parent's count (its own call's permit among them) and starts afresh.
    pid: u32,
    running: usize,
    /// Callers blocked for a permit: a release wakes one only when there
    /// is one, since a wake is a syscall even with no waiter.
    waiting: usize,
    /// Async callers waiting for a permit: all are woken at a release,
    /// since a woken task may have been dropped meanwhile.
    wakers: Vec<Waker>,
}

impl Throttle {
    const fn new() -> Self {
        Self {
            state: Mutex::new(State {
                pid: 0,
                running: 0,
                waiting: 0,
                wakers: Vec::new(),
            }),
            freed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The count stays right whatever panicked while it was held.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let pid = std::process::id();
        if state.pid != pid {
            state.pid = pid;
            state.running = 0;
            state.waiting = 0;
            state.wakers.clear();
        }
        state
    }

    fn acquire(&self) {
        self.acquire_under(|| cap().unwrap_or_else(|_| default_cap()));
    }

    /// Takes a permit once fewer than `cap()` children run; `cap` is read
    /// again after every wake, since [`set_max_children`] may change it.
    fn acquire_under(&self, cap: impl Fn() -> usize) {
        let mut state = self.lock();
        while state.running >= cap() {
            state.waiting += 1;
            state = self
                .freed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.waiting = state.waiting.saturating_sub(1);
        }
        state.running += 1;
    }

    /// [`acquire_under`](Self::acquire_under) without blocking: whether a
    /// permit was taken; if not, `waker` is woken when one may be free.
    #[cfg(feature = "tokio")]
    fn try_acquire_or_wake(&self, cap: impl Fn() -> usize, waker: &Waker) -> bool {
        let mut state = self.lock();
        if state.running < cap() {
            state.running += 1;
            return true;
        }
        if !state.wakers.iter().any(|known| known.will_wake(waker)) {
            state.wakers.push(waker.clone());
        }
        false
    }

    /// Wakes every waiter to re-check a new cap.
    fn cap_changed(&self) {
        let mut state = self.lock();
        let waiting = state.waiting > 0;
        let wakers = std::mem::take(&mut state.wakers);
        drop(state);
        if waiting {
            self.freed.notify_all();
        }
        wakers.into_iter().for_each(Waker::wake);
    }

    fn release(&self) {
        let mut state = self.lock();
        state.running = state.running.saturating_sub(1);
        let waiting = state.waiting > 0;
        let wakers = std::mem::take(&mut state.wakers);
        drop(state);
        if waiting {
            self.freed.notify_one();
        }
        wakers.into_iter().for_each(Waker::wake);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_cap_comes_from_the_environment_or_the_cpus() {
        assert_eq!(parse_cap("3"), Ok(3));
        assert_eq!(parse_cap(" 12\n"), Ok(12));
        for bad in ["0", "many", "", "-1", "2.5"] {
            let message = parse_cap(bad).unwrap_err();
            assert!(
                message.starts_with(&format!(
                    "BOMBSQUAD_MAX_CHILDREN={bad:?} is not a positive whole number"
                )),
                "{message}"
            );
            assert!(message.contains("set_max_children"), "{message}");
        }
        assert!(default_cap() >= 2);
    }

    #[test]
    #[should_panic(expected = "set_max_children(0): no isolated call could ever run")]
    fn a_cap_of_zero_is_refused() {
        set_max_children(0);
    }

    #[test]
    fn a_raised_cap_lets_waiting_callers_in() {
        let throttle = Arc::new(Throttle::new());
        let cap = Arc::new(AtomicUsize::new(1));
        throttle.acquire_under(|| cap.load(Ordering::SeqCst));
        let waiter = {
            let (throttle, cap) = (throttle.clone(), cap.clone());
            std::thread::spawn(move || throttle.acquire_under(|| cap.load(Ordering::SeqCst)))
        };
        while throttle.lock().waiting == 0 {
            std::thread::yield_now();
        }
        cap.store(2, Ordering::SeqCst);
        throttle.cap_changed();
        waiter.join().unwrap();
        assert_eq!(throttle.lock().running, 2);
    }

    #[cfg(feature = "tokio")]
    #[test]
    fn an_async_caller_over_the_cap_is_woken_when_a_permit_is_released() {
        struct CountsWakes(AtomicUsize);
        impl std::task::Wake for CountsWakes {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let wakes = Arc::new(CountsWakes(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let throttle = Throttle::new();
        assert!(throttle.try_acquire_or_wake(|| 1, &waker));
        assert!(!throttle.try_acquire_or_wake(|| 1, &waker));
        assert!(!throttle.try_acquire_or_wake(|| 1, &waker), "kept once");
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
        throttle.release();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert!(throttle.try_acquire_or_wake(|| 1, &waker));
        assert!(!throttle.try_acquire_or_wake(|| 1, &waker));
        throttle.cap_changed();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 2);
        assert!(throttle.try_acquire_or_wake(|| 2, &waker));
        assert_eq!(throttle.lock().running, 2);
    }

    #[test]
    fn callers_over_the_cap_wait_for_a_permit() {
        let throttle = Arc::new(Throttle::new());
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (throttle, inside, most) = (throttle.clone(), inside.clone(), most.clone());
                std::thread::spawn(move || {
                    for _ in 0..10 {
                        throttle.acquire_under(|| 3);
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(1));
                        inside.fetch_sub(1, Ordering::SeqCst);
                        throttle.release();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 3);
        assert_eq!(throttle.lock().running, 0);
        assert_eq!(throttle.lock().waiting, 0);
    }
}
