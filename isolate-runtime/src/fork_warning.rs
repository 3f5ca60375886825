//! The one-time warning about fork mode without a timeout in a
//! multi-threaded process (FAULTS.md D3): the child may block forever on a
//! lock another thread held at the fork (std's stdout lock, a `Mutex`), and
//! only a timeout rescues it. CPython warns the same way.

use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once the warning was printed, so later calls skip the check.
static WARNED: AtomicBool = AtomicBool::new(false);

/// Warns once per process when a fork-mode call without a timeout starts
/// while other threads run. Costs one read of `/proc/self/status` per call
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
            eprintln!("{}", message(threads));
        });
    }
}

fn message(threads: usize) -> String {
    format!(
        "bombsquad: warning: a fork-mode call without a timeout in a process with {threads} \
         threads; the child can deadlock on a lock another thread held at the fork (std's \
         stdout lock, any Mutex). Set a timeout, or use start_method = \"spawn\". \
         (printed once)"
    )
}

/// `Threads:` from `/proc/self/status`.
fn thread_count() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_threads(&status)
}

fn parse_threads(status: &str) -> Option<usize> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_count_is_read_from_proc_status() {
        assert_eq!(
            parse_threads("Name:\tx\nThreads:\t7\nSigQ:\t0/1\n"),
            Some(7)
        );
        assert_eq!(parse_threads("Name:\tx\n"), None);
        // The unit-test harness runs tests on threads of its own.
        assert!(thread_count().unwrap() >= 1);
    }

    #[test]
    fn the_message_names_the_fix() {
        let text = message(3);
        assert!(text.contains("3 threads"), "{text}");
        assert!(text.contains("timeout"), "{text}");
        assert!(text.contains("spawn"), "{text}");
    }
}
