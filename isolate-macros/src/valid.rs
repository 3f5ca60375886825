//! What an isolated function may look like. Every problem is reported on
//! its own token, all at once.

use quote::ToTokens;
use syn::visit::Visit;
use syn::{FnArg, ItemFn, PathArguments, ReturnType, Signature, Type};

use crate::args::{Args, StartMethod};

pub(crate) fn check(args: &Args, function: &ItemFn) -> syn::Result<()> {
    let mut errors = Errors::default();
    check_pool(args, &mut errors);
    check_signature(&function.sig, &mut errors);
    let mut progress = false;
    for input in &function.sig.inputs {
        check_argument(args, input, &mut progress, &mut errors);
    }
    check_return(&function.sig.output, &mut errors);
    errors.finish()
}

/// A pool's workers are re-executed children answering on their channel:
/// no other start method, no backend; its own options need `pool`.
fn check_pool(args: &Args, errors: &mut Errors) {
    let Some(_) = args.pool else {
        for (key, span) in args.pool_options() {
            errors.push_at(span, format!("`{key}` applies to a pool: add `pool = N`"));
        }
        return;
    };
    if let Some((method, span)) = args.start_method
        && method != StartMethod::Spawn
    {
        errors.push_at(
            span,
            "a pool's workers are spawned (re-executed); remove `start_method` or `pool`",
        );
    }
    if let Some((_, span)) = args.backend {
        errors.push_at(
            span,
            "a pool's workers answer on their channel (large results through a shared arena): remove `backend`",
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
    if let Some(token) = &sig.asyncness {
        errors.push(token, "an isolated function cannot be `async`: call a synchronous function from `spawn_blocking` instead");
    }
    if let Some(token) = &sig.constness {
        errors.push(token, "an isolated function cannot be `const`");
    }
    if let Some(abi) = &sig.abi {
        errors.push(
            abi,
            "an isolated function cannot have an `extern` ABI: its wrapper returns a `Result`",
        );
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(variadic, "an isolated function cannot be variadic");
    }
    let generics = &sig.generics;
    if generics.params.is_empty() {
        // `Generics` prints only `<..>`: span the `where` clause itself.
        if let Some(where_clause) = &generics.where_clause {
            errors.push(
                where_clause,
                "an isolated function cannot have a `where` clause: its wrapper is not generic",
            );
        }
    } else if generics.lifetimes().count() == generics.params.len() {
        errors.push(
            generics,
            "an isolated function cannot declare lifetime parameters: leave them elided (`&str`, not `&'a str`)",
        );
    } else {
        errors.push(generics, "an isolated function cannot be generic: the child must find one concrete function by name");
    }
}

fn check_argument(args: &Args, input: &FnArg, progress: &mut bool, errors: &mut Errors) {
    let pat_type = match input {
        FnArg::Receiver(receiver) => {
            return errors.push(
                receiver,
                "an isolated function cannot take `self`: make it a free function",
            );
        }
        FnArg::Typed(pat_type) => pat_type,
    };
    let ty = &*pat_type.ty;
    if is_progress(ty) {
        if *progress {
            errors.push(
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
        return errors.push(
            ty,
            "take the `Progress` by value (`progress: Progress<M>`): the child sends through a `Progress` of its own, and the caller's receives",
        );
    }
    if contains_impl_trait(ty) {
        errors.push(
            ty,
            "`impl Trait` arguments are not supported: name a concrete type",
        );
    }
    if args.start_method() != StartMethod::Fork {
        check_spawned_argument(ty, errors);
    }
}

const NESTED_BORROW: &str = "a spawned child rebuilds arguments as owned values, so only a top-level `&T` may borrow: use owned types inside (`String` for `&str`), or start_method = \"fork\"";

/// A spawned child rebuilds each argument as an owned value: a top-level
/// `&T` becomes `T`, but a borrow nested inside (`Vec<&str>`, `&&str`) or a
/// `&mut` has nothing to point at in the child.
fn check_spawned_argument(ty: &Type, errors: &mut Errors) {
    if let Type::Reference(reference) = ty {
        if let Some(mutability) = &reference.mutability {
            let and = &reference.and_token;
            let and_mut = quote::quote!(#and #mutability);
            return errors.push(&and_mut, "a spawned child cannot write through `&mut`: pass the value and return the new one, or use start_method = \"fork\"");
        }
        if borrows(&reference.elem) {
            errors.push(&reference.elem, NESTED_BORROW);
        }
    } else if borrows(ty) {
        errors.push(ty, NESTED_BORROW);
    }
}

fn check_return(output: &ReturnType, errors: &mut Errors) {
    let ReturnType::Type(_, ty) = output else {
        return;
    };
    if contains_impl_trait(ty) {
        errors.push(
            ty,
            "an isolated function cannot return `impl Trait`: name a concrete type",
        );
    } else if borrows(ty) {
        errors.push(ty, "the return type borrows, but the result crosses a process boundary: return an owned type");
    } else if matches!(**ty, Type::Never(_)) {
        errors.push(
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

#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, tokens: &impl ToTokens, message: &str) {
        self.add(syn::Error::new_spanned(tokens, message));
    }

    fn push_at(&mut self, span: proc_macro2::Span, message: impl std::fmt::Display) {
        self.add(syn::Error::new(span, message));
    }

    fn add(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}
