//! Registration in the binary's link-time registries, written once: a
//! function or a task in `ENTRIES` (found by name in a re-executed child),
//! a `#[child_init]` function in `CHILD_INITS`.

use proc_macro2::TokenStream;
use quote::quote;

/// `static __BOMBSQUAD_ENTRY: Entry`, registered in `ENTRIES` under
/// `module_path::name@line:column` (unique within one binary). `name` is
/// a token that `concat!` takes: a string literal or a `stringify!`.
pub(crate) fn entry(
    private: &TokenStream,
    name: &TokenStream,
    run: &TokenStream,
    init: &TokenStream,
) -> TokenStream {
    in_slice(
        private,
        &quote!(#private::ENTRIES),
        &quote!(__BOMBSQUAD_ENTRY: #private::Entry),
        &quote! {
            #private::Entry {
                name: ::core::concat!(
                    ::core::module_path!(), "::", #name, "@", ::core::line!(), ":", ::core::column!()
                ),
                run: #run,
                init: #init,
            }
        },
    )
}

/// `static #declaration = #value;`, an element of the distributed slice
/// `slice`, through the runtime's re-export of linkme (the user's crate
/// need not depend on it).
pub(crate) fn in_slice(
    private: &TokenStream,
    slice: &TokenStream,
    declaration: &TokenStream,
    value: &TokenStream,
) -> TokenStream {
    quote! {
        #[#private::linkme::distributed_slice(#slice)]
        #[linkme(crate = #private::linkme)]
        static #declaration = #value;
    }
}
