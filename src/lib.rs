//! bombsquad: run a function call in a child process.

pub use isolate_macros::bombsquad;
pub use isolate_runtime::{
    Backend, CodecStage, Error, Isolate, Location, NonzeroExitcode, PanicMode, fork, jobs,
};

/// Not public API: used by code that `#[bombsquad]` generates.
#[doc(hidden)]
pub mod __private {
    pub use isolate_runtime::__private::*;
}
