//! Where a child's stderr goes: the choice. The relay is `parent::stdio`.

use std::path::PathBuf;

/// Where the child's stderr goes. Whatever the choice but `Null`, the last
/// 64 KiB are kept for [`NonzeroExitcode::stderr_tail`](crate::NonzeroExitcode::stderr_tail).
///
/// # Examples
///
/// ```
/// use bombsquad::{Error, Isolate, Stderr};
///
/// let err = Isolate::new()
///     .stderr(Stderr::Capture)
///     .fork(|| -> () {
///         eprintln!("about to fail");
///         std::process::exit(3)
///     })
///     .unwrap_err();
/// let Error::NonzeroExitcode(exit) = err else { panic!("{err}") };
/// assert_eq!(exit.stderr_tail(), b"about to fail\n");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Stderr {
    /// Replayed to the caller's stderr through `eprint!` as it arrives (so
    /// libtest captures it), and kept. The default.
    #[default]
    Inherit,
    /// Discarded: the child's stderr is `/dev/null` and nothing is kept, so
    /// a report cannot quote it (nor classify an allocation failure by std's
    /// message).
    Null,
    /// Kept for the error only, never printed.
    Capture,
    /// Appended to this file (created with mode 0600), and kept.
    File(PathBuf),
}
