//! The fork gate: the library never forks while one of its own threads
//! holds a lock that a forked child could need (docs/FAULTS.md D3).
//!
//! A forked child gets a copy of every lock in the parent, in the state it
//! had at the fork; a lock another thread held stays held forever in the
//! child. The library itself takes such locks on the caller's threads:
//! replaying a child's output takes std's stdout or stderr lock (or
//! libtest's capture buffer), re-raising a child's panic runs the default
//! hook, which takes std's backtrace lock, and so does the library's own
//! panic hook. Each of those runs inside [`shared`]; a fork happens inside
//! [`exclusive`]. So one rule covers them all: the forking thread waits for
//! them to finish, and they wait for the fork (a few hundred µs).
//!
//! A lock the user's own code holds on another thread (its own `Mutex`, or
//! a `println!` that is running) is not covered: a child that needs it
//! hangs, and the call's timeout is the rescue.

use std::cell::Cell;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

static GATE: RwLock<()> = RwLock::new(());

thread_local! {
    /// How many [`Shared`] guards this thread holds: a nested one (the
    /// panic hook run by a re-raise) does not take the lock again, which
    /// could deadlock behind a waiting fork.
    static SHARED_DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Held while this thread does something that takes a lock a forked child
/// could need; no fork starts until it is dropped.
#[derive(Debug)]
#[must_use = "the gate is held until the guard is dropped"]
pub(crate) struct Shared {
    _lock: Option<RwLockReadGuard<'static, ()>>,
}

/// Held by a thread across `fork()`, in both processes: the child drops its
/// copy before it runs anything.
#[derive(Debug)]
#[must_use = "the gate is held until the guard is dropped"]
pub(crate) struct Exclusive {
    _lock: Option<RwLockWriteGuard<'static, ()>>,
}

/// Keeps forks out until the guard is dropped.
pub(crate) fn shared() -> Shared {
    let outermost = SHARED_DEPTH
        .try_with(|depth| {
            depth.set(depth.get() + 1);
            depth.get() == 1
        })
        // Thread-local storage is gone (a hook at thread exit): take it.
        .unwrap_or(true);
    let lock = outermost.then(|| GATE.read().unwrap_or_else(PoisonError::into_inner));
    Shared { _lock: lock }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let _ = SHARED_DEPTH.try_with(|depth| depth.set(depth.get().saturating_sub(1)));
    }
}

/// Waits until no thread is inside [`shared`], and keeps them out until
/// the guard is dropped. std's stdout and stderr are initialised first, so
/// that no fork copies one half-initialised.
///
/// A thread that holds [`shared`] itself (a fork-mode call made from a
/// panic hook) cannot wait for itself: it forks without the gate.
pub(crate) fn exclusive() -> Exclusive {
    let _ = (std::io::stdout(), std::io::stderr());
    let inside_shared = SHARED_DEPTH.try_with(|depth| depth.get() > 0);
    let lock =
        (inside_shared == Ok(false)).then(|| GATE.write().unwrap_or_else(PoisonError::into_inner));
    Exclusive { _lock: lock }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_fork_waits_for_every_shared_holder() {
        let held = shared();
        let (done, forked) = mpsc::channel();
        let forker = std::thread::spawn(move || {
            let _gate = exclusive();
            done.send(()).unwrap();
        });
        assert!(forked.recv_timeout(Duration::from_millis(100)).is_err());
        drop(held);
        forked.recv_timeout(Duration::from_secs(10)).unwrap();
        forker.join().unwrap();
    }

    #[test]
    fn nested_shared_guards_take_the_lock_once_and_forks_inside_them_do_not_wait() {
        let outer = shared();
        let inner = shared();
        // A fork-mode call from inside (a panic hook): no self-deadlock.
        drop(exclusive());
        drop(inner);
        drop(outer);
        assert_eq!(SHARED_DEPTH.with(Cell::get), 0);
        // Free again: another thread can take it exclusively.
        std::thread::spawn(|| drop(exclusive())).join().unwrap();
    }
}
