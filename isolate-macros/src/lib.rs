//! The `#[bombsquad]` attribute. Use it through the `bombsquad` crate, whose
//! documentation describes it.
//!
//! A short pipeline: parse the arguments and the function, validate them,
//! expand. On any error the function is emitted unchanged next to the
//! error, so one mistake does not cascade into many.

mod args;
mod expand;
mod task;
mod test_attr;
mod valid;

use proc_macro::TokenStream;

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
/// | `start_method` | `"spawn"` (re-execute this binary), `"fork"`, `"forkserver"` (a small server forks the child) | `"spawn"` |
/// | `backend` | `"file"` (unnamed temp file), `"pipe"`, `"shm"` (sealed memfd) | `"file"` |
/// | `timeout` | `"250ms"`, `"2s"`, `"1m"`, `"1h"` | none |
/// | `panic` | `"resume"` (re-raise), `"error"` (`Error::Panicked`) | `"resume"` |
/// | `memory`, `cpu`, `stack_size`, `stderr` | limits and where stderr goes | none, inherit |
/// | `pool` | `4`: warm workers for the function; with `max_calls = K`, `retries = K`, `max_rss_growth = "300MiB"` | none |
///
/// On `impl Task for Type { .. }` (no options), it registers the task so a
/// `bombsquad::Worker<Type>` can run it.
///
/// In spawn mode, arguments must be `Serialize + DeserializeOwned` or
/// top-level shared references to such (`&T`, `&str`, `&[T]`, `&Path`). In
/// fork mode any argument works. Results must be serde types in both.
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
/// Not accepted, each with a compile error on the offending token: generic,
/// `async`, `const` or `extern` functions, `self` receivers, `impl Trait`
/// arguments or results, results that borrow.
///
/// The `bombsquad` crate's documentation is the full guide.
#[proc_macro_attribute]
pub fn bombsquad(args: TokenStream, item: TokenStream) -> TokenStream {
    let original = proc_macro2::TokenStream::from(item.clone());
    try_expand(args, item)
        .unwrap_or_else(|error| {
            let error = error.into_compile_error();
            quote::quote!(#original #error)
        })
        .into()
}

fn try_expand(args: TokenStream, item: TokenStream) -> syn::Result<proc_macro2::TokenStream> {
    let args = args::Args::parse(args.into())?;
    if let Ok(item) = syn::parse::<syn::ItemImpl>(item.clone()) {
        task::check(&args, &item)?;
        return Ok(task::expand(&item));
    }
    let function: syn::ItemFn = syn::parse(item).map_err(|e| {
        syn::Error::new(
            e.span(),
            "`#[bombsquad]` goes on a free function (`fn name(..) -> T { .. }`) \
             or on `impl Task for Type`",
        )
    })?;
    let test = match (test_attr::find(&function), valid::check(&args, &function)) {
        (Ok(test), Ok(())) => test,
        (Err(mut errors), Err(more)) => {
            errors.combine(more);
            return Err(errors);
        }
        (Err(errors), Ok(())) | (Ok(_), Err(errors)) => return Err(errors),
    };
    if let (Some(_), Some((_, span))) = (&test, args.pool) {
        return Err(syn::Error::new(
            span,
            "a test runs once: `pool` applies to functions called many times",
        ));
    }
    Ok(match test {
        Some(test) => test_attr::expand(&args, &function, &test),
        None => expand::expand(&args, &function),
    })
}
