//! `#[bombsquad]` on `impl Task for T { .. }`: registers `T` so a
//! re-executed worker can find it by name.

use proc_macro2::TokenStream;
use quote::quote;
use syn::ItemImpl;

use crate::args::Args;

/// Checks the impl block: no options, a `Task` impl, no generics.
pub(crate) fn check(args: &Args, item: &ItemImpl) -> syn::Result<()> {
    if let Some(span) = args.first_span() {
        return Err(syn::Error::new(
            span,
            "a task takes no options here: give them to `Worker::spawn_with` (`WorkerOptions`)",
        ));
    }
    let Some((_, trait_path, _)) = &item.trait_ else {
        return Err(syn::Error::new_spanned(
            &item.self_ty,
            "`#[bombsquad]` on an impl block registers a task: it goes on `impl Task for Type`",
        ));
    };
    if trait_path.segments.last().is_none_or(|s| s.ident != "Task") {
        return Err(syn::Error::new_spanned(
            trait_path,
            "`#[bombsquad]` on an impl block goes on `impl Task for Type`",
        ));
    }
    if !item.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &item.generics,
            "a task cannot be generic: a worker must find one concrete type by name",
        ));
    }
    Ok(())
}

pub(crate) fn expand(item: &ItemImpl) -> TokenStream {
    let ty = &item.self_ty;
    quote! {
        #item

        const _: () = {
            fn __bombsquad_run(__bombsquad_args: &[u8]) {
                ::bombsquad::__private::serve_task::<#ty>(__bombsquad_args)
            }

            fn __bombsquad_init() {
                ::bombsquad::__private::init_task::<#ty>()
            }

            #[::bombsquad::__private::linkme::distributed_slice(::bombsquad::__private::ENTRIES)]
            #[linkme(crate = ::bombsquad::__private::linkme)]
            static __BOMBSQUAD_ENTRY: ::bombsquad::__private::Entry = ::bombsquad::__private::Entry {
                name: ::core::concat!(
                    ::core::module_path!(), "::", ::core::stringify!(#ty),
                    "@", ::core::line!(), ":", ::core::column!()
                ),
                run: __bombsquad_run,
                init: ::core::option::Option::Some(__bombsquad_init),
            };

            impl ::bombsquad::__private::RegisteredTask for #ty {
                fn entry() -> &'static ::bombsquad::__private::Entry {
                    &__BOMBSQUAD_ENTRY
                }
            }
        };
    }
}
