//! The `#[bombsquad]` attribute. Use it through the `bombsquad` crate.

use proc_macro::TokenStream;

/// See the `bombsquad` crate.
#[proc_macro_attribute]
pub fn bombsquad(_args: TokenStream, item: TokenStream) -> TokenStream {
    item
}
