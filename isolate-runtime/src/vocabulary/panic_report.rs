//! A panic in the child, as sent to the parent: message (cut when long),
//! location and backtrace.

use std::any::Any;
use std::backtrace::{Backtrace, BacktraceStatus};
use std::panic::PanicHookInfo;

use serde::{Deserialize, Serialize};

use crate::vocabulary::error::Location;

/// The largest panic message sent back; longer ones are cut (docs/FAULTS.md B5).
const MAX_MESSAGE_LEN: usize = 64 << 10;

/// A panic in the child, as sent to the parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PanicReport {
    pub(crate) message: String,
    pub(crate) location: Option<Location>,
    pub(crate) backtrace: Option<String>,
}

impl PanicReport {
    pub(crate) fn from_hook(info: &PanicHookInfo<'_>) -> Self {
        let backtrace = Backtrace::capture();
        Self {
            message: message_of(info.payload()),
            location: info.location().map(|l| Location {
                file: l.file().to_owned(),
                line: l.line(),
                column: l.column(),
            }),
            backtrace: (backtrace.status() == BacktraceStatus::Captured)
                .then(|| without_panic_machinery(&backtrace.to_string())),
        }
    }

    /// A report built from a caught payload, for when our hook did not run
    /// (the user replaced it).
    pub(crate) fn from_payload(payload: &(dyn Any + Send)) -> Self {
        Self {
            message: message_of(payload),
            location: None,
            backtrace: None,
        }
    }
}

/// Drops the frames of the hook and of std's panic machinery, as std's own
/// short backtraces do: the first frame shown is the one that panicked.
fn without_panic_machinery(backtrace: &str) -> String {
    let Some(begin_unwind) = backtrace.find("rust_begin_unwind") else {
        return backtrace.to_owned();
    };
    let rest = &backtrace[begin_unwind..];
    let after = rest.find('\n').map_or(rest.len(), |i| i + 1);
    let rest = &rest[after..];
    // Skip the frame's "at file:line" continuation lines, if any.
    let start = rest
        .lines()
        .take_while(|line| line.trim_start().starts_with("at "))
        .map(|line| line.len() + 1)
        .sum::<usize>();
    rest[start.min(rest.len())..].to_owned()
}

/// The panic message as std's hook prints it, bounded.
pub(crate) fn message_of(payload: &(dyn Any + Send)) -> String {
    let message = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "child panicked with a non-string payload (Box<dyn Any>)".to_owned()
    };
    truncate(message)
}

fn truncate(mut message: String) -> String {
    if message.len() <= MAX_MESSAGE_LEN {
        return message;
    }
    let dropped = message.len() - cut_point(&message);
    message.truncate(message.len() - dropped);
    message.push_str(&format!("…[truncated {dropped} bytes]"));
    message
}

fn cut_point(message: &str) -> usize {
    (0..=MAX_MESSAGE_LEN)
        .rev()
        .find(|&i| message.is_char_boundary(i))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_with_a_marker() {
        let message = truncate("é".repeat(MAX_MESSAGE_LEN));
        assert!(message.len() <= MAX_MESSAGE_LEN + 40);
        assert!(message.ends_with(&format!("…[truncated {} bytes]", MAX_MESSAGE_LEN)));
    }

    #[test]
    fn backtraces_start_at_the_panicking_frame() {
        let full = "   0: hook\n   1: __rustc::rust_begin_unwind\n             at std.rs:1:1\n   2: core::panicking::panic_fmt\n   3: user::f\n";
        assert_eq!(
            without_panic_machinery(full),
            "   2: core::panicking::panic_fmt\n   3: user::f\n"
        );
    }

    #[test]
    fn non_string_payloads_are_named() {
        assert_eq!(
            message_of(&42u32),
            "child panicked with a non-string payload (Box<dyn Any>)"
        );
        assert_eq!(message_of(&"boom"), "boom");
    }
}
