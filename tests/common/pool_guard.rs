//! A guard for tests of worker pools: it runs them one at a time and checks,
//! when a test ends, that it left no zombie and no descriptor behind.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

/// Serializes the tests and checks, when it ends, that the test left no
/// descriptor open and no zombie behind.
pub struct Guard {
    _serial: MutexGuard<'static, ()>,
    fds: BTreeMap<String, usize>,
}

pub fn guard() -> Guard {
    guard_after(|| ())
}

/// [`guard`], taking its snapshot after `warm_up` has made the pools of
/// `#[bombsquad(pool = N)]` functions, which live as long as the process.
pub fn guard_after(warm_up: impl FnOnce()) -> Guard {
    super::watchdog();
    let serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    warm_up();
    Guard {
        _serial: serial,
        fds: fd_kinds(),
    }
}

/// Open descriptors by kind ("socket", "pipe", "anon_inode:[pidfd]"...): a
/// replaced worker's descriptors have new numbers and inodes, not new kinds.
pub fn fd_kinds() -> BTreeMap<String, usize> {
    let mut kinds = BTreeMap::new();
    for target in super::open_fds().into_values() {
        let kind = match target.split_once(":[") {
            Some((kind, inode)) if inode.trim_end_matches(']').parse::<u64>().is_ok() => {
                kind.to_owned()
            }
            _ => target,
        };
        *kinds.entry(kind).or_insert(0) += 1;
    }
    kinds.retain(|kind, _| !kind.starts_with("/proc/"));
    kinds
}

impl Drop for Guard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        // Recycled workers are reaped by the keeper thread within their grace.
        let deadline = Instant::now() + Duration::from_secs(3);
        while (!super::zombie_children().is_empty() || fd_kinds() != self.fds)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(super::zombie_children(), Vec::<i32>::new(), "zombies left");
        assert_eq!(fd_kinds(), self.fds, "descriptors leaked");
    }
}
