//! Every error found before expansion, all reported at once, and how much
//! of the expansion they leave possible.

use proc_macro2::Span;
use quote::ToTokens;

/// What can still be expanded next to the errors found. A caller written
/// against the real API sees one error, not a cascade, as long as the
/// wrapper keeps its real signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) enum Recovery {
    /// No error: the item as written.
    #[default]
    AsWritten,
    /// An option is wrong: the wrapper, with the default options.
    DefaultOptions,
    /// The item itself is wrong: it is emitted unchanged.
    Unchanged,
}

#[derive(Default)]
pub(crate) struct Errors {
    all: Option<syn::Error>,
    recovery: Recovery,
}

impl Errors {
    /// An error on the item itself (its signature, its kind).
    pub(crate) fn item(&mut self, tokens: &impl ToTokens, message: impl std::fmt::Display) {
        self.add(
            syn::Error::new_spanned(tokens, message),
            Recovery::Unchanged,
        );
    }

    /// An error in the options, or one the options cause.
    pub(crate) fn option(&mut self, span: Span, message: impl std::fmt::Display) {
        self.add(syn::Error::new(span, message), Recovery::DefaultOptions);
    }

    /// [`Errors::option`], spanning `tokens`.
    pub(crate) fn option_spanned(
        &mut self,
        tokens: &impl ToTokens,
        message: impl std::fmt::Display,
    ) {
        self.add(
            syn::Error::new_spanned(tokens, message),
            Recovery::DefaultOptions,
        );
    }

    pub(crate) fn add(&mut self, error: syn::Error, recovery: Recovery) {
        self.recovery = self.recovery.max(recovery);
        match &mut self.all {
            Some(all) => all.combine(error),
            None => self.all = Some(error),
        }
    }

    pub(crate) fn recovery(&self) -> Recovery {
        self.recovery
    }

    /// The errors as `compile_error!` invocations; empty when there are none.
    pub(crate) fn into_compile_errors(self) -> proc_macro2::TokenStream {
        self.all
            .map(syn::Error::into_compile_error)
            .unwrap_or_default()
    }
}
