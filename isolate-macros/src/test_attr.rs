//! `#[bombsquad]` on a test: the test body runs in a child, and the test
//! function itself stays in the harness.
//!
//! Attributes expand outermost first, so what this macro sees depends on
//! the order the user wrote:
//!
//! - `#[bombsquad]` above `#[test]`: the `#[test]` is still on the item. It
//!   is removed and a fully qualified `#[::core::prelude::v1::test]` goes on
//!   the wrapper, so a user who shadows `test` cannot break it.
//! - `#[test]` above `#[bombsquad]`: libtest has already registered the
//!   function by name and left no trace on it. `#[should_panic]` or
//!   `#[ignore]` still on the item give the test away, and then the same
//!   wrapper is emitted without a second test attribute. With neither, the
//!   item is an ordinary isolated function returning
//!   `Result<(), bombsquad::Error>`, which libtest accepts as a test result
//!   (an `Err` fails the test and prints the error's `Debug`).

use proc_macro2::TokenStream;
use quote::quote;
use syn::{Attribute, ItemFn, ReturnType, Type, parse_quote};

use crate::args::Args;
use crate::expand;

/// How the item is a test.
pub(crate) struct Test {
    /// The `#[test]` attribute to replace, when it is still on the item.
    attr: Option<usize>,
}

/// Finds out whether the item is a test, and refuses what cannot be one.
pub(crate) fn find(function: &ItemFn) -> syn::Result<Option<Test>> {
    let mut errors: Option<syn::Error> = None;
    let mut push = |error: syn::Error| match &mut errors {
        Some(all) => all.combine(error),
        None => errors = Some(error),
    };
    let mut attr = None;
    for (index, attribute) in function.attrs.iter().enumerate() {
        match test_kind(attribute) {
            TestKind::None => {}
            TestKind::Builtin if attr.is_none() => attr = Some(index),
            TestKind::Builtin => push(syn::Error::new_spanned(
                attribute,
                "second test attribute is supplied; remove one",
            )),
            TestKind::Other => push(syn::Error::new_spanned(
                attribute,
                "`#[bombsquad]` isolates tests marked with the built-in `#[test]` only",
            )),
        }
    }
    let is_test = attr.is_some() || function.attrs.iter().any(is_test_only_attr);
    if is_test {
        check_signature(function, &mut push);
    }
    match errors {
        Some(errors) => Err(errors),
        None => Ok(is_test.then_some(Test { attr })),
    }
}

fn check_signature(function: &ItemFn, push: &mut impl FnMut(syn::Error)) {
    let sig = &function.sig;
    if !sig.inputs.is_empty() {
        push(syn::Error::new_spanned(
            &sig.inputs,
            "a test function takes no arguments",
        ));
    }
    if let Some(token) = &sig.unsafety {
        push(syn::Error::new_spanned(
            token,
            "a test function cannot be `unsafe`",
        ));
    }
    if let ReturnType::Type(_, ty) = &sig.output
        && !is_unit(ty)
        && let Some(should_panic) = function
            .attrs
            .iter()
            .find(|a| a.path().is_ident("should_panic"))
    {
        let mut error = syn::Error::new_spanned(ty, "a `#[should_panic]` test must return `()`");
        error.combine(syn::Error::new_spanned(
            should_panic,
            "the test is `#[should_panic]` here",
        ));
        push(error);
    }
}

enum TestKind {
    None,
    /// `#[test]`, `#[core::prelude::v1::test]`, `#[::std::prelude::rust_2024::test]`.
    Builtin,
    /// `#[tokio::test]` and the like.
    Other,
}

fn test_kind(attribute: &Attribute) -> TestKind {
    let path = attribute.path();
    let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
    match segments.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["test"] if path.leading_colon.is_none() => TestKind::Builtin,
        ["core" | "std", "prelude", _, "test"] => TestKind::Builtin,
        [.., "test"] => TestKind::Other,
        _ => TestKind::None,
    }
}

/// Attributes that mean something on a test only.
fn is_test_only_attr(attribute: &Attribute) -> bool {
    let path = attribute.path();
    path.is_ident("should_panic") || path.is_ident("ignore")
}

fn is_unit(ty: &Type) -> bool {
    matches!(ty, Type::Tuple(tuple) if tuple.elems.is_empty())
}

/// The test function stays in the harness, with every attribute but the
/// test attribute it had. Its body makes one isolated call: the original
/// body, run in a child named "test <name>", whose result is turned into
/// something that crosses the boundary (`Result<(), String>`, the error's
/// `Debug` made in the child), then back into what libtest expects.
pub(crate) fn expand(args: &Args, function: &ItemFn, test: &Test) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = function;
    let name = &sig.ident;
    let kept = attrs
        .iter()
        .enumerate()
        .filter(|(index, _)| Some(*index) != test.attr)
        .map(|(_, attribute)| attribute);
    let test_attr = test.attr.map(|_| quote!(#[::core::prelude::v1::test]));
    let (user_result, report) = match &sig.output {
        ReturnType::Type(_, ty) if !is_unit(ty) => (
            quote!(#ty),
            quote!(-> ::core::result::Result<(), ::bombsquad::__private::TestFailure>),
        ),
        _ => (quote!(()), quote!()),
    };
    let output = &sig.output;
    let lint_attrs = attrs.iter().filter(|a| expand::is_lint(a));
    let isolated: ItemFn = parse_quote! {
        fn #name() -> ::bombsquad::__private::TestOutcome {
            #(#lint_attrs)*
            fn __bombsquad_test() #output #block

            ::bombsquad::__private::TestReturn::into_outcome(__bombsquad_test())
        }
    };
    let isolated = expand::expand_named(args, &isolated, &format!("test {name}"));
    quote! {
        #test_attr
        #(#kept)*
        #vis fn #name() #report {
            #isolated

            ::bombsquad::__private::finish_test::<#user_result>(#name())
        }
    }
}
