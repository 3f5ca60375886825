//! What the caller does while a child lives: the child handle and the call
//! engine (`supervise`), the reply channels (`backend`), the stdio relay,
//! the progress stream, and the verdict (`outcome`, `classify`); and the
//! keeper thread, which starts workers and reaps the children a caller
//! stopped waiting for (`keeper`).

pub(crate) mod backend;
pub(crate) mod classify;
pub(crate) mod keeper;
pub(crate) mod outcome;
pub(crate) mod progress;
#[cfg(feature = "tokio")]
pub(crate) mod reactor;
pub(crate) mod stdio;
pub(crate) mod supervise;
#[cfg(feature = "tokio")]
pub(crate) mod watch_set;
