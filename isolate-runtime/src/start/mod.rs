//! How a child comes to be: fork, spawn, or the fork server's client half,
//! and the dispatch from an attribute's start method to one of them.

pub(crate) mod closure;
pub(crate) mod dispatch;
pub(crate) mod fork;
pub(crate) mod fork_warning;
pub(crate) mod forkserver;
pub(crate) mod spawn;
