//! The runtime behind `bombsquad`. Use it through the `bombsquad` crate,
//! whose documentation is the user guide.
//!
//! Linux only: it relies on pidfds, `close_range`, `/proc/self/exe` and
//! Linux process semantics.

mod backend;
mod child;
mod codec;
mod entry;
mod error;
mod fork;
mod isolate;
mod marker;
mod outcome;
mod panic;
mod registry;
mod spawn;
mod supervise;
mod sys;

pub mod jobs;

pub use backend::Backend;
pub use error::{CodecStage, Error, Location};
pub use isolate::{Isolate, PanicMode, fork};
pub use outcome::NonzeroExitcode;

/// Not public API: used by code that `#[bombsquad]` generates.
#[doc(hidden)]
pub mod __private {
    pub use crate::codec::{BytesCodec, Codec, CodecTag, OwnedArg, SerdeCodec};
    pub use crate::registry::{ENTRIES, Entry};
    pub use linkme;

    use crate::{Error, Isolate};

    /// Runs a registered function in a re-executed child.
    #[track_caller]
    pub fn call_spawned<A, R>(
        options: &Isolate,
        entry: &'static Entry,
        args: &A,
        codec: Codec<R>,
    ) -> Result<R, Error>
    where
        A: serde::Serialize + ?Sized,
    {
        crate::spawn::call(options, entry, args, codec)
    }

    /// Runs a function body in a forked child.
    #[track_caller]
    pub fn call_forked<R>(
        options: &Isolate,
        codec: Codec<R>,
        function: impl FnOnce() -> R,
    ) -> Result<R, Error> {
        crate::fork::call(options, codec, function)
    }

    /// The child side of a registered function: decode, run, reply, exit.
    pub fn serve<A: serde::de::DeserializeOwned, R>(
        args: &[u8],
        codec: Codec<R>,
        function: impl FnOnce(A) -> R,
    ) -> ! {
        crate::child::serve_registered(args, codec, function)
    }
}
