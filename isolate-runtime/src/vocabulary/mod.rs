//! What a call's outcome is called: the errors, the crash report, and the
//! diagnostics the library emits. Imports only `sys` and `wire`.

pub(crate) mod diagnosis;
pub(crate) mod diagnostics;
pub(crate) mod error;
pub(crate) mod output_tail;
pub(crate) mod panic_report;
pub(crate) mod report;
pub(crate) mod sandbox_support;
pub(crate) mod termination;
