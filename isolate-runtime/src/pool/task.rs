//! State-holding workers: a [`Task`] lives in its worker process across
//! calls, until the worker crashes and a fresh one takes over.

use std::any::Any;
use std::marker::PhantomData;
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::child::registry::Entry;
use crate::pool::{Launch, Pool, WorkerOptions};
use crate::vocabulary::error::Error;
use crate::wire::codec::Codec;

/// Work done by a long-lived worker process that keeps its state between
/// calls (tarnish's `Task`).
///
/// Register the implementation with `#[bombsquad]` on the `impl` block;
/// nothing else is needed (no `main` editing). Each worker starts from
/// `T::default()`, runs [`init`](Task::init) once, then serves
/// [`run`](Task::run) for each call. After a crash the replacement starts
/// fresh the same way.
///
/// # Examples
///
/// ```
/// use bombsquad::{bombsquad, Task, Worker};
///
/// #[derive(Default)]
/// struct Counter {
///     total: u64,
/// }
///
/// #[bombsquad]
/// impl Task for Counter {
///     type Input = u64;
///     type Output = u64;
///     type Error = String;
///
///     fn run(&mut self, add: u64) -> Result<u64, String> {
///         self.total += add;
///         Ok(self.total)
///     }
/// }
///
/// # fn main() -> Result<(), bombsquad::Error> {
/// let counter = Worker::<Counter>::spawn()?;
/// assert_eq!(counter.call(2)?, Ok(2));
/// assert_eq!(counter.call(3)?, Ok(5)); // the state lives on in the worker
/// # Ok(()) }
/// ```
pub trait Task: Default + Send + 'static {
    /// What a call sends.
    type Input: Serialize + DeserializeOwned;
    /// What a call returns.
    type Output: Serialize + DeserializeOwned;
    /// What a call may fail with (the task's own error, not a crash).
    type Error: Serialize + DeserializeOwned;

    /// Runs once in each new worker process, before it takes calls (open a
    /// library, load a model). A panic or crash here is a failed start.
    fn init(&mut self) {}

    /// Handles one call, in the worker process.
    ///
    /// # Errors
    ///
    /// The task's own failure, returned to the caller as `Ok(Err(..))`.
    fn run(&mut self, input: Self::Input) -> Result<Self::Output, Self::Error>;
}

/// A [`Task`] registered with `#[bombsquad]`. Not public API: the attribute
/// implements it.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not registered as a bombsquad task",
    label = "put `#[bombsquad]` on its `impl Task for {Self}` block"
)]
pub trait RegisteredTask: Task {
    fn entry() -> &'static Entry;
}

/// The task of this worker process (one per process: a worker serves one
/// task type).
static TASK: Mutex<Option<Box<dyn Any + Send>>> = Mutex::new(None);

/// A worker's init hook for `T`. Not public API.
#[doc(hidden)]
pub fn init_task<T: Task>() {
    let mut task = T::default();
    task.init();
    *TASK.lock().unwrap_or_else(PoisonError::into_inner) = Some(Box::new(task));
}

/// Serves one call of `T` in a worker. Not public API.
#[doc(hidden)]
pub fn serve_task<T: Task>(args: &[u8]) {
    let mut slot = TASK.lock().unwrap_or_else(PoisonError::into_inner);
    let task = slot
        .as_mut()
        .and_then(|task| task.downcast_mut::<T>())
        .expect("a task worker was initialized with its task");
    crate::child::serve_registered(
        args,
        Codec::<Result<T::Output, T::Error>>::serde(),
        |input| task.run(input),
    );
}

/// A pool of worker processes that each hold a [`Task`]: calls from any
/// number of threads are served by up to
/// [`WorkerOptions::workers`] processes at once. A worker that crashes,
/// times out or is killed fails only the call it was running and is
/// replaced before the next one.
///
/// Dropping it shuts the workers down ([`Worker::shutdown`] with the
/// configured grace).
pub struct Worker<T> {
    pool: Pool,
    task: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Worker<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("task", &std::any::type_name::<T>())
            .field("pool", &self.pool)
            .finish()
    }
}

impl<T: Task> Worker<T> {
    /// Starts one worker and waits until it is ready.
    ///
    /// # Errors
    ///
    /// [`Error::WorkerStartup`] when the worker keeps dying before it is
    /// ready (its `init` crashes); [`Error::Spawn`] when it cannot be
    /// started at all.
    pub fn spawn() -> Result<Self, Error>
    where
        T: RegisteredTask,
    {
        Self::spawn_with(WorkerOptions::new())
    }

    /// Starts `options.workers` workers and waits until they are ready.
    ///
    /// # Errors
    ///
    /// As [`Worker::spawn`].
    pub fn spawn_with(options: WorkerOptions) -> Result<Self, Error>
    where
        T: RegisteredTask,
    {
        let pool = Pool::new(Launch::Registered(T::entry()), options)?;
        pool.fill()?;
        Ok(Self {
            pool,
            task: PhantomData,
        })
    }

    /// Runs [`Task::run`] with `input` on a free worker (waiting for one if
    /// all are busy).
    ///
    /// # Errors
    ///
    /// The outer `Err` is the isolation's: the worker crashed
    /// ([`Error::NonzeroExitcode`]), timed out, or the pool was shut down.
    /// The inner one is the task's own error.
    ///
    /// # Panics
    ///
    /// Re-raises a panic of `run` (see [`Isolate::panic_mode`](crate::Isolate::panic_mode)).
    #[track_caller]
    pub fn call(&self, input: T::Input) -> Result<Result<T::Output, T::Error>, Error> {
        self.pool.call(&input, Codec::serde(), None)
    }

    /// [`call`](Self::call), awaited on tokio (feature `tokio`): waiting
    /// for a free worker and for its answer never blocks the executor's
    /// thread. The input is encoded at once; the future borrows only the
    /// `Worker`. Dropping it mid-call kills the worker's process group and
    /// reaps it; the pool starts a fresh worker for the next call.
    ///
    /// # Examples
    ///
    /// ```
    /// # use bombsquad::{bombsquad, Task, Worker};
    /// # #[derive(Default)]
    /// # struct Counter { total: u64 }
    /// # #[bombsquad]
    /// # impl Task for Counter {
    /// #     type Input = u64;
    /// #     type Output = u64;
    /// #     type Error = String;
    /// #     fn run(&mut self, add: u64) -> Result<u64, String> { self.total += add; Ok(self.total) }
    /// # }
    /// # fn main() -> Result<(), bombsquad::Error> {
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let counter = Worker::<Counter>::spawn()?;
    /// assert_eq!(counter.call_async(2).await?, Ok(2));
    /// # Ok(()) })
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`call`](Self::call)'s; [`Error::Spawn`] when it is polled
    /// outside a tokio runtime, or after its runtime shut down.
    ///
    /// # Panics
    ///
    /// As [`call`](Self::call), when polled to completion.
    #[cfg(feature = "tokio")]
    pub fn call_async(
        &self,
        input: T::Input,
    ) -> impl Future<Output = Result<Result<T::Output, T::Error>, Error>> + Send + '_ {
        self.pool.call_soon(&input, Codec::serde())
    }

    /// How many workers were replaced after they died, timed out or were
    /// killed (recycling by `max_calls` does not count).
    #[must_use]
    pub fn restarts(&self) -> u64 {
        self.pool.restarts()
    }

    /// The pid of a live worker, if any is running.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.pids().first().copied()
    }

    /// The pids of the live workers.
    #[must_use]
    pub fn pids(&self) -> Vec<u32> {
        self.pool.pids()
    }

    /// Asks every worker to leave, waits up to `grace`, then kills their
    /// process groups. Calls in flight and later calls end with
    /// [`Error::PoolClosed`]. Returns within `grace` plus a few milliseconds.
    pub fn shutdown(&self, grace: Duration) {
        self.pool.shutdown(grace);
    }
}

/// A pool of workers that are another program speaking `PROTOCOL.md` (a
/// Python script, a C++ binary): started with its channel as stdin,
/// replaced when it crashes, like [`Worker`].
///
/// # Examples
///
/// ```no_run
/// use std::process::Command;
/// use bombsquad::RemoteWorker;
///
/// # fn main() -> Result<(), bombsquad::Error> {
/// let worker = RemoteWorker::spawn(|| {
///     let mut python = Command::new("python3");
///     python.arg("worker.py");
///     python
/// })?;
/// let doubled: Result<i64, String> = worker.call(&21)?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RemoteWorker {
    pool: Pool,
}

impl RemoteWorker {
    /// Starts one worker from `command` (called again for each restart) and
    /// waits for its `Hello`.
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] when the program cannot be run;
    /// [`Error::WorkerStartup`] when it keeps dying before it is ready.
    pub fn spawn(command: impl Fn() -> Command + Send + Sync + 'static) -> Result<Self, Error> {
        Self::spawn_with(command, WorkerOptions::new())
    }

    /// Starts `options.workers` workers from `command`.
    ///
    /// # Errors
    ///
    /// As [`RemoteWorker::spawn`].
    pub fn spawn_with(
        command: impl Fn() -> Command + Send + Sync + 'static,
        options: WorkerOptions,
    ) -> Result<Self, Error> {
        let pool = Pool::new(Launch::Command(Arc::new(command)), options)?;
        pool.fill()?;
        Ok(Self { pool })
    }

    /// Sends `input` to a free worker and decodes its answer as `O`.
    ///
    /// # Errors
    ///
    /// As [`Worker::call`]; [`Error::Codec`] when the answer is not an `O`.
    #[track_caller]
    pub fn call<I: Serialize + ?Sized, O: DeserializeOwned + Serialize>(
        &self,
        input: &I,
    ) -> Result<O, Error> {
        self.pool.call(input, Codec::serde(), None)
    }

    /// [`call`](Self::call), awaited on tokio (feature `tokio`), as
    /// [`Worker::call_async`]: the input is encoded at once, and dropping
    /// the future mid-call kills and reaps the worker, which is replaced.
    ///
    /// # Errors
    ///
    /// As [`call`](Self::call)'s; [`Error::Spawn`] when it is polled
    /// outside a tokio runtime, or after its runtime shut down.
    #[cfg(feature = "tokio")]
    pub fn call_async<I: Serialize + ?Sized, O: DeserializeOwned + Serialize>(
        &self,
        input: &I,
    ) -> impl Future<Output = Result<O, Error>> + Send + use<'_, I, O> {
        self.pool.call_soon(input, Codec::serde())
    }

    /// As [`Worker::restarts`].
    #[must_use]
    pub fn restarts(&self) -> u64 {
        self.pool.restarts()
    }

    /// As [`Worker::pid`].
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.pool.pids().first().copied()
    }

    /// As [`Worker::shutdown`].
    pub fn shutdown(&self, grace: Duration) {
        self.pool.shutdown(grace);
    }
}
