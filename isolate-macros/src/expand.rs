//! The expansion: the user's function becomes a wrapper with the same name,
//! visibility, parameters and attributes that returns
//! `Result<R, ::bombsquad::Error>`; the original body moves into an inner
//! function that the child runs. Generated code names only
//! `::bombsquad::__private::` and `::core::` paths (and `::bombsquad::Error`
//! in the signature; `crate = "path"` replaces `::bombsquad` by `path`
//! everywhere), and declares no local variables the user's parameters could
//! collide with.
//!
//! A `Progress` parameter is not sent with the arguments: the wrapper
//! passes the caller's `Progress` to the runtime as the sink of the call's
//! messages, and the child's body gets a child-side one.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned as _;
use syn::{FnArg, Ident, ItemFn, Pat, PatType, ReturnType, Type};

use crate::args::{Args, Backend, PanicMode, Sandbox, StartMethod, Stderr};
use crate::valid::is_progress;
use crate::{awaits, register};

/// One parameter, as the wrapper names it and the child rebuilds it.
struct Param<'a> {
    name: Ident,
    ty: &'a Type,
}

impl Param<'_> {
    fn is_progress(&self) -> bool {
        is_progress(self.ty)
    }

    /// The wrapper's parameter; the `Progress` one is lent to the runtime
    /// as `&mut`, and takes the caller's callback whatever its type: it
    /// runs on the calling thread, so it need not be `Send`.
    fn outer_input(&self) -> TokenStream {
        let Param { name, ty } = self;
        if self.is_progress() {
            let ty = match message_type(ty) {
                Some(message) => with_callback(
                    ty,
                    &quote_spanned!(ty.span()=> impl ?::core::marker::Sized + ::core::ops::FnMut(#message)),
                ),
                None => (*ty).clone(),
            };
            quote!(mut #name: #ty)
        } else {
            quote!(#name: #ty)
        }
    }

    /// `&T` is sent as `T` and rebuilt owned in the child; the body gets a
    /// reference to it.
    fn referent(&self) -> Option<&Type> {
        match self.ty {
            Type::Reference(reference) => Some(&reference.elem),
            _ => None,
        }
    }

    fn owned_type(&self, private: &TokenStream) -> TokenStream {
        match self.referent() {
            Some(referent) => quote!(<#referent as #private::OwnedArg>::Owned),
            None => {
                let ty = self.ty;
                quote!(#ty)
            }
        }
    }

    fn passed_in_child(&self, private: &TokenStream) -> TokenStream {
        let name = &self.name;
        if self.is_progress() {
            return child_progress(private);
        }
        match self.referent() {
            Some(_) => quote!(&#name),
            None => quote!(#name),
        }
    }
}

/// What the child's body gets for its `Progress` parameter.
fn child_progress(private: &TokenStream) -> TokenStream {
    quote!(#private::child_progress())
}

/// The sink of the call's progress messages: the caller's `Progress`, or
/// none. A message type that is not serde fails on the parameter's type.
fn progress_sink(private: &TokenStream, params: &[Param<'_>]) -> TokenStream {
    match params.iter().find(|p| p.is_progress()) {
        Some(Param { name, ty }) => {
            // On the parameter's type: a message type that is not serde is
            // reported there.
            let private = respan(private, ty.span());
            quote_spanned!(ty.span()=> #private::progress_sink(&mut #name))
        }
        None => quote!(::core::option::Option::None),
    }
}

fn respan(tokens: &TokenStream, span: proc_macro2::Span) -> TokenStream {
    tokens
        .clone()
        .into_iter()
        .map(|mut token| {
            token.set_span(span);
            token
        })
        .collect()
}

pub(crate) fn expand(args: &Args, function: &ItemFn) -> TokenStream {
    expand_named(args, function, &function.sig.ident.to_string())
}

/// [`expand`], with `display_name` as the name errors give the call
/// ("test parses_input (pid 42) was killed by SIGSEGV").
pub(crate) fn expand_named(args: &Args, function: &ItemFn, display_name: &str) -> TokenStream {
    let params = params(function);
    let private = &args.private();
    let krate = args.krate();
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = function;
    let name = &sig.ident;
    let unsafety = &sig.unsafety;
    let result = match &sig.output {
        ReturnType::Default => quote!(()),
        ReturnType::Type(_, ty) => quote!(#ty),
    };
    let is_async = sig.asyncness.is_some();
    // An async function's callback is a named parameter, which the future
    // captures (`use<..>` cannot name an `impl Trait` argument).
    let async_callback = format_ident!("__BombsquadCallback");
    let async_bound = params
        .iter()
        .filter(|param| is_async && param.is_progress())
        .find_map(|Param { ty, .. }| {
            let message = message_type(ty)?;
            Some(async_callback_bound(
                private,
                &async_callback,
                message,
                ty.span(),
            ))
        });
    let captures = async_bound.as_ref().map(|_| &async_callback);
    let outer_inputs = params.iter().map(|param| {
        if is_async && param.is_progress() {
            let Param { name, ty } = param;
            let mut ty = static_progress(ty);
            if captures.is_some() {
                ty = with_callback(&ty, &quote!(#async_callback));
            }
            quote!(#name: #ty)
        } else {
            param.outer_input()
        }
    });
    let async_generics = async_bound.map(|bound| quote!(<#bound>));
    let inner_inputs = if is_async {
        async_inputs(&sig.inputs)
    } else {
        let inputs = &sig.inputs;
        quote!(#inputs)
    };
    let lint_attrs = attrs.iter().filter(|a| is_lint(a));
    let track_caller =
        (!attrs.iter().any(|a| a.path().is_ident("track_caller"))).then(|| quote!(#[track_caller]));
    let options = options(private, args, display_name);
    let codec = codec(private, &result);
    let call = match args.start_method() {
        // Only after an error (`valid.rs` refuses fork for an async
        // function): the wrapper keeps its signature, so callers see no cascade.
        StartMethod::Fork if is_async => {
            let names = params.iter().map(|p| &p.name);
            quote! {
                #(let _ = #names;)*
                async { ::core::unreachable!() }
            }
        }
        StartMethod::Fork => call_forked(private, &options, &codec, &params, unsafety.is_some()),
        StartMethod::Spawn | StartMethod::Forkserver => {
            let (via, leading) = match (args.start_method(), &args.pool) {
                (_, Some(_)) if is_async => (
                    quote!(prepare_pooled_async),
                    pooled(private, args, &options),
                ),
                (_, Some(_)) => (quote!(call_pooled), pooled(private, args, &options)),
                (StartMethod::Forkserver, None) if is_async => {
                    (quote!(prepare_forkserved_async), quote!(&#options,))
                }
                _ if is_async => (quote!(prepare_spawned_async), quote!(&#options,)),
                (StartMethod::Forkserver, None) => (quote!(call_forkserved), quote!(&#options,)),
                _ => (quote!(call_spawned), quote!(&#options,)),
            };
            let spawned = Spawned {
                name,
                via,
                leading,
                result: &result,
                is_async,
                needs_runtime: is_async && awaits::needs_runtime(block),
                pooled: args.pool.is_some(),
            };
            call_spawned(private, &spawned, &codec, &params, unsafety.is_some())
        }
    };
    let output = quote!(::core::result::Result<#result, #krate::Error>);
    if is_async {
        // After an error the wrapper alone keeps the signature: a body
        // taking `Progress<M>` would add E0726 (elided lifetime in an async fn).
        let body = (args.start_method() != StartMethod::Fork).then(|| {
            quote! {
                #[allow(clippy::needless_pass_by_value, clippy::unnecessary_wraps, clippy::unused_async)]
                #(#lint_attrs)*
                #unsafety async fn __bombsquad_body(#inner_inputs) -> #result #block
            }
        });
        // The future owns the encoded arguments only: `use<>` captures none
        // of the parameters' lifetimes.
        return quote! {
            #(#attrs)*
            #track_caller
            #vis #unsafety fn #name #async_generics(#(#outer_inputs),*) -> impl ::core::future::Future<Output = #output> + ::core::marker::Send + 'static + use<#captures> {
                #body

                #call
            }
        };
    }
    quote! {
        #(#attrs)*
        #track_caller
        #vis #unsafety fn #name(#(#outer_inputs),*) -> #output {
            #[allow(clippy::needless_pass_by_value, clippy::unnecessary_wraps)]
            #(#lint_attrs)*
            #unsafety fn __bombsquad_body(#inner_inputs) -> #result #block

            #call
        }
    }
}

/// An async function's `Progress<M>` as `Progress<'static, M>`: its future
/// owns it (the callback must be `'static`), and an async function's
/// parameters cannot elide a path's lifetime.
fn static_progress(ty: &Type) -> Type {
    let mut ty = ty.clone();
    if let Type::Path(path) = &mut ty
        && let Some(last) = path.path.segments.last_mut()
        && let syn::PathArguments::AngleBracketed(generic) = &mut last.arguments
    {
        let lifetime: syn::GenericArgument = syn::parse_quote!('static);
        match generic.args.first_mut() {
            Some(syn::GenericArgument::Lifetime(_)) => generic.args[0] = lifetime,
            _ => generic.args.insert(0, lifetime),
        }
    }
    ty
}

/// The message type `M` of a `Progress<M>`.
fn message_type(ty: &Type) -> Option<&Type> {
    let Type::Path(path) = ty else {
        return None;
    };
    match &path.path.segments.last()?.arguments {
        syn::PathArguments::AngleBracketed(generic) => match generic.args.first()? {
            syn::GenericArgument::Type(message) if generic.args.len() == 1 => Some(message),
            _ => None,
        },
        _ => None,
    }
}

/// `ty` (a `Progress<M>`, its lifetime given or not) with `callback` as
/// the callback's type, its last generic argument.
fn with_callback(ty: &Type, callback: &TokenStream) -> Type {
    let mut ty = ty.clone();
    if let Type::Path(path) = &mut ty
        && let Some(last) = path.path.segments.last_mut()
        && let syn::PathArguments::AngleBracketed(generic) = &mut last.arguments
    {
        generic.args.push(syn::parse_quote!(#callback));
    }
    ty
}

/// The generic parameter of an async function's progress callback: it
/// must be `Send + 'static`, since the call's future owns it and may move
/// between threads.
fn async_callback_bound(
    private: &TokenStream,
    callback: &Ident,
    message: &Type,
    span: proc_macro2::Span,
) -> TokenStream {
    let private = respan(private, span);
    quote_spanned!(span=> #callback: ?::core::marker::Sized + #private::AsyncProgressCallback<#message>)
}

/// An async body's parameters, its `Progress` made `'static`.
fn async_inputs(inputs: &syn::punctuated::Punctuated<FnArg, syn::Token![,]>) -> TokenStream {
    let inputs = inputs.iter().map(|input| match input {
        FnArg::Typed(typed) if is_progress(&typed.ty) => {
            let mut typed = typed.clone();
            *typed.ty = static_progress(&typed.ty);
            quote!(#typed)
        }
        other => quote!(#other),
    });
    quote!(#(#inputs),*)
}

/// The wrapper's parameters: the user's names where the pattern is a plain
/// identifier, generated ones otherwise (`(a, b): (i32, i32)`).
fn params(function: &ItemFn) -> Vec<Param<'_>> {
    function
        .sig
        .inputs
        .iter()
        .enumerate()
        .filter_map(|(index, input)| match input {
            FnArg::Typed(PatType { pat, ty, .. }) => Some(Param {
                name: match &**pat {
                    Pat::Ident(ident) if ident.subpat.is_none() => ident.ident.clone(),
                    _ => format_ident!("__bombsquad_arg{}", index),
                },
                ty,
            }),
            FnArg::Receiver(_) => None,
        })
        .collect()
}

pub(crate) fn is_lint(attr: &syn::Attribute) -> bool {
    ["allow", "warn", "deny", "expect", "forbid"]
        .iter()
        .any(|lint| attr.path().is_ident(lint))
}

fn options(private: &TokenStream, args: &Args, name: &str) -> TokenStream {
    let backend = args.backend.map(|(backend, _)| match backend {
        Backend::File => quote!(.backend(#private::Backend::File)),
        Backend::Pipe => quote!(.backend(#private::Backend::Pipe)),
        Backend::Shm => quote!(.backend(#private::Backend::Shm)),
    });
    let timeout = args
        .timeout
        .map(|(millis, _)| quote!(.timeout(::core::time::Duration::from_millis(#millis))));
    let panic = args.panic.map(|(mode, _)| match mode {
        PanicMode::Resume => quote!(.panic_mode(#private::PanicMode::Resume)),
        PanicMode::Error => quote!(.panic_mode(#private::PanicMode::Error)),
    });
    let memory = args.memory.map(|(bytes, _)| quote!(.memory(#bytes)));
    let cpu = args
        .cpu
        .map(|(millis, _)| quote!(.cpu(::core::time::Duration::from_millis(#millis))));
    let stack_size = args.stack_size.map(|(bytes, _)| {
        let bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
        quote!(.stack_size(#bytes))
    });
    let stderr = args.stderr.as_ref().map(|(stderr, _)| {
        let stderr = match stderr {
            Stderr::Inherit => quote!(Inherit),
            Stderr::Null => quote!(Null),
            Stderr::Capture => quote!(Capture),
            Stderr::File(path) => quote!(File(::core::convert::From::from(#path))),
        };
        quote!(.stderr(#private::Stderr::#stderr))
    });
    let sandbox = args
        .sandbox
        .map(|(Sandbox::Compute, _)| quote!(.sandbox(#private::Sandbox::compute())));
    let max_result = args
        .max_result
        .map(|(bytes, _)| quote!(.max_result(#bytes)));
    quote! {
        #private::Isolate::new()
            .name(#name)
            #backend #timeout #panic #memory #cpu #stack_size #stderr #sandbox #max_result
    }
}

fn body_call(names: impl Iterator<Item = TokenStream>, unsafe_fn: bool) -> TokenStream {
    let call = quote!(__bombsquad_body(#(#names),*));
    if unsafe_fn {
        // SAFETY: the wrapper is `unsafe fn` with the body's own contract.
        quote!(unsafe { #call })
    } else {
        call
    }
}

/// The codec for the result type, picked by autoref specialization where
/// the type is concrete (`Vec<u8>` takes the `bin` path). The traits are
/// imported inside the block only, so the user's code never sees them.
fn codec(private: &TokenStream, result: &TokenStream) -> TokenStream {
    quote! {{
        use #private::{BytesCodec as _, SerdeCodec as _};
        (&&#private::CodecTag::<#result>::new()).__bombsquad_codec()
    }}
}

fn call_forked(
    private: &TokenStream,
    options: &TokenStream,
    codec: &TokenStream,
    params: &[Param<'_>],
    unsafe_fn: bool,
) -> TokenStream {
    let body = body_call(
        params.iter().map(|p| {
            let name = &p.name;
            if p.is_progress() {
                child_progress(private)
            } else {
                quote!(#name)
            }
        }),
        unsafe_fn,
    );
    let sink = progress_sink(private, params);
    quote! {
        #private::call_forked(&#options, #codec, #sink, move || #body)
    }
}

/// The leading arguments of a pooled call: the function's own pool, and
/// how to make it on its first call with the attribute's options.
fn pooled(private: &TokenStream, args: &Args, options: &TokenStream) -> TokenStream {
    let workers = args
        .pool
        .map_or(1, |(n, _)| usize::try_from(n).unwrap_or(usize::MAX));
    let max_calls = args.max_calls.map(|(n, _)| quote!(.max_calls(#n)));
    let retries = args.retries.map(|(n, _)| {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        quote!(.retries(#n))
    });
    let growth = args
        .max_rss_growth
        .map(|(n, _)| quote!(.max_rss_growth(#n)));
    quote! {
        {
            static __BOMBSQUAD_POOL: #private::StaticPool =
                #private::StaticPool::new();
            &__BOMBSQUAD_POOL
        },
        || #private::WorkerOptions::new()
            .workers(#workers) #max_calls #retries #growth
            .isolate(#options),
    }
}

/// A function whose child rebuilds its arguments: its name, the runtime
/// entry point that starts the child (with its leading arguments), and its
/// result type.
struct Spawned<'a> {
    name: &'a Ident,
    via: TokenStream,
    /// The arguments before the entry: the options, or a pool.
    leading: TokenStream,
    result: &'a TokenStream,
    /// An `async fn`: the child runs the body to completion, and the
    /// wrapper returns the call's future.
    is_async: bool,
    /// An `async fn` whose body may wait (`awaits.rs`): the child runs it
    /// on a runtime of its own; otherwise it polls it once.
    needs_runtime: bool,
    /// `pool = N`: an `async fn`'s future awaits a worker of its pool.
    pooled: bool,
}

fn call_spawned(
    private: &TokenStream,
    spawned: &Spawned<'_>,
    codec: &TokenStream,
    params: &[Param<'_>],
    unsafe_fn: bool,
) -> TokenStream {
    let Spawned {
        name,
        via,
        leading,
        result,
        is_async,
        needs_runtime,
        pooled,
    } = spawned;
    let name = name.to_string();
    let sent = || params.iter().filter(|p| !p.is_progress());
    let names: Vec<&Ident> = sent().map(|p| &p.name).collect();
    let owned_types = sent().map(|p| p.owned_type(private));
    let mut body = body_call(params.iter().map(|p| p.passed_in_child(private)), unsafe_fn);
    if *needs_runtime {
        body = quote!(#private::block_on(#body));
    } else if *is_async {
        body = quote!(#private::poll_once(#body));
    }
    let sink = progress_sink(private, params);
    let registration = register::entry(
        private,
        &quote!(#name),
        &quote!(__bombsquad_run),
        &quote!(::core::option::Option::None),
    );
    let child = quote! {
        fn __bombsquad_run(__bombsquad_args: &[u8]) {
            #private::serve::<(#(#private::ArgIn<#owned_types>,)*), #result>(
                __bombsquad_args,
                #codec,
                |(#(#private::ArgIn(#names),)*)| #body,
            )
        }

        #registration
    };
    let call = if *is_async {
        let prepared =
            quote!(#private::#via(#leading &__BOMBSQUAD_ENTRY, &(#(#private::Arg(&#names),)*)));
        match params.iter().find(|p| p.is_progress()) {
            Some(Param { name, ty }) => {
                // On the parameter's type: a message type that is not serde
                // is reported there.
                let private = respan(private, ty.span());
                let run = if *pooled {
                    quote!(run_pooled_async_with_progress)
                } else {
                    quote!(run_async_with_progress)
                };
                quote_spanned!(ty.span()=> #private::#run(#prepared, #codec, #name))
            }
            None if *pooled => quote!(#private::run_pooled_async(#prepared, #codec)),
            None => quote!(#private::run_async(#prepared, #codec)),
        }
    } else {
        quote!(#private::#via(#leading &__BOMBSQUAD_ENTRY, &(#(#private::Arg(&#names),)*), #codec, #sink))
    };
    quote! {
        #child
        #call
    }
}
