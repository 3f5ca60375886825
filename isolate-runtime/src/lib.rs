//! The runtime behind `bombsquad`. Use it through the `bombsquad` crate,
//! whose documentation is the user guide.
//!
//! Linux only: it relies on pidfds, `close_range`, `/proc/self/exe` and
//! Linux process semantics. On another target this crate is empty, so the
//! `bombsquad` facade's `compile_error!` is the one error a build shows.
//!
//! # Layers
//!
//! The modules read as the story of one call, bottom to top, and each
//! imports only from the layers before it (`tests/layers.rs` checks it):
//!
//! - `sys`: every raw system call, and with the fault handler all the `unsafe`;
//! - `wire`: frames, the MessagePack codec, arguments, the arena, the fork
//!   server's protocol;
//! - `vocabulary`: what an outcome is called (`Error`, `CallReport`, the
//!   termination, the diagnosis, the panic report) and the diagnostics;
//! - `options`: the `Isolate` builder, its option types, the scope,
//!   callbacks, the sandbox policy and the concurrency cap;
//! - `child`: everything that runs in a child (entry, set-up, the function
//!   under `catch_unwind`, fault handler, panic hook, limits, progress
//!   writer, the worker loop, the fork server's serving half);
//! - `parent`: everything the caller does while a child lives (the child
//!   handle and call engine, reply channels, stdio relay, progress stream,
//!   the verdict);
//! - `start`: fork, spawn and the fork server's client, and the dispatch;
//! - `pool`: warm workers; `async_call`: the engine driven by tokio;
//!   `jobs`: supervised commands (feature `jobs`; it imports only `sys`).

#![cfg(target_os = "linux")]
// `unsafe` lives in `sys` and in the fault handler (`child::fault`) only.
#![deny(unsafe_code)]

// The layers, bottom to top: each imports only from the layers listed
// before it (`tests/layers.rs` checks it).
#[cfg(feature = "tokio")]
mod async_call;
#[cfg(not(feature = "tokio"))]
mod async_call_off;
mod child;
mod options;
mod parent;
mod pool;
mod start;
#[allow(unsafe_code)]
mod sys;
mod vocabulary;
mod wire;

#[cfg(feature = "jobs")]
pub mod jobs;

pub use child::progress::{Progress, ProgressMessages};
pub use options::backend::Backend;
pub use options::isolate::{Isolate, PanicMode, StartMethod};
pub use options::sandbox::Sandbox;
pub use options::stderr::Stderr;
pub use options::throttle::set_max_children;
pub use pool::{RemoteWorker, Task, Worker, WorkerOptions, shutdown_pools};
pub use start::closure::{ChildFn, Diverges, Never, Returns, fork};
pub use start::forkserver::start_forkserver;
pub use vocabulary::error::{CodecStage, Error, Location};
pub use vocabulary::report::{CallReport, NonzeroExitcode};
pub use vocabulary::sandbox_support::SandboxSupport;

/// Not public API: used by code that `#[bombsquad]` generates.
#[doc(hidden)]
pub mod __private {
    pub use crate::child::progress::{
        AsyncProgressCallback, ProgressSink, for_child as child_progress, sink as progress_sink,
    };
    pub use crate::child::registry::{CHILD_INITS, ENTRIES, Entry};
    pub use crate::wire::args::{Arg, ArgIn};
    pub use crate::wire::codec::{BytesCodec, Codec, CodecTag, OwnedArg, SerdeCodec};
    pub use crate::{Backend, Isolate, PanicMode, Progress, Sandbox, Stderr};
    pub use linkme;

    pub use crate::child::serve_registered as serve;
    pub use crate::pool::WorkerOptions;
    pub use crate::pool::{RegisteredTask, StaticPool, call_pooled, init_task, serve_task};
    pub use crate::start::dispatch::{call_forked, call_forkserved, call_spawned};

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
        AsyncCall, block_on, poll_once, prepare_forkserved as prepare_forkserved_async,
        prepare_spawned as prepare_spawned_async, run as run_async,
        run_with_progress as run_async_with_progress,
    };
    #[cfg(not(feature = "tokio"))]
    pub use crate::async_call_off::{
        block_on, poll_once, prepare_forkserved_async, prepare_pooled_async, prepare_spawned_async,
        run_async, run_async_with_progress, run_pooled_async, run_pooled_async_with_progress,
    };
    #[cfg(feature = "tokio")]
    pub use crate::pool::{
        PooledCall, prepare_pooled as prepare_pooled_async, run_pooled as run_pooled_async,
        run_pooled_with_progress as run_pooled_async_with_progress,
    };
}
