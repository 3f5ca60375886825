//! `#[child_init]`: a function registered to run in every child that does
//! not inherit the caller's memory, before the isolated function.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{ItemFn, ReturnType, Type};

use crate::args::Args;
use crate::errors::{Errors, Recovery};
use crate::register;

pub(crate) fn child_init(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let args = Args::parse(args, &mut errors);
    if let Some(span) = args.first_span() {
        errors.option(span, "`#[child_init]` takes no options but `crate`");
    }
    let function = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(function) => Some(function),
        Err(error) => {
            let message = "`#[child_init]` goes on a function: `fn setup() { .. }`";
            errors.add(syn::Error::new(error.span(), message), Recovery::Unchanged);
            None
        }
    };
    if let Some(function) = &function {
        check(function, &mut errors);
    }
    let expanded = match (&function, errors.recovery()) {
        (Some(function), Recovery::AsWritten | Recovery::DefaultOptions) => expand(&args, function),
        _ => item,
    };
    let errors = errors.into_compile_errors();
    quote!(#expanded #errors)
}

/// The function is called through a plain `fn()` in the child.
fn check(function: &ItemFn, errors: &mut Errors) {
    let sig = &function.sig;
    if !sig.inputs.is_empty() {
        errors.item(
            &sig.inputs,
            "a `#[child_init]` function takes no arguments: it runs before any call's arguments exist",
        );
    }
    if let ReturnType::Type(_, ty) = &sig.output
        && !matches!(&**ty, Type::Tuple(tuple) if tuple.elems.is_empty())
    {
        errors.item(
            ty,
            "a `#[child_init]` function returns `()`: nothing receives its result (panic to fail the call)",
        );
    }
    if let Some(token) = &sig.asyncness {
        errors.item(token, "a `#[child_init]` function cannot be `async`");
    }
    if let Some(token) = &sig.unsafety {
        errors.item(
            token,
            "a `#[child_init]` function cannot be `unsafe`: nothing upholds its contract",
        );
    }
    if let Some(abi) = &sig.abi {
        errors.item(
            abi,
            "a `#[child_init]` function cannot have an `extern` ABI",
        );
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.item(
            &sig.generics,
            "a `#[child_init]` function cannot be generic",
        );
    }
}

fn expand(args: &Args, function: &ItemFn) -> TokenStream {
    let private = args.private();
    let name = &function.sig.ident;
    let registration = register::in_slice(
        &private,
        &quote!(#private::CHILD_INITS),
        &quote!(__BOMBSQUAD_CHILD_INIT: fn()),
        &quote!(#name),
    );
    quote! {
        #function

        const _: () = {
            #registration
        };
    }
}
