//! The `#[bombsquad]` attribute. Use it through the `bombsquad` crate, whose
//! documentation describes it.
//!
//! A pipeline, as in thiserror and tokio-macros: parse the arguments and
//! the item, validate them in one step that reports every problem at once,
//! then expand. Each error says how much expansion it leaves possible
//! (`errors::Recovery`): after an error in the options, the wrapper is
//! still emitted, with the default options, so it keeps its real
//! signature and a caller written against it sees one error, not a
//! cascade; after an error in the item itself, the item is emitted
//! unchanged next to the error.

mod args;
mod awaits;
mod child_init;
mod errors;
mod expand;
mod register;
mod task;
mod test_attr;
mod valid;

use proc_macro::TokenStream;
use quote::quote;

use crate::args::Args;
use crate::errors::{Errors, Recovery};

/// Runs each call of the function in a child process.
///
/// The wrapper keeps the function's name, visibility, parameters and
/// attributes and returns `Result<R, bombsquad::Error>`. A panic in the
/// child is re-raised in the caller; a child killed by a signal or exiting
/// nonzero becomes `Error::NonzeroExitcode`.
///
/// Options, all optional and checked at compile time:
///
/// | option | values | default |
/// |---|---|---|
/// | `start_method` | `"forkserver"` (a small server forks the child), `"spawn"` (re-execute this binary), `"fork"` | `"forkserver"` |
/// | `backend` | `"file"` (unnamed temp file), `"pipe"`, `"shm"` (sealed memfd) | `"file"` |
/// | `timeout` | `"250ms"`, `"2s"`, `"1m"`, `"1h"` | none |
/// | `panic` | `"resume"` (re-raise), `"error"` (`Error::Panicked`) | `"resume"` |
/// | `memory`, `cpu`, `stack_size`, `stderr` | limits and where stderr goes | none, inherit |
/// | `sandbox` | `"compute"`: no files, network, programs or dangerous calls (`Sandbox::compute()`) | none |
/// | `max_result` | `"64MiB"`: the largest result the parent accepts (`Error::ResultTooLarge` beyond) | 4 GiB |
/// | `pool` | `4`: warm workers for the function; with `max_calls = K`, `retries = K`, `max_rss_growth = "300MiB"` | none |
/// | `crate` | `"my_bombsquad"`: the path of the `bombsquad` crate, for a renamed dependency | `"::bombsquad"` |
///
/// On `impl Task for Type { .. }` (no options but `crate`), it registers the task so a
/// `bombsquad::Worker<Type>` can run it.
///
/// In forkserver and spawn mode, arguments must be `Serialize +
/// DeserializeOwned` or top-level shared references to such (`&T`, `&str`,
/// `&[T]`, `&Path`). In fork mode any argument works. Results must be serde
/// types in all three.
///
/// One parameter may be a `Progress<M>` (its type's last path segment is
/// `Progress`, with one generic argument), taken by value: it is not sent
/// with the arguments; the child's body gets a `Progress` that sends to the
/// caller's.
///
/// Above `#[test]`, the test body runs in a child: a crash fails that test
/// with a panic naming the signal and ending with the child's stderr; a
/// panic, `#[should_panic]`, `#[ignore]` and `Result` returns behave as for
/// an ordinary test. The test attribute is emitted fully qualified.
///
/// An `async fn` (feature `tokio` of `bombsquad`) becomes a function
/// returning `impl Future<Output = Result<R, bombsquad::Error>> + Send +
/// 'static`: the arguments are encoded when it is called, the body runs in
/// the child on a current-thread tokio runtime (none when the body has
/// nothing to wait for: no `.await`, `async`, `tokio` or `Handle`, no macro
/// but std's formatting and assertion ones), and dropping the future
/// kills and reaps the child. Its `Progress` parameter takes a
/// `Send + 'static` callback (a blocking function's takes any). With
/// `pool = N`, the future awaits a free worker and its answer; dropping it
/// kills and reaps that worker, which the pool replaces. Not with
/// `start_method = "fork"`, or above `#[test]`.
///
/// Not accepted, each with a compile error on the offending token: generic,
/// `const` or `extern` functions, `self` receivers, `impl Trait`
/// arguments or results, results that borrow.
///
/// The `bombsquad` crate's documentation is the full guide.
#[proc_macro_attribute]
pub fn bombsquad(args: TokenStream, item: TokenStream) -> TokenStream {
    let original = proc_macro2::TokenStream::from(item.clone());
    let mut errors = Errors::default();
    let args = Args::parse(args.into(), &mut errors);
    let item = Item::parse(item, &mut errors);
    valid::check(&args, &item, &mut errors);
    let expanded = match (errors.recovery(), &item) {
        (Recovery::Unchanged, _) | (_, Item::Other) => original,
        (_, Item::Task(item)) => task::expand(&args, item),
        (recovery, Item::Function { function, test }) => {
            let args = match recovery {
                Recovery::AsWritten => args,
                Recovery::DefaultOptions | Recovery::Unchanged => args.fallback(),
            };
            match test {
                Some(test) => test_attr::expand(&args, function, test),
                None => expand::expand(&args, function),
            }
        }
    };
    let errors = errors.into_compile_errors();
    quote!(#expanded #errors).into()
}

/// Runs the function in every child that does not inherit the caller's
/// memory, before the isolated function: spawned children, the fork
/// server's children, and a pool's workers (once, as each starts).
///
/// Such children never run `main`, so what `main` sets up (a logger, a
/// `OnceLock`, a configuration read from `args()`) is missing there; this
/// is where to set it up again. The function takes no arguments and
/// returns `()`; a panic in it is the call's panic. Option: `crate = ".."`
/// as for `#[bombsquad]`. The `bombsquad` crate documents it in full.
#[proc_macro_attribute]
pub fn child_init(args: TokenStream, item: TokenStream) -> TokenStream {
    child_init::child_init(args.into(), item.into()).into()
}

/// What `#[bombsquad]` is written on.
pub(crate) enum Item {
    /// `impl Task for Type { .. }`.
    Task(syn::ItemImpl),
    /// A function, and whether it is a test.
    Function {
        function: syn::ItemFn,
        test: Option<test_attr::Test>,
    },
    /// Anything else: an error is recorded.
    Other,
}

impl Item {
    fn parse(item: TokenStream, errors: &mut Errors) -> Self {
        if let Ok(item) = syn::parse::<syn::ItemImpl>(item.clone()) {
            return Self::Task(item);
        }
        match syn::parse::<syn::ItemFn>(item) {
            Ok(function) => Self::Function {
                test: test_attr::find(&function),
                function,
            },
            Err(error) => {
                errors.add(
                    syn::Error::new(
                        error.span(),
                        "`#[bombsquad]` goes on a free function (`fn name(..) -> T { .. }`) \
                         or on `impl Task for Type`",
                    ),
                    Recovery::Unchanged,
                );
                Self::Other
            }
        }
    }
}
