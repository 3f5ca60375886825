//! What the closure forms ([`fork`](crate::fork), [`Isolate::fork`]) take:
//! a closure whose result crosses back, or one that never returns.
//!
//! Under edition 2024 a closure that never returns (`|| std::process::abort()`)
//! has the result type `!`, which serde does not implement, and a blanket
//! "every serde type, and `!`" trait cannot be written on stable Rust (serde
//! may implement its traits for `!` one day, so the impls would overlap). The
//! marker parameter of [`ChildFn`] keeps the two cases apart instead: they are
//! impls of two different traits, `ChildFn<R, Returns>` and
//! `ChildFn<!, Diverges>`, and inference picks the one whose bounds hold.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::options::isolate::{Isolate, StartMethod};
use crate::vocabulary::error::Error;
use crate::wire::codec::Codec;

impl Isolate {
    /// Runs `function` in a forked child and returns its result.
    ///
    /// The closure's captures are copied with the process (nothing is
    /// serialized); the result crosses back as MessagePack. The child leaves
    /// with `_exit`: it never returns past the fork point and never runs the
    /// parent's `atexit` handlers.
    ///
    /// Fork is fast but unsafe in spirit in a multi-threaded parent: the
    /// child may block forever on a lock another thread held at the fork
    /// (std's stdout lock included). Set a timeout there.
    ///
    /// The closure carries no [`Progress`](crate::Progress): one it
    /// captures runs its callback in the child, where the caller never sees
    /// it. Take a `Progress` parameter in a `#[bombsquad]` function instead.
    ///
    /// # Errors
    ///
    /// Every [`Error`] variant but `NestingTooDeep` for a top-level call;
    /// see its documentation.
    ///
    /// The closure returns a serde type, or never returns (its result type
    /// is `!`; see [`ChildFn`]).
    ///
    /// # Panics
    ///
    /// Re-raises a panic of `function` (with [`PanicMode::Resume`](crate::PanicMode::Resume)).
    #[track_caller]
    pub fn fork<R, M, F: ChildFn<R, M>>(&self, function: F) -> Result<R, Error> {
        crate::options::throttle::check()?;
        if let Some(method) = self.start_method.filter(|&m| m != StartMethod::Fork) {
            return Err(Error::InvalidOptions {
                message: format!(
                    "Isolate::fork always forks, but the builder asks for start_method {}; \
                     for spawn or forkserver, make the closure a #[bombsquad] function and \
                     call it inside Isolate::scope",
                    method.name()
                ),
            });
        }
        function.fork_in(self)
    }
}

/// Runs `function` in a forked child with the default options: the closure
/// form of `#[bombsquad(start_method = "fork")]`.
///
/// # Examples
///
/// ```
/// let v = vec![1, 2, 3];
/// assert_eq!(bombsquad::fork(|| v.iter().sum::<i32>()).unwrap(), 6);
/// ```
///
/// A closure that never returns is taken too; its call can only fail:
///
/// ```
/// let Err(error) = bombsquad::fork(|| std::process::abort());
/// assert!(error.to_string().contains("SIGABRT"), "{error}");
/// ```
///
/// # Errors
///
/// See [`Isolate::fork`].
///
/// # Panics
///
/// Re-raises a panic of `function`.
#[track_caller]
pub fn fork<R, M, F: ChildFn<R, M>>(function: F) -> Result<R, Error> {
    Isolate::new().fork(function)
}

/// A closure [`Isolate::fork`] can run in a child: it returns an `R` that
/// is `Serialize + DeserializeOwned`, or it never returns (`R` is `!`: it
/// aborts, exits or panics). You never implement it; the marker `M` is
/// inferred.
///
/// The supertrait lets the compiler take the closure's result type from
/// the call's expected type, as for any `FnOnce() -> R` parameter:
/// `let r: Result<u8, Error> = fork(|| panic!())` gives the closure the
/// result type `u8`.
#[diagnostic::on_unimplemented(
    message = "the closure's result `{R}` cannot cross back from the child",
    label = "its result must be `Serialize + DeserializeOwned`",
    note = "a forked closure returns a value that implements `serde::Serialize` and \
            `serde::de::DeserializeOwned` (derive them), or never returns"
)]
pub trait ChildFn<R, M>: FnOnce() -> R {
    #[doc(hidden)]
    fn fork_in(self, options: &Isolate) -> Result<R, Error>;
}

/// The marker of a closure that returns its result.
#[derive(Debug)]
pub struct Returns;

/// The marker of a closure that never returns.
#[derive(Debug)]
pub struct Diverges;

/// `!`, named on stable Rust: the result type of a closure that never
/// returns.
pub type Never = <fn() -> ! as HasOutput>::Output;

#[doc(hidden)]
pub trait HasOutput {
    type Output;
}

impl<R> HasOutput for fn() -> R {
    type Output = R;
}

impl<F, R> ChildFn<R, Returns> for F
where
    F: FnOnce() -> R,
    R: Serialize + DeserializeOwned,
{
    fn fork_in(self, options: &Isolate) -> Result<R, Error> {
        let scoped = crate::options::isolate::in_scope();
        crate::start::fork::call(options, Codec::for_type(), None, move || {
            leave_scopes_in_child(scoped);
            self()
        })
    }
}

/// A reply no child can send: its result, if it ever returned.
#[derive(Serialize, Deserialize)]
enum Diverged {}

impl<F> ChildFn<Never, Diverges> for F
where
    F: FnOnce() -> Never,
{
    fn fork_in(self, options: &Isolate) -> Result<Never, Error> {
        // The child never reaches a reply; a reply claiming otherwise does
        // not decode (`Diverged` has no value) and is a codec error.
        let scoped = crate::options::isolate::in_scope();
        let function = move || -> Diverged {
            leave_scopes_in_child(scoped);
            self()
        };
        crate::start::fork::call(options, Codec::for_type(), None, function)
            .map(|never| match never {})
    }
}

/// In a forked child of a call made inside an [`Isolate::scope`]: the
/// scopes belong to the caller's thread, not to calls the child makes.
fn leave_scopes_in_child(scoped: bool) {
    if scoped {
        crate::options::isolate::leave_scopes_in_child();
    }
}
