//! Without feature `tokio`: what an `async fn` under `#[bombsquad]` expands
//! to fails with one error that names the feature, not with a missing item.

use std::future::Future;

use crate::child::registry::Entry;
use crate::options::isolate::Isolate;
use crate::pool::{StaticPool, WorkerOptions};
use crate::vocabulary::error::Error;
use crate::wire::codec::Codec;

/// Implemented by nothing: its bound is the error.
#[diagnostic::on_unimplemented(
    message = "`#[bombsquad] async fn` needs bombsquad's `tokio` feature",
    label = "the arguments of an async isolated function",
    note = "enable it in Cargo.toml: bombsquad = {{ version = \"...\", features = [\"tokio\"] }}"
)]
pub trait AsyncNeedsTheTokioFeature {}

/// Never callable: see `AsyncNeedsTheTokioFeature`.
pub fn prepare_spawned_async<A: AsyncNeedsTheTokioFeature + ?Sized>(
    _: &Isolate,
    _: &'static Entry,
    _: &A,
) -> Result<(), Error> {
    unreachable!("the bound cannot be met")
}

/// Never callable: see `AsyncNeedsTheTokioFeature`.
pub fn prepare_forkserved_async<A: AsyncNeedsTheTokioFeature + ?Sized>(
    _: &Isolate,
    _: &'static Entry,
    _: &A,
) -> Result<(), Error> {
    unreachable!("the bound cannot be met")
}

/// Never callable: see `AsyncNeedsTheTokioFeature`.
pub fn prepare_pooled_async<A: AsyncNeedsTheTokioFeature + ?Sized>(
    _: &'static StaticPool,
    _: impl FnOnce() -> WorkerOptions,
    _: &'static Entry,
    _: &A,
) -> Result<(), Error> {
    unreachable!("the bound cannot be met")
}

/// What the wrapper returns, so no second error follows the first.
pub fn run_pooled_async<R>(
    _: Result<(), Error>,
    _: Codec<R>,
) -> std::future::Pending<Result<R, Error>> {
    std::future::pending()
}

/// What the wrapper returns, so no second error follows the first.
pub fn run_pooled_async_with_progress<R, P>(
    _: Result<(), Error>,
    _: Codec<R>,
    _: P,
) -> std::future::Pending<Result<R, Error>> {
    std::future::pending()
}

/// What the wrapper returns, so no second error follows the first.
pub fn run_async<R>(_: Result<(), Error>, _: Codec<R>) -> std::future::Pending<Result<R, Error>> {
    std::future::pending()
}

/// What the wrapper returns, so no second error follows the first.
pub fn run_async_with_progress<R, P>(
    _: Result<(), Error>,
    _: Codec<R>,
    _: P,
) -> std::future::Pending<Result<R, Error>> {
    std::future::pending()
}

/// What the child would run, so no second error follows the first.
pub fn block_on<F: Future>(_: F) -> F::Output {
    unreachable!("the bound cannot be met")
}

/// What the child would run, so no second error follows the first.
pub fn poll_once<F: Future>(_: F) -> F::Output {
    unreachable!("the bound cannot be met")
}
