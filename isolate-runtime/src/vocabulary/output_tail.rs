//! What is left of a child's output stream once the call is over.

/// What is left of a stream once the call is over.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct OutputTail {
    pub(crate) bytes: Vec<u8>,
    /// Bytes written before the kept tail (or all of them when nothing is kept).
    pub(crate) dropped: u64,
}

/// As text, and only its end: a derived `Debug` would print up to 64 Ki
/// numbers (what libtest shows for a failing test that returns the error).
impl std::fmt::Debug for OutputTail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const SHOWN: usize = 1024;
        let start = self.bytes.len().saturating_sub(SHOWN);
        let hidden = self.dropped + start as u64;
        let text = String::from_utf8_lossy(&self.bytes[start..]);
        if hidden > 0 {
            write!(f, "\"[{hidden} bytes before]...{}\"", text.escape_debug())
        } else {
            write!(f, "{text:?}")
        }
    }
}
