//! The options of an isolated call, as a builder (what `#[bombsquad(...)]`
//! expands to).

use std::borrow::Cow;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::Backend;
use crate::codec::Codec;
use crate::error::Error;
use crate::stdio::Stderr;

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
    pub(crate) name: Option<Cow<'static, str>>,
    pub(crate) stderr: Stderr,
    pub(crate) memory: Option<u64>,
    pub(crate) cpu: Option<Duration>,
    pub(crate) stack_size: Option<usize>,
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

    /// The name reports give the call ("risky_business (pid 42) was killed
    /// by SIGSEGV..."); `#[bombsquad]` sets the function's name.
    #[must_use]
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Where the child's stderr goes ([`Stderr::Inherit`] by default). The
    /// child's stdout is always replayed through `print!`.
    #[must_use]
    pub fn stderr(mut self, stderr: Stderr) -> Self {
        self.stderr = stderr;
        self
    }

    /// Limits the child's memory to `bytes` (`RLIMIT_DATA`): an allocation
    /// beyond it fails, and the error says the call ran out of memory.
    #[must_use]
    pub fn memory(mut self, bytes: u64) -> Self {
        self.memory = Some(bytes);
        self
    }

    /// Limits the child's CPU time (`RLIMIT_CPU`, whole seconds, rounded up).
    #[must_use]
    pub fn cpu(mut self, limit: Duration) -> Self {
        self.cpu = Some(limit);
        self
    }

    /// Runs the function on a thread with a stack of `bytes`.
    #[must_use]
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
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
