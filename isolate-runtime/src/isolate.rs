//! The options of an isolated call, as a builder (what `#[bombsquad(...)]`
//! expands to).

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::Backend;
use crate::codec::Codec;
use crate::error::Error;

/// What a panic in the child does to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PanicMode {
    /// Re-raise it in the caller with the child's message, as if the call
    /// had run in-process (the default).
    #[default]
    Resume,
    /// Return [`Error::Panicked`] instead.
    Error,
}

/// Options for isolated calls: a builder in the style of
/// [`std::process::Command`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use bombsquad::{Backend, Error, Isolate};
///
/// let result = Isolate::new()
///     .backend(Backend::Pipe)
///     .timeout(Duration::from_millis(200))
///     .fork(|| std::thread::sleep(Duration::from_secs(30)));
/// assert!(matches!(result, Err(Error::Timeout { .. })));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Isolate {
    pub(crate) backend: Backend,
    pub(crate) timeout: Option<Duration>,
    pub(crate) panic_mode: PanicMode,
    pub(crate) temp_dir: Option<PathBuf>,
}

impl Isolate {
    /// The defaults: the file backend, no timeout, panics re-raised.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// How the reply travels back ([`Backend::File`] by default).
    #[must_use]
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Kills the child's process group and returns [`Error::Timeout`] when
    /// the call takes longer. No timeout by default, as for a thread.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// What a panic in the child does to the caller.
    #[must_use]
    pub fn panic_mode(mut self, mode: PanicMode) -> Self {
        self.panic_mode = mode;
        self
    }

    /// Where the file backend creates its unnamed reply file (the system
    /// temp dir by default). It never falls back to another directory.
    #[must_use]
    pub fn temp_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.temp_dir = Some(dir.into());
        self
    }

    /// Runs `function` in a forked child and returns its result.
    ///
    /// The closure's captures are copied with the process (nothing is
    /// serialized); the result crosses back as MessagePack. The child leaves
    /// with `_exit`: it never returns past the fork point and never runs the
    /// parent's `atexit` handlers.
    ///
    /// Fork is fast but unsafe in spirit in a multi-threaded parent: the
    /// child may block forever on a lock another thread held at the fork
    /// (std's stdout lock included). Set a timeout there.
    ///
    /// # Errors
    ///
    /// Every [`Error`] variant but `NestingTooDeep` for a top-level call;
    /// see its documentation.
    ///
    /// # Panics
    ///
    /// Re-raises a panic of `function` (with [`PanicMode::Resume`]).
    #[track_caller]
    pub fn fork<R, F>(&self, function: F) -> Result<R, Error>
    where
        R: Serialize + DeserializeOwned,
        F: FnOnce() -> R,
    {
        crate::fork::call(self, Codec::serde(), function)
    }

    pub(crate) fn deadline(&self) -> Option<std::time::Instant> {
        self.timeout.map(|t| std::time::Instant::now() + t)
    }
}

/// Runs `function` in a forked child with the default options: the closure
/// form of `#[bombsquad(start_method = "fork")]`.
///
/// # Examples
///
/// ```
/// let v = vec![1, 2, 3];
/// assert_eq!(bombsquad::fork(|| v.iter().sum::<i32>()).unwrap(), 6);
/// ```
///
/// # Errors
///
/// See [`Isolate::fork`].
///
/// # Panics
///
/// Re-raises a panic of `function`.
#[track_caller]
pub fn fork<R, F>(function: F) -> Result<R, Error>
where
    R: Serialize + DeserializeOwned,
    F: FnOnce() -> R,
{
    Isolate::new().fork(function)
}
