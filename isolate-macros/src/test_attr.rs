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
use crate::errors::Errors;
use crate::expand;

/// How the item is a test.
pub(crate) struct Test {
    /// The `#[test]` attribute to replace, when it is still on the item.
    attr: Option<usize>,
}

/// Whether the item is a test: it carries the built-in `#[test]` (the
/// first one, if there are several), or an attribute only a test takes.
pub(crate) fn find(function: &ItemFn) -> Option<Test> {
    let attr = function
        .attrs
        .iter()
        .position(|a| matches!(test_kind(a), TestKind::Builtin));
    let is_test = attr.is_some() || function.attrs.iter().any(is_test_only_attr);
    is_test.then_some(Test { attr })
}

/// Refuses what cannot be an isolated test: a second or a third-party
/// test attribute, and a signature no test may have.
pub(crate) fn check(function: &ItemFn, test: Option<&Test>, errors: &mut Errors) {
    for (index, attribute) in function.attrs.iter().enumerate() {
        match test_kind(attribute) {
            TestKind::Builtin if test.and_then(|t| t.attr) != Some(index) => {
                errors.item(attribute, "second test attribute is supplied; remove one")
            }
            TestKind::Other => errors.item(
                attribute,
                "`#[bombsquad]` isolates tests marked with the built-in `#[test]` only",
            ),
            TestKind::None | TestKind::Builtin => {}
        }
    }
    if test.is_some() {
        check_signature(function, errors);
    }
}

fn check_signature(function: &ItemFn, errors: &mut Errors) {
    let sig = &function.sig;
    if !sig.inputs.is_empty() {
        errors.item(&sig.inputs, "a test function takes no arguments");
    }
    if let Some(token) = &sig.unsafety {
        errors.item(token, "a test function cannot be `unsafe`");
    }
    if let Some(token) = &sig.asyncness {
        errors.item(
            token,
            "an isolated test cannot be `async`: its child can build a runtime and `block_on` the body",
        );
    }
    if let ReturnType::Type(_, ty) = &sig.output
        && !is_unit(ty)
        && let Some(should_panic) = function
            .attrs
            .iter()
            .find(|a| a.path().is_ident("should_panic"))
    {
        errors.item(ty, "a `#[should_panic]` test must return `()`");
        errors.item(should_panic, "the test is `#[should_panic]` here");
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
    let (attrs, vis, sig, block) = (
        &function.attrs,
        &function.vis,
        &function.sig,
        &function.block,
    );
    let name = &sig.ident;
    let private = args.private();
    let kept = attrs
        .iter()
        .enumerate()
        .filter(|(index, _)| Some(*index) != test.attr)
        .map(|(_, attribute)| attribute);
    let test_attr = test.attr.map(|_| quote!(#[::core::prelude::v1::test]));
    let (user_result, report) = match &sig.output {
        ReturnType::Type(_, ty) if !is_unit(ty) => (
            quote!(#ty),
            quote!(-> ::core::result::Result<(), #private::TestFailure>),
        ),
        _ => (quote!(()), quote!()),
    };
    let output = &sig.output;
    let lint_attrs = attrs.iter().filter(|a| expand::is_lint(a));
    let isolated: ItemFn = parse_quote! {
        fn #name() -> #private::TestOutcome {
            #(#lint_attrs)*
            fn __bombsquad_test() #output #block

            #private::TestReturn::into_outcome(__bombsquad_test())
        }
    };
    let isolated = expand::expand_named(args, &isolated, &format!("test {name}"));
    quote! {
        #test_attr
        #(#kept)*
        #vis fn #name() #report {
            #isolated

            #private::finish_test::<#user_result>(#name())
        }
    }
}
