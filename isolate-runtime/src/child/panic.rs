//! Panics: captured in the child by a hook, re-raised in the parent. The
//! report itself is `vocabulary::panic_report`.

use std::sync::Once;

use crate::vocabulary::panic_report::PanicReport;

/// Installs, once per process, a hook that reports panics of an isolated
/// function to its parent and otherwise defers to the hook it replaced.
///
/// Inline, so that once installed (a forked child inherits the hook) the
/// check runs in its caller's code pages.
#[inline]
pub(crate) fn install_hook() {
    static INSTALL: Once = Once::new();
    if !INSTALL.is_completed() {
        install_hook_once(&INSTALL);
    }
}

fn install_hook_once(install: &Once) {
    if std::thread::panicking() {
        return; // set_hook would panic; the child falls back to the payload.
    }
    install.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // The default hook takes std's backtrace lock and stderr.
            let _gate = crate::sys::fork_gate::shared();
            if !crate::child::report_panic(|| PanicReport::from_hook(info)) {
                previous(info);
            }
        }));
    });
}

/// Re-raises a child's panic in the parent, with the child's message as a
/// `String` payload so `should_panic(expected)` and `downcast_ref::<String>`
/// behave as in-process. `panic_any` runs the parent's hook, which prints
/// the caller's location; the child's location is reported first
/// (`diagnostics.rs`).
#[track_caller]
pub(crate) fn resume(report: PanicReport, pid: u32, function: Option<&str>) -> ! {
    // Held through the hooks `panic_any` runs; dropped as it unwinds.
    let _gate = crate::sys::fork_gate::shared();
    crate::vocabulary::diagnostics::reraising(
        function,
        pid,
        report.location.as_ref(),
        report.backtrace.as_deref(),
    );
    std::panic::panic_any(report.message)
}
