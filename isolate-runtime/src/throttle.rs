//! The cap on how many children one process runs at once (docs/FAULTS.md G1):
//! a counting semaphore. A caller over the cap blocks until a permit is
//! free; it never fails. A permit is taken before the call's channel is
//! created and given back after the child is reaped, so the cap bounds
//! children, descriptors and zombies alike.
//!
//! The cap is twice the CPUs (`std::thread::available_parallelism`), or
//! `BOMBSQUAD_MAX_CHILDREN` (a positive integer) when set; it is read once,
//! at the first call.

use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};

/// The environment variable that overrides the default cap.
pub(crate) const MAX_CHILDREN_VAR: &str = "BOMBSQUAD_MAX_CHILDREN";

static THROTTLE: Throttle = Throttle::new();

/// The right to run one child; given back on drop.
#[derive(Debug)]
pub(crate) struct Permit(());

/// Blocks until fewer than the cap of children are running, then takes a
/// permit for one more.
pub(crate) fn acquire() -> Permit {
    THROTTLE.acquire(cap());
    Permit(())
}

impl Drop for Permit {
    fn drop(&mut self) {
        THROTTLE.release();
    }
}

/// How many children may run at once.
pub(crate) fn cap() -> usize {
    static CAP: OnceLock<usize> = OnceLock::new();
    *CAP.get_or_init(|| {
        let from_env = std::env::var(MAX_CHILDREN_VAR).ok();
        parse_cap(from_env.as_deref()).unwrap_or_else(default_cap)
    })
}

fn default_cap() -> usize {
    2 * std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

fn parse_cap(value: Option<&str>) -> Option<usize> {
    value?.trim().parse().ok().filter(|&n| n > 0)
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
}

impl Throttle {
    const fn new() -> Self {
        Self {
            state: Mutex::new(State {
                pid: 0,
                running: 0,
                waiting: 0,
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
        }
        state
    }

    fn acquire(&self, cap: usize) {
        let mut state = self.lock();
        while state.running >= cap {
            state.waiting += 1;
            state = self
                .freed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.waiting = state.waiting.saturating_sub(1);
        }
        state.running += 1;
    }

    fn release(&self) {
        let mut state = self.lock();
        state.running = state.running.saturating_sub(1);
        let waiting = state.waiting > 0;
        drop(state);
        if waiting {
            self.freed.notify_one();
        }
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
        assert_eq!(parse_cap(Some("3")), Some(3));
        assert_eq!(parse_cap(Some(" 12\n")), Some(12));
        assert_eq!(parse_cap(Some("0")), None);
        assert_eq!(parse_cap(Some("many")), None);
        assert_eq!(parse_cap(None), None);
        assert!(default_cap() >= 2);
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
                        throttle.acquire(3);
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
