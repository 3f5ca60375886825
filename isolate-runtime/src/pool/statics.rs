//! The pools behind `#[bombsquad(pool = N)]`: one per function, made on its
//! first call and kept for the life of the process.

use std::sync::{Mutex, Once, OnceLock, PoisonError};
use std::time::Duration;

use serde::Serialize;

use crate::child::progress::ProgressSink;
use crate::child::registry::Entry;
use crate::options::isolate::{self, Isolate, StartMethod};
use crate::pool::{Launch, Pool, WorkerOptions};
use crate::vocabulary::error::Error;
use crate::wire::codec::Codec;

/// A function's pool, made on first use. Not public API: generated code
/// declares one per pooled function.
#[doc(hidden)]
#[derive(Debug)]
pub struct StaticPool {
    pool: OnceLock<Result<Pool, String>>,
    registered: Once,
}

impl StaticPool {
    #[must_use]
    pub const fn new() -> Self {
        Self {
            pool: OnceLock::new(),
            registered: Once::new(),
        }
    }
}

impl Default for StaticPool {
    fn default() -> Self {
        Self::new()
    }
}

/// Every static pool made so far, for [`shutdown_pools`].
static POOLS: Mutex<Vec<&'static Pool>> = Mutex::new(Vec::new());

/// Runs a call of `entry` on its pool, making the pool with `options` on
/// the first call. Not public API: what `#[bombsquad(pool = N)]` expands to.
#[doc(hidden)]
#[track_caller]
pub fn call_pooled<A: Serialize + ?Sized, R>(
    pool: &'static StaticPool,
    options: impl FnOnce() -> WorkerOptions,
    entry: &'static Entry,
    args: &A,
    codec: Codec<R>,
    progress: Option<&mut dyn ProgressSink>,
) -> Result<R, Error> {
    let pool = pool_of(pool, options, entry)?;
    let name = pool.options.isolate.name.as_deref();
    match isolate::scoped(&pool.options.isolate) {
        None => pool.call(args, codec, progress),
        Some((scoped, set)) => {
            check_scoped(&scoped, &set)?;
            pool.call_as(&scoped, args, codec, progress)
        }
    }
    .map_err(|e| e.of_function(name))
}

/// The pool of `entry`, made with `options` on its first use.
pub(crate) fn pool_of(
    pool: &'static StaticPool,
    options: impl FnOnce() -> WorkerOptions,
    entry: &'static Entry,
) -> Result<&'static Pool, Error> {
    crate::child::entry::keep_linked();
    let made = pool
        .pool
        .get_or_init(|| Pool::new(Launch::Registered(entry), options()).map_err(|e| e.to_string()));
    let registered = &pool.registered;
    let pool = match made {
        Ok(pool) => pool,
        Err(message) => {
            return Err(Error::Spawn {
                what: "make the worker pool".to_owned(),
                source: std::io::Error::other(message.clone()),
            });
        }
    };
    registered.call_once(|| register(pool));
    Ok(pool)
}

/// The options an `Isolate::scope` may set for one call of a pool's
/// function: the ones the parent applies per call. The rest are fixed when
/// a worker starts.
const PER_CALL: [&str; 9] = [
    "timeout",
    "panic",
    "name",
    "max_result",
    "on_success",
    "on_fault",
    "on_kill",
    "on_exit",
    "on_finish",
];

/// Refuses what a scope asks of a pooled call that its workers cannot do.
pub(crate) fn check_scoped(scoped: &Isolate, set: &[&'static str]) -> Result<(), Error> {
    let function = scoped.name.as_deref().unwrap_or("this function");
    if let Some(method) = scoped.start_method.filter(|&m| m != StartMethod::Spawn) {
        return Err(Error::InvalidOptions {
            message: format!(
                "Isolate::scope asks for start_method {} but {function} is a pool = N \
                 function, whose workers are always spawned; leave start_method out of \
                 the scope, or remove pool from the attribute",
                method.name()
            ),
        });
    }
    let fixed: Vec<&str> = set
        .iter()
        .copied()
        .filter(|option| *option != "start_method" && !PER_CALL.contains(option))
        .collect();
    if fixed.is_empty() {
        return Ok(());
    }
    Err(Error::InvalidOptions {
        message: format!(
            "Isolate::scope sets {} for {function}, a pool = N function, whose workers take \
             {} when they start, not per call; set {} in its attribute (a pool call takes \
             only {} from a scope)",
            fixed.join(", "),
            if fixed.len() == 1 { "it" } else { "them" },
            if fixed.len() == 1 { "it" } else { "them" },
            PER_CALL.join(", ")
        ),
    })
}

fn register(pool: &'static Pool) {
    let mut pools = POOLS.lock().unwrap_or_else(PoisonError::into_inner);
    if !pools.iter().any(|known| std::ptr::eq(*known, pool)) {
        pools.push(pool);
    }
}

/// Shuts down the pools of every `#[bombsquad(pool = N)]` function: each
/// worker is asked to leave, and its process group is killed after `grace`.
/// Calls in flight end with [`Error::PoolClosed`], and so do later calls:
/// a pool is not restarted. Use it before the process exits to leave no
/// worker behind (they would die with the process anyway).
pub fn shutdown_pools(grace: Duration) {
    let pools = POOLS.lock().unwrap_or_else(PoisonError::into_inner).clone();
    std::thread::scope(|scope| {
        for pool in pools {
            scope.spawn(move || pool.shutdown(grace));
        }
    });
}
