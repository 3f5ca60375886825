//! The attribute's arguments, typed, each kept with its span.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote};
use syn::meta::ParseNestedMeta;
use syn::{LitStr, Token};

use crate::errors::{Errors, Recovery};

const KEYS: &str = "`start_method`, `backend`, `timeout`, `panic`, `memory`, `cpu`, `stack_size`, \
                    `stderr`, `sandbox`, `max_result`, `pool`, `max_calls`, `retries`, `max_rss_growth`, \
                    `crate`";

/// A sandbox policy, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sandbox {
    Compute,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum StartMethod {
    Spawn,
    Fork,
    #[default]
    Forkserver,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Backend {
    #[default]
    File,
    Pipe,
    Shm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum PanicMode {
    #[default]
    Resume,
    Error,
}

/// Where the child's stderr goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stderr {
    Inherit,
    Null,
    Capture,
    File(String),
}

/// `#[bombsquad(start_method = "..", backend = "..", timeout = "..", panic = "..",
/// memory = "..", cpu = "..", stack_size = "..", stderr = "..", sandbox = "..", max_result = "..", crate = "..")]`
#[derive(Debug, Default)]
pub(crate) struct Args {
    /// The path of the `bombsquad` crate, for a renamed dependency.
    pub(crate) krate: Option<(TokenStream, Span)>,
    /// `start_method` was given a value it does not take: the checks that
    /// depend on it are skipped rather than run against the default.
    pub(crate) start_method_rejected: bool,
    pub(crate) start_method: Option<(StartMethod, Span)>,
    pub(crate) backend: Option<(Backend, Span)>,
    /// In milliseconds.
    pub(crate) timeout: Option<(u64, Span)>,
    pub(crate) panic: Option<(PanicMode, Span)>,
    /// In bytes.
    pub(crate) memory: Option<(u64, Span)>,
    /// In milliseconds (the limit is applied in whole seconds, rounded up).
    pub(crate) cpu: Option<(u64, Span)>,
    /// In bytes.
    pub(crate) stack_size: Option<(u64, Span)>,
    pub(crate) stderr: Option<(Stderr, Span)>,
    pub(crate) sandbox: Option<(Sandbox, Span)>,
    /// In bytes.
    pub(crate) max_result: Option<(u64, Span)>,
    /// Warm workers per function.
    pub(crate) pool: Option<(u64, Span)>,
    pub(crate) max_calls: Option<(u64, Span)>,
    pub(crate) retries: Option<(u64, Span)>,
    /// In bytes.
    pub(crate) max_rss_growth: Option<(u64, Span)>,
}

impl Args {
    /// Every option that parses, and an error for each one that does not:
    /// a wrong option is reported and left at its default, and parsing
    /// goes on with the next.
    pub(crate) fn parse(tokens: TokenStream, errors: &mut Errors) -> Self {
        let mut args = Self::default();
        let parser = syn::meta::parser(|meta| {
            if let Err(error) = args.set(&meta) {
                args.start_method_rejected |= meta.path.is_ident("start_method");
                errors.add(error, Recovery::DefaultOptions);
                skip_value(&meta)?;
            }
            Ok(())
        });
        if let Err(error) = syn::parse::Parser::parse2(parser, tokens) {
            errors.add(error, Recovery::DefaultOptions);
        }
        args
    }

    /// The options a wrapper falls back to when one is wrong: the defaults
    /// (the crate path kept), forked, because a forked child asks nothing
    /// of the arguments: an argument that only the wrong option made
    /// invalid raises nothing more.
    pub(crate) fn fallback(&self) -> Self {
        Self {
            krate: self.krate.clone(),
            start_method: Some((StartMethod::Fork, Span::call_site())),
            ..Self::default()
        }
    }

    /// The path of the `__private` module generated code names:
    /// `::bombsquad::__private`, or the `crate` option's path.
    pub(crate) fn private(&self) -> TokenStream {
        match &self.krate {
            Some((path, _)) => quote!(#path::__private),
            None => quote!(::bombsquad::__private),
        }
    }

    /// The path of the crate itself, for `Error` in the signature.
    pub(crate) fn krate(&self) -> TokenStream {
        match &self.krate {
            Some((path, _)) => path.clone(),
            None => quote!(::bombsquad),
        }
    }

    pub(crate) fn start_method(&self) -> StartMethod {
        self.start_method.map(|(m, _)| m).unwrap_or_default()
    }

    fn set(&mut self, meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
        let key = meta
            .path
            .get_ident()
            .map(ToString::to_string)
            .unwrap_or_default();
        match key.as_str() {
            "crate" => set_once(
                &mut self.krate,
                meta,
                &key,
                |v| {
                    syn::parse_str::<syn::Path>(v)
                        .ok()
                        .map(ToTokens::into_token_stream)
                },
                "the path of the `bombsquad` crate, such as \"my_bombsquad\" or \"::my_bombsquad\"",
            ),
            "start_method" => set_once(
                &mut self.start_method,
                meta,
                &key,
                |v| match v {
                    "spawn" => Some(StartMethod::Spawn),
                    "fork" => Some(StartMethod::Fork),
                    "forkserver" => Some(StartMethod::Forkserver),
                    _ => None,
                },
                "\"spawn\", \"fork\" or \"forkserver\"",
            ),
            "backend" => set_once(
                &mut self.backend,
                meta,
                &key,
                |v| match v {
                    "file" => Some(Backend::File),
                    "pipe" => Some(Backend::Pipe),
                    "shm" => Some(Backend::Shm),
                    _ => None,
                },
                "\"file\", \"pipe\" or \"shm\"",
            ),
            "timeout" => set_once(
                &mut self.timeout,
                meta,
                &key,
                parse_millis,
                "a duration such as \"250ms\", \"2s\", \"1m\" or \"1h\", above zero",
            ),
            "panic" => set_once(
                &mut self.panic,
                meta,
                &key,
                |v| match v {
                    "resume" => Some(PanicMode::Resume),
                    "error" => Some(PanicMode::Error),
                    _ => None,
                },
                "\"resume\" or \"error\"",
            ),
            "memory" => set_once(
                &mut self.memory,
                meta,
                &key,
                parse_bytes,
                "a size such as \"512MiB\" or \"2GiB\", above zero",
            ),
            "cpu" => set_once(
                &mut self.cpu,
                meta,
                &key,
                parse_millis,
                "a CPU time such as \"10s\" or \"1m\", above zero",
            ),
            "stack_size" => set_once(
                &mut self.stack_size,
                meta,
                &key,
                parse_bytes,
                "a size such as \"64MiB\", above zero",
            ),
            "stderr" => set_once(
                &mut self.stderr,
                meta,
                &key,
                |v| match v {
                    "inherit" => Some(Stderr::Inherit),
                    "null" => Some(Stderr::Null),
                    "capture" => Some(Stderr::Capture),
                    "" => None,
                    path => Some(Stderr::File(path.to_owned())),
                },
                "\"inherit\", \"null\", \"capture\" or a file path",
            ),
            "sandbox" => set_once(
                &mut self.sandbox,
                meta,
                &key,
                |v| (v == "compute").then_some(Sandbox::Compute),
                "\"compute\"",
            ),
            "max_result" => set_once(
                &mut self.max_result,
                meta,
                &key,
                parse_bytes,
                "a size such as \"64MiB\" or \"1GiB\", above zero",
            ),
            "pool" => set_count(&mut self.pool, meta, &key, 1),
            "max_calls" => set_count(&mut self.max_calls, meta, &key, 1),
            "retries" => set_count(&mut self.retries, meta, &key, 0),
            "max_rss_growth" => set_once(
                &mut self.max_rss_growth,
                meta,
                &key,
                parse_bytes,
                "a size such as \"50MiB\", above zero",
            ),
            _ => Err(meta.error(unknown_option(&key))),
        }
    }

    /// The span of the first option given, if any.
    pub(crate) fn first_span(&self) -> Option<Span> {
        [
            self.start_method.map(|(_, s)| s),
            self.backend.map(|(_, s)| s),
            self.timeout.map(|(_, s)| s),
            self.panic.map(|(_, s)| s),
            self.memory.map(|(_, s)| s),
            self.cpu.map(|(_, s)| s),
            self.stack_size.map(|(_, s)| s),
            self.stderr.as_ref().map(|(_, s)| *s),
            self.sandbox.map(|(_, s)| s),
            self.max_result.map(|(_, s)| s),
            self.pool.map(|(_, s)| s),
        ]
        .into_iter()
        .flatten()
        .chain(self.pool_options().map(|(_, span)| span))
        .next()
    }

    /// The pool-only options that were given, with their spans.
    pub(crate) fn pool_options(&self) -> impl Iterator<Item = (&'static str, Span)> {
        [
            ("max_calls", self.max_calls.map(|(_, span)| span)),
            ("retries", self.retries.map(|(_, span)| span)),
            ("max_rss_growth", self.max_rss_growth.map(|(_, span)| span)),
        ]
        .into_iter()
        .filter_map(|(key, span)| span.map(|span| (key, span)))
    }
}

/// Skips what is left of a wrong option, up to the next `,`, so the
/// options after it are still read.
fn skip_value(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    while !meta.input.is_empty() && !meta.input.peek(Token![,]) {
        meta.input.parse::<proc_macro2::TokenTree>()?;
    }
    Ok(())
}

/// Reads `key = N` (an integer literal, at least `min`) into `slot`.
fn set_count(
    slot: &mut Option<(u64, Span)>,
    meta: &ParseNestedMeta<'_>,
    key: &str,
    min: u64,
) -> syn::Result<()> {
    if slot.is_some() {
        return Err(meta.error(format_args!("`{key}` is set more than once")));
    }
    let takes = format!("`{key}` takes a whole number, at least {min}: `{key} = 4`");
    let value: syn::LitInt = meta
        .value()
        .map_err(|_| meta.error(&takes))?
        .parse()
        .map_err(|e| syn::Error::new(e.span(), &takes))?;
    let count: u64 = value
        .base10_parse()
        .ok()
        .filter(|count| *count >= min)
        .ok_or_else(|| syn::Error::new(value.span(), &takes))?;
    *slot = Some((count, value.span()));
    Ok(())
}

/// "unknown option `fork`; ...", with a hint when the key is a known value.
fn unknown_option(key: &str) -> String {
    let owner = match key {
        "spawn" | "fork" | "forkserver" => Some("start_method"),
        "file" | "pipe" | "shm" => Some("backend"),
        "resume" | "error" => Some("panic"),
        _ => None,
    };
    match (key, owner) {
        ("", _) => format!("unknown option; expected one of {KEYS}"),
        (_, Some(owner)) => format!("unknown option `{key}`; did you mean `{owner} = \"{key}\"`?"),
        (_, None) => format!("unknown option `{key}`; expected one of {KEYS}"),
    }
}

/// Reads `key = "value"` into `slot`, refusing a repeated key and a value
/// `parse` does not accept.
fn set_once<T>(
    slot: &mut Option<(T, Span)>,
    meta: &ParseNestedMeta<'_>,
    key: &str,
    parse: impl FnOnce(&str) -> Option<T>,
    expected: &str,
) -> syn::Result<()> {
    if slot.is_some() {
        return Err(meta.error(format_args!("`{key}` is set more than once")));
    }
    let takes = format!("`{key}` takes a string: {expected}");
    // A bare `timeout` or `timeout(..)`: point at the key, not the attribute.
    let value: LitStr = meta
        .value()
        .map_err(|_| meta.error(&takes))?
        .parse()
        .map_err(|e| syn::Error::new(e.span(), &takes))?;
    let parsed = parse(&value.value()).ok_or_else(|| {
        syn::Error::new(
            value.span(),
            format!("invalid `{key}`; expected {expected}"),
        )
    })?;
    *slot = Some((parsed, value.span()));
    Ok(())
}

/// "250ms", "2s", "1m", "1h" in milliseconds; `None` for anything else or 0.
fn parse_millis(text: &str) -> Option<u64> {
    let digits = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().ok()?;
    let scale = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    number.checked_mul(scale).filter(|&millis| millis > 0)
}

/// "512MiB", "2GiB", "64KiB", "1000000B" (also "MB", "GB", "KB") in bytes;
/// `None` for anything else or 0.
fn parse_bytes(text: &str) -> Option<u64> {
    let digits = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().ok()?;
    let scale: u64 = match unit {
        "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => return None,
    };
    number.checked_mul(scale).filter(|&bytes| bytes > 0)
}

#[cfg(test)]
mod tests {
    use super::{parse_bytes, parse_millis};

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("512MiB"), Some(512 << 20));
        assert_eq!(parse_bytes("2GiB"), Some(2 << 30));
        assert_eq!(parse_bytes("64KiB"), Some(64 << 10));
        assert_eq!(parse_bytes("1500B"), Some(1500));
        assert_eq!(parse_bytes("3MB"), Some(3_000_000));
        assert_eq!(parse_bytes("0MiB"), None);
        assert_eq!(parse_bytes("512"), None);
        assert_eq!(parse_bytes("512mib"), None);
        assert_eq!(parse_bytes("1.5GiB"), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_millis("250ms"), Some(250));
        assert_eq!(parse_millis("2s"), Some(2_000));
        assert_eq!(parse_millis("1m"), Some(60_000));
        assert_eq!(parse_millis("1h"), Some(3_600_000));
        assert_eq!(parse_millis("0s"), None);
        assert_eq!(parse_millis("2"), None);
        assert_eq!(parse_millis("s"), None);
        assert_eq!(parse_millis("1.5s"), None);
    }
}
