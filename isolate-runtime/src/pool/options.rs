//! How a pool of workers behaves: a builder, as [`Isolate`] is for calls.

use std::time::Duration;

use crate::options::isolate::Isolate;

/// Options for a pool of warm workers ([`Worker`](crate::Worker),
/// [`RemoteWorker`](crate::RemoteWorker), `#[bombsquad(pool = N)]`).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use bombsquad::{Isolate, WorkerOptions};
///
/// let options = WorkerOptions::new()
///     .workers(4)
///     .max_calls(1000)
///     .retries(1)
///     .isolate(Isolate::new().timeout(Duration::from_secs(5)));
/// # let _ = options;
/// ```
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub(crate) workers: usize,
    pub(crate) max_calls: Option<u64>,
    pub(crate) max_rss_growth: Option<u64>,
    pub(crate) retries: u32,
    pub(crate) shutdown_grace: Duration,
    pub(crate) isolate: Isolate,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            workers: 1,
            max_calls: None,
            max_rss_growth: None,
            retries: 0,
            shutdown_grace: Duration::from_secs(1),
            isolate: Isolate::new(),
        }
    }
}

impl WorkerOptions {
    /// One worker, never recycled, no retries, a 1 s shutdown grace.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// How many workers serve calls at once (1 by default); further calls
    /// wait for one to be free. Workers start when first needed.
    ///
    /// # Panics
    ///
    /// If `workers` is 0.
    #[must_use]
    pub fn workers(mut self, workers: usize) -> Self {
        assert!(workers >= 1, "a pool needs at least one worker");
        self.workers = workers;
        self
    }

    /// Replaces a worker after it has answered `calls` calls (between
    /// calls, without an error), bounding what leaks can accumulate.
    #[must_use]
    pub fn max_calls(mut self, calls: u64) -> Self {
        self.max_calls = Some(calls);
        self
    }

    /// Replaces a worker, between calls, once its resident memory has grown
    /// by more than `bytes` since its first call (loky's rule).
    #[must_use]
    pub fn max_rss_growth(mut self, bytes: u64) -> Self {
        self.max_rss_growth = Some(bytes);
        self
    }

    /// Runs a call again, on a fresh worker, up to `retries` times when its
    /// worker crashed (was killed by a signal or exited) under it; never
    /// when it panicked, returned an error or timed out. Waits 50 ms before
    /// the first retry, doubling each time. None by default: a retried
    /// call runs its side effects twice.
    #[must_use]
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// How long a worker asked to leave (at shutdown, or when recycled) may
    /// take before its process group is killed (1 s by default).
    #[must_use]
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// The options of each call: its timeout, memory and CPU limits, where
    /// the worker's stderr goes, its name in reports, outcome callbacks.
    /// Memory is limited for the worker as a whole (it starts small); CPU
    /// time per call. A [`RemoteWorker`](crate::RemoteWorker) applies no
    /// limits of its own: its program sets them, if it wants any. The backend does not apply: a worker answers on its
    /// channel, and a result of 1 MiB or more through a shared arena.
    #[must_use]
    pub fn isolate(mut self, isolate: Isolate) -> Self {
        self.isolate = isolate;
        self
    }
}
