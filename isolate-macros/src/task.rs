//! `#[bombsquad]` on `impl Task for T { .. }`: registers `T` so a
//! re-executed worker can find it by name.

use proc_macro2::TokenStream;
use quote::quote;
use syn::ItemImpl;

use crate::args::Args;
use crate::errors::Errors;
use crate::register;

/// Checks the impl block: no options but `crate`, a `Task` impl, no
/// generics.
pub(crate) fn check(args: &Args, item: &ItemImpl, errors: &mut Errors) {
    if let Some(span) = args.first_span() {
        errors.option(
            span,
            "a task takes no options here: give them to `Worker::spawn_with` (`WorkerOptions`)",
        );
    }
    let Some((_, trait_path, _)) = &item.trait_ else {
        return errors.item(
            &item.self_ty,
            "`#[bombsquad]` on an impl block registers a task: it goes on `impl Task for Type`",
        );
    };
    if trait_path.segments.last().is_none_or(|s| s.ident != "Task") {
        return errors.item(
            trait_path,
            "`#[bombsquad]` on an impl block goes on `impl Task for Type`",
        );
    }
    if !item.generics.params.is_empty() {
        errors.item(
            &item.generics,
            "a task cannot be generic: a worker must find one concrete type by name",
        );
    }
}

pub(crate) fn expand(args: &Args, item: &ItemImpl) -> TokenStream {
    let private = args.private();
    let ty = &item.self_ty;
    let registration = register::entry(
        &private,
        &quote!(::core::stringify!(#ty)),
        &quote!(__bombsquad_run),
        &quote!(::core::option::Option::Some(__bombsquad_init)),
    );
    quote! {
        #item

        const _: () = {
            fn __bombsquad_run(__bombsquad_args: &[u8]) {
                #private::serve_task::<#ty>(__bombsquad_args)
            }

            fn __bombsquad_init() {
                #private::init_task::<#ty>()
            }

            #registration

            impl #private::RegisteredTask for #ty {
                fn entry() -> &'static #private::Entry {
                    &__BOMBSQUAD_ENTRY
                }
            }
        };
    }
}
