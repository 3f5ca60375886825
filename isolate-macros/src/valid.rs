//! The validation step: every check of the options against the item, all
//! at once, each problem on its own token. Each error also says how much
//! of the expansion it leaves possible ([`Recovery`]).

use syn::visit::Visit;
use syn::{FnArg, ItemFn, PathArguments, ReturnType, Signature, Type};

use crate::Item;
use crate::args::{Args, StartMethod};
use crate::errors::Errors;
use crate::{task, test_attr};

pub(crate) fn check(args: &Args, item: &Item, errors: &mut Errors) {
    match item {
        Item::Task(item) => task::check(args, item, errors),
        Item::Function { function, test } => {
            check_function(args, function, errors);
            test_attr::check(function, test.as_ref(), errors);
            if let (Some(_), Some((_, span))) = (test, args.pool) {
                errors.option(
                    span,
                    "a test runs once: `pool` applies to functions called many times",
                );
            }
        }
        Item::Other => {}
    }
}

fn check_function(args: &Args, function: &ItemFn, errors: &mut Errors) {
    check_pool(args, errors);
    check_async(args, function, errors);
    check_signature(&function.sig, errors);
    let mut progress = false;
    for input in &function.sig.inputs {
        check_argument(args, input, &mut progress, errors);
    }
    check_return(&function.sig.output, errors);
}

/// A pool's workers are re-executed children answering on their channel:
/// no other start method, no backend; its own options need `pool`.
fn check_pool(args: &Args, errors: &mut Errors) {
    let Some(_) = args.pool else {
        for (key, span) in args.pool_options() {
            errors.option(span, format!("`{key}` applies to a pool: add `pool = N`"));
        }
        return;
    };
    if let Some((method, span)) = args.start_method
        && method != StartMethod::Spawn
    {
        errors.option(
            span,
            "a pool's workers are spawned (re-executed); remove `start_method` or `pool`",
        );
    }
    if let Some((_, span)) = args.backend {
        errors.option(
            span,
            "a pool's workers answer on their channel (large results through a shared arena): remove `backend`",
        );
    }
}

/// An `async fn` is spawned, forkserved or pooled: forking from an async
/// runtime's threads is unsafe.
fn check_async(args: &Args, function: &ItemFn, errors: &mut Errors) {
    if function.sig.asyncness.is_none() {
        return;
    }
    if let Some((StartMethod::Fork, span)) = args.start_method {
        errors.option(
            span,
            "an async function cannot fork: forking from an async runtime's threads can deadlock \
             the child; use start_method = \"spawn\" or \"forkserver\"",
        );
    }
}

/// Whether `ty` is the progress parameter's type: a path whose last segment
/// is `Progress` with one generic argument (`Progress<M>`,
/// `bombsquad::Progress<M>`). It is not sent with the arguments: the child
/// gets a `Progress` of its own.
pub(crate) fn is_progress(ty: &Type) -> bool {
    let Type::Path(path) = ty else {
        return false;
    };
    let Some(last) = path.path.segments.last() else {
        return false;
    };
    match &last.arguments {
        PathArguments::AngleBracketed(generic) => {
            path.qself.is_none() && last.ident == "Progress" && generic.args.len() == 1
        }
        _ => false,
    }
}

fn check_signature(sig: &Signature, errors: &mut Errors) {
    if let Some(token) = &sig.constness {
        errors.item(token, "an isolated function cannot be `const`");
    }
    if let Some(abi) = &sig.abi {
        errors.item(
            abi,
            "an isolated function cannot have an `extern` ABI: its wrapper returns a `Result`",
        );
    }
    if let Some(variadic) = &sig.variadic {
        errors.item(variadic, "an isolated function cannot be variadic");
    }
    let generics = &sig.generics;
    if generics.params.is_empty() {
        // `Generics` prints only `<..>`: span the `where` clause itself.
        if let Some(where_clause) = &generics.where_clause {
            errors.item(
                where_clause,
                "an isolated function cannot have a `where` clause: its wrapper is not generic",
            );
        }
    } else if generics.lifetimes().count() == generics.params.len() {
        errors.item(
            generics,
            "an isolated function cannot declare lifetime parameters: leave them elided (`&str`, not `&'a str`)",
        );
    } else {
        errors.item(generics, "an isolated function cannot be generic: the child must find one concrete function by name");
    }
}

fn check_argument(args: &Args, input: &FnArg, progress: &mut bool, errors: &mut Errors) {
    let pat_type = match input {
        FnArg::Receiver(receiver) => {
            return errors.item(
                receiver,
                "an isolated function cannot take `self`: make it a free function",
            );
        }
        FnArg::Typed(pat_type) => pat_type,
    };
    let ty = &*pat_type.ty;
    if is_progress(ty) {
        if *progress {
            errors.item(
                ty,
                "an isolated function takes at most one `Progress` parameter: send every message through the first",
            );
        }
        *progress = true;
        return;
    }
    if let Type::Reference(reference) = ty
        && is_progress(&reference.elem)
    {
        return errors.item(
            ty,
            "take the `Progress` by value (`progress: Progress<M>`): the child sends through a `Progress` of its own, and the caller's receives",
        );
    }
    if contains_impl_trait(ty) {
        errors.item(
            ty,
            "`impl Trait` arguments are not supported: name a concrete type",
        );
    }
    if args.start_method() != StartMethod::Fork && !args.start_method_rejected {
        check_spawned_argument(ty, errors);
    }
}

const NESTED_BORROW: &str = "a spawn or forkserver child rebuilds arguments as owned values, so only a top-level `&T` may borrow: use owned types inside (`String` for `&str`), or start_method = \"fork\"";

/// A spawned child rebuilds each argument as an owned value: a top-level
/// `&T` becomes `T`, but a borrow nested inside (`Vec<&str>`, `&&str`) or a
/// `&mut` has nothing to point at in the child. These are errors of the
/// start method, not of the function: a forked child takes them.
fn check_spawned_argument(ty: &Type, errors: &mut Errors) {
    if let Type::Reference(reference) = ty {
        if let Some(mutability) = &reference.mutability {
            let and = &reference.and_token;
            let and_mut = quote::quote!(#and #mutability);
            return errors.option_spanned(&and_mut, "a spawn or forkserver child cannot write through `&mut`: pass the value and return the new one, or use start_method = \"fork\"");
        }
        if borrows(&reference.elem) {
            errors.option_spanned(&reference.elem, NESTED_BORROW);
        }
    } else if borrows(ty) {
        errors.option_spanned(ty, NESTED_BORROW);
    }
}

fn check_return(output: &ReturnType, errors: &mut Errors) {
    let ReturnType::Type(_, ty) = output else {
        return;
    };
    if contains_impl_trait(ty) {
        errors.item(
            ty,
            "an isolated function cannot return `impl Trait`: name a concrete type",
        );
    } else if borrows(ty) {
        errors.item(ty, "the return type borrows, but the result crosses a process boundary: return an owned type");
    } else if matches!(**ty, Type::Never(_)) {
        errors.item(
            ty,
            "an isolated function must return a value (use `()` for none), not `!`",
        );
    }
}

fn contains_impl_trait(ty: &Type) -> bool {
    struct Finder(bool);
    impl Visit<'_> for Finder {
        fn visit_type_impl_trait(&mut self, _: &syn::TypeImplTrait) {
            self.0 = true;
        }
    }
    let mut finder = Finder(false);
    finder.visit_type(ty);
    finder.0
}

/// Whether a type holds a reference or a non-`'static` lifetime.
fn borrows(ty: &Type) -> bool {
    struct Finder(bool);
    impl Visit<'_> for Finder {
        fn visit_type_reference(&mut self, _: &syn::TypeReference) {
            self.0 = true;
        }
        fn visit_lifetime(&mut self, lifetime: &syn::Lifetime) {
            self.0 |= lifetime.ident != "static";
        }
    }
    let mut finder = Finder(false);
    finder.visit_type(ty);
    finder.0
}
