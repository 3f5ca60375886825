//! What a call's outcome is called: the errors, the crash report, and the
//! diagnostics the library emits. Imports only `sys` and `wire`.

pub(crate) mod diagnostics;
pub(crate) mod error;
pub(crate) mod report;
