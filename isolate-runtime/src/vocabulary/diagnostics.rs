//! What the library itself has to say (never the child's own output):
//! events at target `bombsquad` through the `tracing` facade, so a
//! subscriber can filter, silence or redirect each of them. With no
//! subscriber at all (for the process or the thread), the lines a failing
//! call needs (a child panic's location and backtrace, the fork warning, a
//! refusal) go to stderr through `eprintln!`, as they always did, so
//! libtest still shows them with a failing test.
//!
//! Each line is written under the fork gate (docs/FAULTS.md D3): a
//! subscriber, like `eprintln!`, takes stderr's lock, which no fork may copy.

use std::fmt::Arguments;

use tracing::subscriber::NoSubscriber;

use crate::vocabulary::error::Location;

/// Whether no `tracing` subscriber is installed for this thread, so an
/// event would go nowhere.
fn nobody_listens() -> bool {
    tracing::dispatcher::get_default(|dispatch| dispatch.is::<NoSubscriber>())
}

/// A warning: an event, or `bombsquad: ..` on stderr when nobody listens.
fn warn(text: Arguments<'_>) {
    let _gate = crate::sys::fork_gate::shared();
    if nobody_listens() {
        eprintln!("bombsquad: {text}");
    } else {
        tracing::warn!(target: "bombsquad", "{text}");
    }
}

/// A child's panic is about to be re-raised in the caller: where it
/// happened in the child (the caller's panic hook prints the caller's
/// place), then the child's backtrace if it captured one.
pub(crate) fn reraising(
    function: Option<&str>,
    pid: u32,
    location: Option<&Location>,
    backtrace: Option<&str>,
) {
    let _gate = crate::sys::fork_gate::shared();
    let subject = function.unwrap_or("the isolated call");
    let at = location.map(|l| format!(" at {l}")).unwrap_or_default();
    warn(format_args!(
        "{subject} (pid {pid}) panicked{at}; re-raising in the caller"
    ));
    if let Some(backtrace) = backtrace {
        if nobody_listens() {
            eprintln!("child backtrace:\n{backtrace}");
        } else {
            tracing::warn!(target: "bombsquad", "child backtrace (pid {pid}):\n{backtrace}");
        }
    }
}

/// The one-time warning about fork mode without a timeout in a
/// multi-threaded process.
pub(crate) fn fork_without_timeout(text: &str) {
    warn(format_args!("{text}"));
}

/// A re-executed process refuses to run the call it was asked for.
pub(crate) fn refusing(pid: u32, why: &str) {
    let _gate = crate::sys::fork_gate::shared();
    if nobody_listens() {
        eprintln!("bombsquad: refusing to run an isolated call in process {pid}: {why}");
    } else {
        tracing::error!(target: "bombsquad", "refusing to run an isolated call in process {pid}: {why}");
    }
}

/// A pool's worker died or was killed (a live pool starts another when a
/// call needs it). An event only, nothing on stderr: the call it failed,
/// if any, says so itself.
pub(crate) fn worker_lost(pid: u32) {
    let _gate = crate::sys::fork_gate::shared();
    tracing::info!(target: "bombsquad", "pool worker (pid {pid}) lost");
}
