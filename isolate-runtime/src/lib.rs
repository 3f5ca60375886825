//! The runtime behind `bombsquad`. Use it through the `bombsquad` crate.
//!
//! Linux only: it relies on pidfds, `/proc/self/exe` and Linux process
//! semantics.

pub mod jobs;
