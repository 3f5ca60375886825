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

use crate::wire::codec::Codec;
use crate::{Error, Isolate};

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
        crate::start::fork::call(options, Codec::for_type(), None, function).map(|never| match never {})
    }
}

/// In a forked child of a call made inside an [`Isolate::scope`]: the
/// scopes belong to the caller's thread, not to calls the child makes.
fn leave_scopes_in_child(scoped: bool) {
    if scoped {
        crate::options::isolate::leave_scopes_in_child();
    }
}
