//! The per-thread stack of [`Isolate::scope`](super::Isolate::scope)s and
//! the options a call made inside them gets.

use std::cell::RefCell;

use super::{Isolate, Setting};

thread_local! {
    /// The settings of this thread's open scopes, outermost first.
    static SCOPES: RefCell<Vec<Vec<Setting>>> = const { RefCell::new(Vec::new()) };
}

/// Closes the innermost scope, on the way out of `scope` or an unwind.
pub(super) struct LeaveScope;

/// Opens a scope with `settings`, closed when the guard is dropped.
pub(super) fn enter(settings: Vec<Setting>) -> LeaveScope {
    SCOPES.with_borrow_mut(|scopes| scopes.push(settings));
    LeaveScope
}

impl Drop for LeaveScope {
    fn drop(&mut self) {
        SCOPES.with_borrow_mut(Vec::pop);
    }
}

/// Whether this thread is inside [`Isolate::scope`].
pub(crate) fn in_scope() -> bool {
    SCOPES.with_borrow(|scopes| !scopes.is_empty())
}

/// In a forked child: the scopes its copy of the calling thread holds are
/// not its own (a call it makes is not a call of the thread that opened them).
pub(crate) fn leave_scopes_in_child() {
    SCOPES.with_borrow_mut(Vec::clear);
}

/// The options of a call made inside scopes: `declared` (the attribute's)
/// with every scope's settings applied over it, outermost first, and the
/// names of the options the scopes set. `None` outside any scope.
pub(crate) fn scoped(declared: &Isolate) -> Option<(Isolate, Vec<&'static str>)> {
    SCOPES.with_borrow(|scopes| {
        if scopes.is_empty() {
            return None;
        }
        let mut options = declared.clone();
        let mut set = Vec::new();
        for setting in scopes.iter().flatten() {
            (setting.apply)(&mut options);
            if !set.contains(&setting.option) {
                set.push(setting.option);
            }
        }
        Some((options, set))
    })
}
