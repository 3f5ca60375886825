//! Whether an `async fn` body needs a tokio runtime in the child.
//!
//! A body with no `.await` in it has no point at which it could wait: its
//! future is done at its first poll, and a runtime built for it would go
//! unused (building one in a fresh child costs about as much as a fifth
//! of a fork-server call). Such a body is polled once instead. Anything
//! that could reach the runtime or wait is read as needing it: `await`,
//! an `async` block or closure (which something may run), a mention of
//! `tokio` or of a `Handle`, and any macro but std's formatting and
//! assertion ones, since a macro such as `join!` may hide an `.await`.
//! The scan is of tokens, so an `.await` inside a macro's arguments is
//! found too. What it cannot see is tokio under another name (a renamed
//! import) or a function the body calls that asks for the runtime itself
//! (`Handle::current()`); the README says so.

use proc_macro2::{Spacing, TokenStream, TokenTree};
use quote::ToTokens as _;
use syn::Block;

/// Words that mean the body may wait, or may reach for the runtime.
const RUNTIME_WORDS: [&str; 4] = ["await", "async", "tokio", "Handle"];

/// Keywords a `!` (a negation) may follow.
const NEGATING_KEYWORDS: [&str; 7] = ["break", "else", "if", "in", "match", "return", "while"];

/// Macros that expand to plain code: formatting, assertions, constants.
const PLAIN_MACROS: [&str; 32] = [
    "assert",
    "assert_eq",
    "assert_ne",
    "cfg",
    "column",
    "concat",
    "dbg",
    "debug_assert",
    "debug_assert_eq",
    "debug_assert_ne",
    "env",
    "eprint",
    "eprintln",
    "file",
    "format",
    "format_args",
    "include_bytes",
    "include_str",
    "line",
    "matches",
    "module_path",
    "option_env",
    "panic",
    "print",
    "println",
    "stringify",
    "todo",
    "unimplemented",
    "unreachable",
    "vec",
    "write",
    "writeln",
];

/// Whether `body` needs a runtime: see the module's documentation.
pub(crate) fn needs_runtime(body: &Block) -> bool {
    reaches_runtime(body.to_token_stream())
}

fn reaches_runtime(tokens: TokenStream) -> bool {
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    tokens.iter().enumerate().any(|(at, token)| match token {
        TokenTree::Ident(word) => {
            RUNTIME_WORDS.iter().any(|runtime| word == runtime)
                || is_macro_call(&tokens[at..]) && !PLAIN_MACROS.iter().any(|plain| word == plain)
        }
        TokenTree::Group(group) => reaches_runtime(group.stream()),
        TokenTree::Punct(_) | TokenTree::Literal(_) => false,
    })
}

/// Whether `tokens` start with `name ! (..)`, a macro call, where `name`
/// is not a keyword that may precede a negation (`if !(a && b)`).
fn is_macro_call(tokens: &[TokenTree]) -> bool {
    match tokens {
        [
            TokenTree::Ident(name),
            TokenTree::Punct(bang),
            TokenTree::Group(_),
            ..,
        ] => {
            bang.as_char() == '!'
                && bang.spacing() == Spacing::Alone
                && !NEGATING_KEYWORDS.iter().any(|keyword| name == keyword)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs(body: &str) -> bool {
        needs_runtime(&syn::parse_str(body).unwrap())
    }

    #[test]
    fn a_body_without_await_needs_no_runtime() {
        assert!(!needs("{ 42 }"));
        assert!(!needs(
            "{ let x = compute(1); assert_eq!(x, 2, \"{x}\"); x != 3 }"
        ));
        assert!(!needs("{ let v = vec![1]; v }"));
        assert!(!needs(
            "{ if !(a && b) { println!(\"{}\", format!(\"{}\", 1)); } !done }"
        ));
    }

    #[test]
    fn an_await_anywhere_needs_one() {
        assert!(needs("{ ready(1).await }"));
        assert!(needs("{ println!(\"{}\", ready(1).await); }"));
        assert!(needs("{ if x { let y = { f().await }; } }"));
    }

    #[test]
    fn async_blocks_tokio_handles_and_other_macros_need_one() {
        assert!(needs("{ let f = async { 1 }; drop(f); }"));
        assert!(needs("{ let t = tokio::spawn(work()); }"));
        assert!(needs("{ Handle::current(); }"));
        assert!(needs("{ join!(a, b); }"));
        assert!(needs("{ futures::select!(x) }"));
    }
}
