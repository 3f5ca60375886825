//! The `#[bombsquad]` attribute. Use it through the `bombsquad` crate, whose
//! documentation describes it.
//!
//! A short pipeline: parse the arguments and the function, validate them,
//! expand. On any error the function is emitted unchanged next to the
//! error, so one mistake does not cascade into many.

mod args;
mod expand;
mod valid;

use proc_macro::TokenStream;

/// Runs each call of the function in a child process. See the `bombsquad`
/// crate for the options and the guide.
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
    let function: syn::ItemFn = syn::parse(item).map_err(|e| {
        syn::Error::new(
            e.span(),
            "`#[bombsquad]` goes on a free function (`fn name(..) -> T { .. }`)",
        )
    })?;
    valid::check(&args, &function)?;
    Ok(expand::expand(&args, &function))
}
