//! The runtime behind `bombsquad`. Use it through the `bombsquad` crate,
//! whose documentation is the user guide.
//!
//! Linux only: it relies on pidfds, `close_range`, `/proc/self/exe` and
//! Linux process semantics. On another target this crate is empty, so the
//! `bombsquad` facade's `compile_error!` is the one error a build shows.

#![cfg(target_os = "linux")]

mod args;
#[cfg(feature = "tokio")]
mod async_call;
#[cfg(not(feature = "tokio"))]
mod async_call_off;
#[cfg(feature = "tokio")]
mod async_watch_set;
mod backend;
mod callbacks;
mod child;
mod classify;
mod closure;
mod codec;
mod diagnostics;
mod dispatch;
mod entry;
mod error;
mod fault;
mod fork;
mod fork_gate;
mod fork_warning;
mod forkserver;
mod isolate;
mod limits;
mod marker;
mod outcome;
mod panic;
mod pool;
mod progress;
mod registry;
mod report;
mod sandbox;
mod spawn;
mod stdio;
mod supervise;
mod sys;
mod throttle;
mod wire;

#[cfg(feature = "jobs")]
pub mod jobs;

pub use backend::Backend;
pub use closure::{ChildFn, Diverges, Never, Returns};
pub use error::{CodecStage, Error, Location};
pub use forkserver::start_forkserver;
pub use isolate::{Isolate, PanicMode, StartMethod, fork};
pub use pool::{RemoteWorker, Task, Worker, WorkerOptions, shutdown_pools};
pub use progress::{Progress, ProgressMessages};
pub use report::{CallReport, NonzeroExitcode};
pub use sandbox::{Sandbox, SandboxSupport};
pub use stdio::Stderr;
pub use throttle::set_max_children;

/// Not public API: used by code that `#[bombsquad]` generates.
#[doc(hidden)]
pub mod __private {
    pub use crate::args::{Arg, ArgIn};
    pub use crate::codec::{BytesCodec, Codec, CodecTag, OwnedArg, SerdeCodec};
    pub use crate::progress::{ProgressSink, for_child as child_progress, sink as progress_sink};
    pub use crate::registry::{CHILD_INITS, ENTRIES, Entry};
    pub use crate::{Backend, Isolate, PanicMode, Progress, Sandbox, Stderr};
    pub use linkme;

    pub use crate::child::serve_registered as serve;
    pub use crate::dispatch::{call_forked, call_forkserved, call_spawned};
    pub use crate::pool::WorkerOptions;
    pub use crate::pool::{RegisteredTask, StaticPool, call_pooled, init_task, serve_task};

    /// For tests that play a misbehaving child: the id of the call this
    /// process is answering, which its frames must carry.
    #[must_use]
    pub fn current_call_id() -> u32 {
        crate::child::call_id()
    }

    /// For tests that play a misbehaving child: a whole frame of kind
    /// `kind` (its number on the wire) for the call `call_id`, checksum
    /// included. Panics on a kind the wire does not know.
    #[must_use]
    pub fn wire_frame(kind: u8, call_id: u32, payload: &[u8]) -> Vec<u8> {
        let kind = crate::wire::FrameKind::from_byte(kind).expect("a known frame kind");
        crate::wire::frame(kind, call_id, payload)
    }
    #[cfg(feature = "tokio")]
    pub use crate::async_call::{
        AsyncCall, block_on, prepare_forkserved as prepare_forkserved_async,
        prepare_spawned as prepare_spawned_async, run as run_async,
        run_with_progress as run_async_with_progress,
    };
    #[cfg(not(feature = "tokio"))]
    pub use crate::async_call_off::{
        block_on, prepare_forkserved_async, prepare_pooled_async, prepare_spawned_async, run_async,
        run_async_with_progress, run_pooled_async, run_pooled_async_with_progress,
    };
    #[cfg(feature = "tokio")]
    pub use crate::pool::{
        PooledCall, prepare_pooled as prepare_pooled_async, run_pooled as run_pooled_async,
        run_pooled_with_progress as run_pooled_async_with_progress,
    };
}
