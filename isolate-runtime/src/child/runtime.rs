//! The tokio runtime an `async fn` body runs on in the child (feature
//! `tokio`): a fresh current-thread runtime with I/O and timers, built in
//! the process that runs the call.

use tokio::runtime::{Builder, Runtime};

/// A fresh current-thread runtime with I/O and timers.
///
/// # Errors
///
/// The I/O driver's epoll set or wake-up descriptor could not be made.
pub(crate) fn fresh() -> std::io::Result<Runtime> {
    Builder::new_current_thread().enable_all().build()
}

/// In a fork server, once: builds a runtime, runs it and drops it, so that
/// what tokio and the allocator set up on first use (thread-local context,
/// the allocator's arenas grown) is inherited by every child, which then
/// builds its own runtime faster. Nothing of this runtime survives it: its
/// descriptors are closed, and a current-thread runtime starts no thread,
/// so the server stays single-threaded (`sys::fork`'s rule).
pub(crate) fn warm_up() {
    if let Ok(runtime) = fresh() {
        runtime.block_on(async {
            tokio::task::yield_now().await;
        });
    }
}
