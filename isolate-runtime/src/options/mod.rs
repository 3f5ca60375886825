//! What a call is asked to be: the `Isolate` builder and its option types,
//! the per-thread scope, callbacks, the sandbox policy and the concurrency
//! cap.

pub(crate) mod backend;
pub(crate) mod callbacks;
pub(crate) mod isolate;
pub(crate) mod sandbox;
pub(crate) mod stderr;
pub(crate) mod throttle;
