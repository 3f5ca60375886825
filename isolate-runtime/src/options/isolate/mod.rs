//! The options of an isolated call, as a builder (what `#[bombsquad(...)]`
//! expands to).

use std::borrow::Cow;
use std::fmt;
use std::panic::{RefUnwindSafe, UnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::options::backend::Backend;
use crate::options::callbacks::{Callbacks, OnCrash, OnExit, OnFinish, OnSuccess};
use crate::options::sandbox::{Sandbox, SandboxPolicy};
use crate::options::stderr::Stderr;
use crate::vocabulary::report::NonzeroExitcode;

mod scope;

pub(crate) use scope::{in_scope, leave_scopes_in_child, scoped};

/// What a panic in the child does to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PanicMode {
    /// Re-raise it in the caller with the child's message, as if the call
    /// had run in-process (the default).
    #[default]
    Resume,
    /// Return [`Error::Panicked`](crate::Error::Panicked) instead.
    Error,
}

/// How the child of an isolated call is started; see the crate docs'
/// "Fork, spawn or forkserver".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartMethod {
    /// Fork the caller and run the function directly (no serde for the
    /// arguments; the cost grows with the caller's memory).
    Fork,
    /// Re-execute this binary and run the registered function before
    /// `main`.
    Spawn,
    /// A small server process forks the child: spawn's semantics at a
    /// cost that does not grow with the caller (the default of
    /// `#[bombsquad]`).
    Forkserver,
}

impl StartMethod {
    /// The name the attribute uses: `"fork"`, `"spawn"`, `"forkserver"`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Fork => "fork",
            Self::Spawn => "spawn",
            Self::Forkserver => "forkserver",
        }
    }
}

/// Options for isolated calls: a builder in the style of
/// [`std::process::Command`].
///
/// Its options reach a call in two ways: [`fork`](Self::fork) runs a
/// closure with them, and [`scope`](Self::scope) applies them to every
/// `#[bombsquad]` call the thread makes inside a closure, over the
/// attribute's (for options read from configuration at run time).
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
    pub(crate) max_result: Option<u64>,
    pub(crate) sandbox: Option<SandboxPolicy>,
    pub(crate) callbacks: Callbacks,
    /// `None`: the attribute's (fork for the closure form).
    pub(crate) start_method: Option<StartMethod>,
    /// Every option set on this builder, in order, so that
    /// [`scope`](Self::scope) can replay exactly those over a function's own.
    settings: Vec<Setting>,
}

/// One option a builder method set: its name (as the attribute spells it,
/// or the method's for the callbacks) and how to set it again on another
/// builder. Every setter records one through [`Isolate::set`], so a new
/// option reaches `scope` with no code of its own.
#[derive(Clone)]
pub(crate) struct Setting {
    pub(crate) option: &'static str,
    apply: Arc<dyn Fn(&mut Isolate) + Send + Sync>,
}

// A setting only writes a value it owns into a builder, so a panic cannot
// leave anything it shares half-updated (the callbacks it holds are
// unwind-safe for the reasons given in `callbacks.rs`).
impl UnwindSafe for Setting {}
impl RefUnwindSafe for Setting {}

impl fmt::Debug for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.option)
    }
}

impl Isolate {
    /// The defaults: the file backend, no timeout, panics re-raised.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// How the reply travels back ([`Backend::File`] by default).
    #[must_use]
    pub fn backend(self, backend: Backend) -> Self {
        self.set("backend", move |o| o.backend = backend)
    }

    /// Kills the child's process group and returns [`Error::Timeout`](crate::Error::Timeout) when
    /// the call takes longer. No timeout by default, as for a thread.
    #[must_use]
    pub fn timeout(self, timeout: Duration) -> Self {
        self.set("timeout", move |o| o.timeout = Some(timeout))
    }

    /// What a panic in the child does to the caller.
    #[must_use]
    pub fn panic_mode(self, mode: PanicMode) -> Self {
        self.set("panic", move |o| o.panic_mode = mode)
    }

    /// Where the file backend creates its unnamed reply file (the system
    /// temp dir by default). It never falls back to another directory.
    #[must_use]
    pub fn temp_dir(self, dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        self.set("temp_dir", move |o| o.temp_dir = Some(dir.clone()))
    }

    /// The name reports give the call ("risky_business (pid 42) was killed
    /// by SIGSEGV..."); `#[bombsquad]` sets the function's name.
    #[must_use]
    pub fn name(self, name: impl Into<Cow<'static, str>>) -> Self {
        let name = name.into();
        self.set("name", move |o| o.name = Some(name.clone()))
    }

    /// Where the child's stderr goes ([`Stderr::Inherit`] by default). The
    /// child's stdout is always replayed through `print!`.
    #[must_use]
    pub fn stderr(self, stderr: Stderr) -> Self {
        self.set("stderr", move |o| o.stderr = stderr.clone())
    }

    /// Limits what the function may allocate to `bytes` more than the child
    /// holds when the call starts (`RLIMIT_DATA`: heap, anonymous mappings
    /// and thread stacks; not `RLIMIT_AS`, which also counts address space
    /// reserved but never used). An allocation beyond it fails; std then
    /// prints `memory allocation of N bytes failed` and aborts, and the
    /// error says so: [`NonzeroExitcode::is_oom`], "out of memory:
    /// allocation of 1.0 GiB failed under the 256.0 MiB limit". C code sees
    /// `malloc` return NULL instead.
    ///
    /// In fork mode the child starts with a copy of the parent's memory,
    /// which the kernel counts too: the limit is set to the parent's data
    /// size at the fork plus `bytes` (plus [`stack_size`](Self::stack_size)).
    /// The limit is per process: a function that forks gives each process
    /// its own.
    ///
    /// # Examples
    ///
    /// ```
    /// use bombsquad::{Error, Isolate, Stderr};
    ///
    /// let err = Isolate::new()
    ///     .memory(64 << 20)
    ///     .stderr(Stderr::Capture)
    ///     .fork(|| vec![1u8; 1 << 30].len())
    ///     .unwrap_err();
    /// let Error::NonzeroExitcode(e) = err else { panic!("{err}") };
    /// assert!(e.is_oom());
    /// assert!(e.to_string().contains("under the 64.0 MiB limit"), "{e}");
    /// ```
    #[must_use]
    pub fn memory(self, bytes: u64) -> Self {
        self.set("memory", move |o| o.memory = Some(bytes))
    }

    /// Limits the child's CPU time (`RLIMIT_CPU`, in whole seconds, rounded
    /// up): the kernel sends SIGXCPU when it is used up, and SIGKILL a
    /// second later if that is ignored. The error says "CPU time limit of
    /// 1 s exceeded" ([`NonzeroExitcode::is_cpu_limit`]). CPU time is not
    /// wall time: a sleeping child never reaches it (use a
    /// [`timeout`](Self::timeout)).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use bombsquad::{Error, Isolate};
    ///
    /// let err = Isolate::new()
    ///     .cpu(Duration::from_secs(1))
    ///     .fork(|| -> u64 { loop { std::hint::black_box(0u64); } })
    ///     .unwrap_err();
    /// let Error::NonzeroExitcode(e) = err else { panic!("{err}") };
    /// assert!(e.is_cpu_limit());
    /// ```
    #[must_use]
    pub fn cpu(self, limit: Duration) -> Self {
        self.set("cpu", move |o| o.cpu = Some(limit))
    }

    /// Runs the function on a thread with a stack of `bytes` in the child,
    /// for deep recursion (a spawned child's main thread has the default 8
    /// MiB; a forked child runs on what is left of the calling thread's
    /// stack, 2 MiB for a libtest thread). A stack overflow is reported as
    /// [`NonzeroExitcode::is_stack_overflow`].
    ///
    /// In fork mode the closure and its captures move to that thread for
    /// the call while the child's original thread waits: a capture tied to
    /// the calling thread (a held `MutexGuard`, a thread-local) does not
    /// belong there. A thread that cannot be started (the stack does not
    /// fit under [`memory`](Self::memory), which counts it) is reported as
    /// a panic of the call.
    #[must_use]
    pub fn stack_size(self, bytes: usize) -> Self {
        self.set("stack_size", move |o| o.stack_size = Some(bytes))
    }

    /// Sandboxes the child: it can compute, but not open files (beyond the
    /// paths the [`Sandbox`] names), reach the network, start processes or
    /// make dangerous system calls. See [`Sandbox`] for what the function
    /// gets when it tries. Linux only.
    ///
    /// # Errors
    ///
    /// A call returns [`Error::Sandbox`](crate::Error::Sandbox) without running the function when
    /// the kernel cannot enforce the policy (unless
    /// [`Sandbox::best_effort`]) or a path it names does not exist.
    ///
    /// # Examples
    ///
    /// ```
    /// use bombsquad::{Error, Isolate, Sandbox};
    ///
    /// let err = Isolate::new()
    ///     .sandbox(Sandbox::compute())
    ///     .fork(|| -> () {
    ///         // SAFETY: a plain request to be traced; it never gets that far.
    ///         unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) };
    ///     })
    ///     .unwrap_err();
    /// let Error::NonzeroExitcode(exit) = err else { panic!("{err}") };
    /// assert_eq!(exit.sandbox_violation(), Some("ptrace"));
    /// ```
    #[must_use]
    pub fn sandbox(self, sandbox: Sandbox) -> Self {
        let policy = sandbox.policy().clone();
        self.set("sandbox", move |o| o.sandbox = Some(policy.clone()))
    }

    /// The largest reply the parent accepts from the child, in bytes: the
    /// encoded result (MessagePack; a `Vec<u8>` or `String` is its length
    /// plus at most 5 bytes). Every backend checks it before it reads or
    /// allocates anything for the result: the pipe backend and a pool's
    /// channel on each frame header as it arrives (the child is killed at
    /// once), the file and shm backends on the file's length, a pool on the
    /// size of a result in its arena. A reply over it is
    /// [`Error::ResultTooLarge`](crate::Error::ResultTooLarge), naming both sizes. What is not the
    /// result has limits of its own, whatever this one is, so a small
    /// limit still lets a panic's message through: a panic report or a
    /// progress message may hold 1 MiB (or this limit, if larger), and a
    /// reply 16 MiB besides its result (the reports of panics the function
    /// caught, frame headers).
    ///
    /// The default is 4 GiB: the longest `Vec<u8>` or `String` MessagePack
    /// can carry, so every result the fast `bin` path can send fits, while a
    /// child that lies or runs away can never make the parent allocate more
    /// than that per call (the frame format's own cap is 16 GiB). A result
    /// larger than 4 GiB in MessagePack (a `Vec<u64>` of a billion items)
    /// needs a larger limit, and the memory for it in the parent.
    ///
    /// # Examples
    ///
    /// ```
    /// use bombsquad::{Backend, Error, Isolate};
    ///
    /// let err = Isolate::new()
    ///     .backend(Backend::Pipe)
    ///     .max_result(1 << 20)
    ///     .fork(|| vec![7u8; 2 << 20])
    ///     .unwrap_err();
    /// let Error::ResultTooLarge { size, limit } = err else { panic!("{err}") };
    /// assert_eq!((size, limit), ((2 << 20) + 5, 1 << 20));
    /// ```
    #[must_use]
    pub fn max_result(self, bytes: u64) -> Self {
        self.set("max_result", move |o| o.max_result = Some(bytes))
    }

    /// The [`max_result`](Self::max_result) in force.
    pub(crate) fn result_limit(&self) -> u64 {
        /// The default `max_result`: MessagePack's longest `bin` or `str`.
        const DEFAULT_MAX_RESULT: u64 = 4 << 30;
        self.max_result.unwrap_or(DEFAULT_MAX_RESULT)
    }

    /// Called in the parent when the call returned a value.
    ///
    /// Callbacks run after the outcome is known, in this order: one of
    /// `on_success`, `on_fault`, `on_kill`, `on_exit` (or none of them, for
    /// a panic, a timeout or another error), then `on_finish`, always last.
    /// They run for every call whose child was started; an error before
    /// that (the OS refused a process or a pipe) runs none. A callback that
    /// panics does not stop the others: its panic is resumed after
    /// `on_finish` ran, in place of the call's result (or of a re-raised
    /// child panic).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use bombsquad::Isolate;
    ///
    /// let log = Arc::new(Mutex::new(Vec::new()));
    /// let (a, b) = (log.clone(), log.clone());
    /// let value = Isolate::new()
    ///     .on_success(move || a.lock().unwrap().push("success".to_owned()))
    ///     .on_finish(move |ok, code| b.lock().unwrap().push(format!("finish {ok} {code}")))
    ///     .fork(|| 6 * 7)
    ///     .unwrap();
    /// assert_eq!(value, 42);
    /// assert_eq!(*log.lock().unwrap(), ["success", "finish true 0"]);
    /// ```
    #[must_use]
    pub fn on_success(self, callback: impl Fn() + Send + Sync + 'static) -> Self {
        let callback: OnSuccess = Arc::new(callback);
        self.set("on_success", move |o| {
            o.callbacks.on_success = Some(callback.clone())
        })
    }

    /// Called in the parent when the child was killed by SIGSEGV, SIGBUS,
    /// SIGILL, SIGFPE or SIGABRT, with the error the call returns. See
    /// [`on_success`](Self::on_success) for the order.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicI32, Ordering};
    /// use std::sync::Arc;
    /// use bombsquad::Isolate;
    ///
    /// let seen = Arc::new(AtomicI32::new(0));
    /// let s = seen.clone();
    /// let _ = Isolate::new()
    ///     .on_fault(move |e| s.store(e.exitcode(), Ordering::Relaxed))
    ///     .fork(|| -> () { std::process::abort() });
    /// assert_eq!(seen.load(Ordering::Relaxed), -libc::SIGABRT);
    /// ```
    #[must_use]
    pub fn on_fault(self, callback: impl Fn(&NonzeroExitcode) + Send + Sync + 'static) -> Self {
        let callback: OnCrash = Arc::new(callback);
        self.set("on_fault", move |o| {
            o.callbacks.on_fault = Some(callback.clone())
        })
    }

    /// Called in the parent when the child was killed by a SIGKILL this
    /// library did not send (the OOM killer, an operator); a
    /// [`timeout`](Self::timeout) is not one. See
    /// [`on_success`](Self::on_success) for the order.
    #[must_use]
    pub fn on_kill(self, callback: impl Fn(&NonzeroExitcode) + Send + Sync + 'static) -> Self {
        let callback: OnCrash = Arc::new(callback);
        self.set("on_kill", move |o| {
            o.callbacks.on_kill = Some(callback.clone())
        })
    }

    /// Called in the parent with the exit code when the child exited with
    /// a nonzero code. See [`on_success`](Self::on_success) for the order.
    #[must_use]
    pub fn on_exit(self, callback: impl Fn(i32) + Send + Sync + 'static) -> Self {
        let callback: OnExit = Arc::new(callback);
        self.set("on_exit", move |o| {
            o.callbacks.on_exit = Some(callback.clone())
        })
    }

    /// Called in the parent after every call whose child was started, last:
    /// whether the call returned a value, and the child's exit code as
    /// [`NonzeroExitcode::exitcode`] gives it (0 for a clean exit, a panic
    /// included; minus the signal, -9 for a timeout).
    #[must_use]
    pub fn on_finish(self, callback: impl Fn(bool, i32) + Send + Sync + 'static) -> Self {
        let callback: OnFinish = Arc::new(callback);
        self.set("on_finish", move |o| {
            o.callbacks.on_finish = Some(callback.clone())
        })
    }

    /// How the child is started. For a `#[bombsquad]` function it applies
    /// through [`scope`](Self::scope): a function declared with spawn or
    /// forkserver (both registered by name) can run under any of the three;
    /// a `start_method = "fork"` function (not registered, its arguments not
    /// serialized) only under [`StartMethod::Fork`]; a `pool = N` function's
    /// workers are always spawned. [`fork`](Self::fork) always forks.
    /// Anything else is [`Error::InvalidOptions`](crate::Error::InvalidOptions) at the call.
    ///
    /// # Examples
    ///
    /// ```
    /// use bombsquad::{Isolate, StartMethod, bombsquad};
    ///
    /// #[bombsquad]
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    ///
    /// let method = StartMethod::Forkserver; // read from configuration
    /// let squared = Isolate::new().start_method(method).scope(|| square(7));
    /// assert_eq!(squared.unwrap(), 49);
    /// ```
    #[must_use]
    pub fn start_method(self, method: StartMethod) -> Self {
        self.set("start_method", move |o| o.start_method = Some(method))
    }

    /// Sets an option by `apply` and records it, so [`scope`](Self::scope)
    /// can set it again over a function's own options. `option` is its
    /// name as the attribute spells it (the method's name otherwise).
    fn set(
        mut self,
        option: &'static str,
        apply: impl Fn(&mut Self) + Send + Sync + 'static,
    ) -> Self {
        apply(&mut self);
        self.settings.push(Setting {
            option,
            apply: Arc::new(apply),
        });
        self
    }

    /// Runs `f`, and applies this builder's options to every `#[bombsquad]`
    /// call this thread makes inside it, over the options in the function's
    /// attribute: the options a program knows only at run time (a timeout
    /// or a memory limit from its configuration, a start method) without
    /// changing the functions. Returns what `f` returns; each call inside
    /// still returns its own `Result`.
    ///
    /// - Only the options set on this builder apply; the rest stay the
    ///   attribute's. Scopes nest: the inner one's options win, and the
    ///   outer one's still apply where the inner one sets nothing.
    /// - Other threads are untouched, and so are calls made inside an
    ///   isolated call's child. The closure forms ([`fork`](Self::fork),
    ///   [`crate::fork`]) use their own builder, not the scope's.
    /// - `pool = N` functions take per call only `timeout`, `panic`, `name`
    ///   and the callbacks (`on_success`..`on_finish`), and
    ///   [`StartMethod::Spawn`] (what their workers are). The others are
    ///   fixed when the pool's workers start; a scope that sets one fails
    ///   the call with [`Error::InvalidOptions`](crate::Error::InvalidOptions) rather than ignoring it.
    /// - A start method a function cannot use fails the call with
    ///   [`Error::InvalidOptions`](crate::Error::InvalidOptions) too; see [`start_method`](Self::start_method).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use bombsquad::{Error, Isolate, bombsquad};
    ///
    /// #[bombsquad(timeout = "1h")]
    /// fn slow() {
    ///     std::thread::sleep(Duration::from_secs(60));
    /// }
    ///
    /// let timeout = Duration::from_millis(100); // read from configuration
    /// let result = Isolate::new().timeout(timeout).scope(|| slow());
    /// assert!(matches!(result, Err(Error::Timeout { after, .. }) if after == timeout));
    /// ```
    pub fn scope<R>(&self, f: impl FnOnce() -> R) -> R {
        let _leave = scope::enter(self.settings.clone());
        f()
    }

    pub(crate) fn deadline(&self) -> Option<std::time::Instant> {
        self.timeout.map(|t| std::time::Instant::now() + t)
    }
}
