//! Where a `#[bombsquad]` call goes: the start method of its attribute, or
//! the one an [`Isolate::scope`](crate::Isolate::scope) asks for, with the
//! scope's options applied over the attribute's. Not public API: what the
//! generated code calls.

use serde::Serialize;

use crate::child::progress::ProgressSink;
use crate::child::registry::Entry;
use crate::child::{self, fault};
use crate::options::isolate::{self, Isolate, StartMethod};
use crate::options::throttle;
use crate::start::{fork, forkserver, spawn};
use crate::vocabulary::error::Error;
use crate::wire::codec::Codec;

/// A `start_method = "fork"` function's call: forked, whatever the scope
/// says about the other options; another start method is refused, since
/// the function is neither registered nor has serde arguments.
#[track_caller]
pub fn call_forked<R>(
    options: &Isolate,
    codec: Codec<R>,
    progress: Option<&mut dyn ProgressSink>,
    function: impl FnOnce() -> R,
) -> Result<R, Error> {
    throttle::check()?;
    let Some((options, _)) = isolate::scoped(options) else {
        return fork::call(options, codec, progress, function);
    };
    if let Some(method) = options.start_method.filter(|&m| m != StartMethod::Fork) {
        return Err(Error::InvalidOptions {
            message: format!(
                "Isolate::scope asks for start_method {} but {} is declared with \
                 start_method = \"fork\": it is not registered by name and its arguments are \
                 not serialized, so it can only fork; declare it with start_method = \"spawn\" \
                 or \"forkserver\" to choose among all three at run time",
                method.name(),
                function_name(&options)
            ),
        });
    }
    fork::call(&options, codec, progress, move || {
        isolate::leave_scopes_in_child();
        function()
    })
}

/// A `start_method = "spawn"` function's call.
#[track_caller]
pub fn call_spawned<A: Serialize + ?Sized, R>(
    options: &Isolate,
    entry: &'static Entry,
    args: &A,
    codec: Codec<R>,
    progress: Option<&mut dyn ProgressSink>,
) -> Result<R, Error> {
    call_registered(StartMethod::Spawn, options, entry, args, codec, progress)
}

/// A `start_method = "forkserver"` function's call.
#[track_caller]
pub fn call_forkserved<A: Serialize + ?Sized, R>(
    options: &Isolate,
    entry: &'static Entry,
    args: &A,
    codec: Codec<R>,
    progress: Option<&mut dyn ProgressSink>,
) -> Result<R, Error> {
    call_registered(
        StartMethod::Forkserver,
        options,
        entry,
        args,
        codec,
        progress,
    )
}

/// A registered function's call, by the scope's start method or the
/// `declared` one. Each of the three works: forked, the child runs the
/// registered entry on the encoded arguments as a spawned child would.
#[track_caller]
fn call_registered<A: Serialize + ?Sized, R>(
    declared: StartMethod,
    options: &Isolate,
    entry: &'static Entry,
    args: &A,
    codec: Codec<R>,
    progress: Option<&mut dyn ProgressSink>,
) -> Result<R, Error> {
    throttle::check()?;
    let scoped = isolate::scoped(options);
    let options = scoped.as_ref().map_or(options, |(scoped, _)| scoped);
    match options.start_method.unwrap_or(declared) {
        StartMethod::Spawn => spawn::call(options, entry, args, codec, progress),
        StartMethod::Forkserver => forkserver::call(options, entry, args, codec, progress),
        StartMethod::Fork => fork_registered(options, entry, args, codec, progress),
    }
}

/// Forks a child that runs `entry` on the encoded `args` and replies as a
/// spawned child does (the same codec both ways).
#[track_caller]
fn fork_registered<A: Serialize + ?Sized, R>(
    options: &Isolate,
    entry: &'static Entry,
    args: &A,
    codec: Codec<R>,
    progress: Option<&mut dyn ProgressSink>,
) -> Result<R, Error> {
    let args = spawn::encode_args(args)?;
    fork::call(options, codec, progress, move || -> R {
        isolate::leave_scopes_in_child();
        // This already is the function's thread, with its stack size.
        fault::set_stack_size(None);
        (entry.run)(&args);
        child::leave()
    })
}

fn function_name(options: &Isolate) -> &str {
    options.name.as_deref().unwrap_or("the function")
}
