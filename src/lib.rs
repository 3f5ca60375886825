//! bombsquad: run a function call in a child process.

pub use isolate_macros::bombsquad;
pub use isolate_runtime::jobs;
