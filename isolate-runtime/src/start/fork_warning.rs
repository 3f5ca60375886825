//! The one-time warning about fork mode without a timeout in a
//! multi-threaded process (docs/FAULTS.md D3): the child may block forever on a
//! lock another thread held at the fork (std's stdout lock, a `Mutex`), and
//! only a timeout rescues it. CPython warns the same way.

use std::os::unix::fs::MetadataExt as _;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once the warning was printed, so later calls skip the check.
static WARNED: AtomicBool = AtomicBool::new(false);

/// Warns once per process when a fork-mode call without a timeout starts
/// while other threads run. Costs one `stat` per call
/// until it has warned, and nothing when a timeout is set.
pub(crate) fn check(has_timeout: bool) {
    if has_timeout || WARNED.load(Ordering::Relaxed) {
        return;
    }
    let Some(threads) = thread_count() else {
        return;
    };
    if threads > 1 {
        static WARN: Once = Once::new();
        WARN.call_once(|| {
            WARNED.store(true, Ordering::Relaxed);
            crate::vocabulary::diagnostics::fork_without_timeout(&message(threads));
        });
    }
}

fn message(threads: usize) -> String {
    format!(
        "warning: a fork-mode call without a timeout in a process with {threads} \
         threads; the child can deadlock on a lock another thread held at the fork (std's \
         stdout lock, any Mutex). Set a timeout, or use start_method = \"spawn\". \
         (printed once)"
    )
}

/// The number of threads: procfs gives `/proc/self/task` one link per
/// thread beyond the directory's own two. One `stat`, where reading
/// `/proc/self/status` costs an open, a read of 1.5 KiB and a close per call.
fn thread_count() -> Option<usize> {
    let links = std::fs::metadata("/proc/self/task").ok()?.nlink();
    usize::try_from(links.checked_sub(2)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_count_follows_the_threads() {
        let before = thread_count().unwrap();
        assert!(before >= 1);
        let (started, stop) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
        std::thread::scope(|scope| {
            scope.spawn(|| {
                started.wait();
                stop.wait();
            });
            started.wait();
            // Other unit tests may start or end threads meanwhile.
            assert!(thread_count().unwrap() >= 2);
            stop.wait();
        });
    }

    #[test]
    fn the_message_names_the_fix() {
        let text = message(3);
        assert!(text.contains("3 threads"), "{text}");
        assert!(text.contains("timeout"), "{text}");
        assert!(text.contains("spawn"), "{text}");
    }
}
