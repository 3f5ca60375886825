//! A global allocator that is not fork-safe: its lock has no `pthread_atfork`
//! handlers, so a fork while another thread holds it leaves the child's
//! copy locked forever, and the child's first allocation never returns
//! (docs/FAULTS.md H5). A forked call then ends at its timeout; a
//! fork-server call is not touched, since its child is forked from the
//! server, whose allocator no thread of the caller holds.
//!
//! Deterministic: this test's own `pthread_atfork` handlers make another
//! thread take the allocator's lock just before the fork and let it go
//! just after, in the parent. Its own binary: the global allocator and the
//! fork handlers are process-wide.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use bombsquad::{Error, bombsquad};

/// The system allocator behind a spin lock, as a hand-made allocator might
/// be, with no fork handlers.
struct SpinLocked;

static LOCKED: AtomicBool = AtomicBool::new(false);

impl SpinLocked {
    fn lock() {
        while LOCKED
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::thread::yield_now();
        }
    }

    fn unlock() {
        LOCKED.store(false, Ordering::Release);
    }
}

// SAFETY: every method forwards to `System`, which upholds the contract,
// under a lock that only orders the calls.
unsafe impl GlobalAlloc for SpinLocked {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::lock();
        // SAFETY: the caller's `layout` meets `alloc`'s contract.
        let pointer = unsafe { System.alloc(layout) };
        Self::unlock();
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        Self::lock();
        // SAFETY: `pointer` came from `alloc` with this `layout`.
        unsafe { System.dealloc(pointer, layout) };
        Self::unlock();
    }
}

#[global_allocator]
static ALLOCATOR: SpinLocked = SpinLocked;

/// What the fork handlers do: nothing, or have the holder thread take the
/// allocator's lock across the next fork.
static HOLD_ACROSS_FORK: AtomicBool = AtomicBool::new(false);

/// The holder's state: 0 idle, 1 asked to take the lock, 2 holding it,
/// 3 asked to let it go.
static HOLDER: AtomicU8 = AtomicU8::new(0);

extern "C" fn before_fork() {
    if HOLD_ACROSS_FORK.load(Ordering::Acquire) {
        HOLDER.store(1, Ordering::Release);
        while HOLDER.load(Ordering::Acquire) != 2 {
            std::hint::spin_loop();
        }
    }
}

extern "C" fn after_fork_in_parent() {
    if HOLD_ACROSS_FORK.load(Ordering::Acquire) {
        HOLDER.store(3, Ordering::Release);
        while HOLDER.load(Ordering::Acquire) != 0 {
            std::hint::spin_loop();
        }
    }
}

/// Starts the holder thread and registers the fork handlers, once.
fn install_the_holder() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let (ready, started) = mpsc::channel();
        std::thread::spawn(move || {
            ready.send(()).unwrap();
            loop {
                if HOLDER.load(Ordering::Acquire) == 1 {
                    SpinLocked::lock();
                    HOLDER.store(2, Ordering::Release);
                    while HOLDER.load(Ordering::Acquire) != 3 {
                        std::hint::spin_loop();
                    }
                    SpinLocked::unlock();
                    HOLDER.store(0, Ordering::Release);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        started.recv().unwrap();
        // SAFETY: both handlers only touch atomics; none for the child.
        let registered =
            unsafe { libc::pthread_atfork(Some(before_fork), Some(after_fork_in_parent), None) };
        assert_eq!(registered, 0);
    });
}

#[bombsquad(start_method = "fork", timeout = "2s")]
fn forked(values: Vec<u64>) -> u64 {
    digits(&values)
}

#[bombsquad(start_method = "forkserver", timeout = "2s")]
fn forkserved(values: Vec<u64>) -> u64 {
    digits(&values)
}

/// How many digits `values` have, written out: it allocates, which in a
/// child forked with the allocator's lock held never returns.
fn digits(values: &[u64]) -> u64 {
    values
        .iter()
        .map(|v| v.to_string())
        .collect::<String>()
        .len() as u64
}

/// H5: with the allocator's lock held by another thread at the fork, the
/// forked child hangs in its first allocation and the call ends at its
/// timeout; the same call from the fork server returns.
#[test]
fn a_fork_while_the_allocator_is_locked_is_a_timeout_but_not_from_the_fork_server() {
    common::watchdog();
    install_the_holder();
    bombsquad::start_forkserver().unwrap();
    assert_eq!(
        forked(vec![1, 22, 333]).unwrap(),
        6,
        "unarmed, a forked call works"
    );
    HOLD_ACROSS_FORK.store(true, Ordering::Release);
    let held = forked(vec![1, 22, 333]);
    let served = forkserved(vec![1, 22, 333]);
    HOLD_ACROSS_FORK.store(false, Ordering::Release);
    match held {
        Err(Error::Timeout { after, .. }) => assert_eq!(after, Duration::from_secs(2)),
        other => panic!("expected the forked child to hang until its timeout, got {other:?}"),
    }
    assert_eq!(served.unwrap(), 6);
    assert_eq!(
        forked(vec![4, 55]).unwrap(),
        3,
        "unarmed again, a forked call works"
    );
}
