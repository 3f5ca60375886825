//! How a reply travels from child to parent: the choice. The channels
//! themselves are `parent::backend`.

/// How the reply travels from child to parent.
///
/// # Examples
///
/// ```
/// use bombsquad::{Backend, Isolate};
///
/// let len = Isolate::new()
///     .backend(Backend::Pipe)
///     .fork(|| vec![7u8; 1 << 20].len())
///     .unwrap();
/// assert_eq!(len, 1 << 20);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Backend {
    /// An unnamed temp file (`O_TMPFILE`, mode 0600) in the temp dir; the
    /// reply survives in the file however the child dies. The default, as
    /// in Python's bombsquad.
    #[default]
    File,
    /// A pipe, drained by the parent while the child writes; needs no
    /// temp dir.
    Pipe,
    /// Shared memory: a memfd the parent creates and the child writes;
    /// after the child exits the parent seals it and decodes a large result
    /// straight from a read-only mapping, with no copy into a buffer first
    /// (a reply under 64 KiB is read with one `pread`). Needs no temp dir;
    /// the reply lives in memory (not on disk) until the call returns.
    Shm,
}
