//! IsoLatte's outcome callbacks, run in the parent once a call's outcome is
//! known: success, fault, kill, exit, then finish, always last.

use std::any::Any;
use std::fmt;
use std::panic::{AssertUnwindSafe, RefUnwindSafe, UnwindSafe, catch_unwind};
use std::sync::Arc;

use crate::vocabulary::error::Error;
use crate::vocabulary::report::NonzeroExitcode;

pub(crate) type OnSuccess = Arc<dyn Fn() + Send + Sync>;
pub(crate) type OnCrash = Arc<dyn Fn(&NonzeroExitcode) + Send + Sync>;
pub(crate) type OnExit = Arc<dyn Fn(i32) + Send + Sync>;
pub(crate) type OnFinish = Arc<dyn Fn(bool, i32) + Send + Sync>;

/// The signals [`Isolate::on_fault`](crate::Isolate::on_fault) is for.
const FAULT_SIGNALS: [i32; 5] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGABRT,
];

/// The callbacks of an [`Isolate`](crate::Isolate); cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Callbacks {
    pub(crate) on_success: Option<OnSuccess>,
    pub(crate) on_fault: Option<OnCrash>,
    pub(crate) on_kill: Option<OnCrash>,
    pub(crate) on_exit: Option<OnExit>,
    pub(crate) on_finish: Option<OnFinish>,
}

// `Isolate` was unwind-safe before it held callbacks, and stays so: the
// runtime only calls them, each under `catch_unwind`, and never looks at
// state a panicking callback may have left half-updated (the callback
// itself does, on its next call, as with any shared closure).
impl UnwindSafe for Callbacks {}
impl RefUnwindSafe for Callbacks {}

impl fmt::Debug for Callbacks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set: Vec<&str> = [
            ("on_success", self.on_success.is_some()),
            ("on_fault", self.on_fault.is_some()),
            ("on_kill", self.on_kill.is_some()),
            ("on_exit", self.on_exit.is_some()),
            ("on_finish", self.on_finish.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        f.debug_set().entries(set).finish()
    }
}

impl Callbacks {
    /// Runs the callbacks that fit `result`, then `on_finish` with the
    /// child's `exitcode`. Each runs even if an earlier one panicked; the
    /// first panic is returned for the caller to resume once all have run.
    pub(crate) fn run<R>(
        &self,
        result: &Result<R, Error>,
        exitcode: i32,
    ) -> Option<Box<dyn Any + Send>> {
        let mut first_panic = None;
        let mut call = |callback: &dyn Fn()| {
            if let Err(payload) = catch_unwind(AssertUnwindSafe(callback)) {
                first_panic.get_or_insert(payload);
            }
        };
        match result {
            Ok(_) => {
                if let Some(on_success) = &self.on_success {
                    call(&|| on_success());
                }
            }
            Err(Error::NonzeroExitcode(e)) => match (e.signal(), e.code()) {
                (Some(signal), _) if FAULT_SIGNALS.contains(&signal) => {
                    if let Some(on_fault) = &self.on_fault {
                        call(&|| on_fault(e));
                    }
                }
                (Some(libc::SIGKILL), _) => {
                    if let Some(on_kill) = &self.on_kill {
                        call(&|| on_kill(e));
                    }
                }
                (None, Some(code)) => {
                    if let Some(on_exit) = &self.on_exit {
                        call(&|| on_exit(code));
                    }
                }
                _ => {}
            },
            Err(_) => {}
        }
        if let Some(on_finish) = &self.on_finish {
            call(&|| on_finish(result.is_ok(), exitcode));
        }
        first_panic
    }
}
