//! The temp-file backend: an unnamed file (`O_TMPFILE`, or created and
//! unlinked at once with a random name and mode 0600, by `tempfile`), so no
//! name is ever predictable and nothing is left behind (FAULTS.md I5, C10).

use std::fs::{File, Permissions};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;

use crate::codec::{HEADER_LEN, MAX_FRAME_LEN};
use crate::error::Error;

#[derive(Debug)]
pub(crate) struct FileReply {
    file: File,
}

impl FileReply {
    pub(crate) fn create(dir: Option<&Path>) -> Result<Self, Error> {
        let dir = dir.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let create = || {
            let file = tempfile::tempfile_in(&dir)?;
            // tempfile's O_TMPFILE path honours the umask (0644); the file
            // has no name yet, so narrowing it now leaves no window.
            file.set_permissions(Permissions::from_mode(0o600))?;
            Ok::<_, std::io::Error>(file)
        };
        let file = create()
            .map_err(|e| Error::spawn(format!("create the reply file in {}", dir.display()), e))?;
        Ok(Self { file })
    }

    pub(crate) fn child_end(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Reads the file from the start; the child shares the file offset, so
    /// positional reads leave it alone.
    pub(crate) fn read_all(self) -> Result<Vec<u8>, String> {
        let len = self
            .file
            .metadata()
            .map_err(|e| format!("stat the reply file: {e}"))?
            .len();
        if len > MAX_FRAME_LEN + 4 * HEADER_LEN as u64 {
            return Err(format!(
                "the reply file holds {len} bytes, more than any reply may"
            ));
        }
        let mut bytes = vec![0; usize::try_from(len).map_err(|e| e.to_string())?];
        self.file
            .read_exact_at(&mut bytes, 0)
            .map_err(|e| format!("read the reply file: {e}"))?;
        Ok(bytes)
    }
}
