//! The temp-file backend: an unnamed file (`O_TMPFILE`, or created and
//! unlinked at once with a random name and mode 0600, by `tempfile`), so no
//! name is ever predictable and nothing is left behind (docs/FAULTS.md I5, C10).

use std::borrow::Cow;
use std::fs::{File, Permissions};
use std::ops::{Deref, Range};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{Reply, read_exact_range};
use crate::codec::{self, HEADER_LEN, MAX_FRAME_LEN};
use crate::error::Error;

/// The reply file, in errors.
const WHAT: &str = "the reply file";

/// A reply file up to this long is read whole with one `pread`. A longer
/// one is read this far first, and the payload of a `Return` frame that
/// ends it is left in the file, for decoding to read straight into fresh
/// memory of its own size: read whole, a large `Vec<u8>` result would then
/// be moved to the front of its buffer, a second pass over all of it.
const HEAD_LEN: usize = 64 << 10;

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

    /// What the child wrote, once it has exited: the whole file, or for a
    /// long one ending in a `Return` frame everything but that frame's
    /// payload (see [`HEAD_LEN`]). Reads are positional: the child shared
    /// the file offset.
    ///
    /// # Errors
    ///
    /// The file could not be read, or is longer than any reply may be.
    pub(crate) fn finish(self) -> Result<Reply, String> {
        let len = self.len()?;
        if len <= HEAD_LEN {
            return read_exact_range(&self.file, 0..len, WHAT).map(Reply::Read);
        }
        let head = read_exact_range(&self.file, 0..HEAD_LEN, WHAT)?;
        let Some((frames_end, result)) = codec::final_return(&head, len) else {
            return read_exact_range(&self.file, 0..len, WHAT).map(Reply::Read);
        };
        Ok(Reply::Unread(UnreadResult {
            file: self.file,
            len,
            head,
            frames_end,
            result,
        }))
    }

    /// The file's length, once the child has exited.
    fn len(&self) -> Result<usize, String> {
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
        usize::try_from(len).map_err(|e| e.to_string())
    }
}

/// A reply file whose last frame is a `Return`, read only up to
/// [`HEAD_LEN`]: the rest of that frame's payload is read when the result
/// is decoded. The file is not mapped: a grandchild that escaped may still
/// hold it and shrink it, which makes a read come up short (an error) where
/// a mapping would raise SIGBUS.
#[derive(Debug)]
pub(crate) struct UnreadResult {
    file: File,
    /// The file's length when the child had exited.
    len: usize,
    /// The file's first [`HEAD_LEN`] bytes.
    head: Vec<u8>,
    /// Where the frames before the result end (and the result's begins).
    frames_end: usize,
    /// The result frame's payload.
    result: Range<usize>,
}

impl UnreadResult {
    /// The payload of the `Return` frame that ends the file.
    pub(crate) fn result(&self) -> Range<usize> {
        self.result.clone()
    }

    /// `range` in fresh memory of its exact size.
    pub(crate) fn read_range(&self, range: Range<usize>) -> Result<Vec<u8>, String> {
        read_exact_range(&self.file, range, WHAT)
    }

    /// `range`, borrowed from the bytes already read if they hold it.
    pub(crate) fn get(&self, range: Range<usize>) -> Result<Cow<'_, [u8]>, String> {
        match self.head.get(range.clone()) {
            Some(bytes) => Ok(Cow::Borrowed(bytes)),
            None => self.read_range(range).map(Cow::Owned),
        }
    }

    /// The whole file, as long as it was when the child had exited.
    pub(crate) fn read_whole(self) -> Result<Vec<u8>, String> {
        self.read_range(0..self.len)
    }
}

impl Deref for UnreadResult {
    type Target = [u8];

    /// The frames before the result.
    fn deref(&self) -> &[u8] {
        &self.head[..self.frames_end]
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;
    use crate::codec::{BytesCodec, CodecTag, FrameKind, header};
    use crate::error::{CodecStage, Error};
    use crate::outcome::judge_frames;

    /// A reply file holding `frames`, as a child would leave it.
    fn reply_holding(frames: &[u8]) -> FileReply {
        let reply = FileReply::create(None).unwrap();
        reply.file.write_all_at(frames, 0).unwrap();
        reply
    }

    /// A `Return` frame of a `Vec<u8>` of `len` bytes (`bin 32`).
    fn bytes_frame(len: usize) -> (Vec<u8>, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut frame = header(FrameKind::Return, len + 5).to_vec();
        frame.push(0xc6);
        frame.extend_from_slice(&u32::try_from(len).unwrap().to_be_bytes());
        frame.extend_from_slice(&data);
        (frame, data)
    }

    #[test]
    fn a_long_result_stays_in_the_file_until_decoded() {
        let (frame, data) = bytes_frame(1 << 20);
        let reply = reply_holding(&frame).finish().unwrap();
        assert_eq!(reply.unread_result(), Some(16..frame.len()));
        assert!(reply.is_empty(), "no frames before the result");
        let codec = (&&CodecTag::<Vec<u8>>::new()).__bombsquad_codec();
        assert!(judge_frames(1, reply, codec).unwrap() == data);
    }

    #[test]
    fn a_file_shrunk_after_the_child_exited_is_a_clean_error() {
        let (frame, _) = bytes_frame(1 << 20);
        let reply = reply_holding(&frame);
        let file = reply.file.try_clone().unwrap();
        let reply = reply.finish().unwrap();
        // An escaped grandchild that kept the descriptor shrinks the file
        // between the parent's two reads.
        file.set_len(2 * HEAD_LEN as u64).unwrap();
        let codec = (&&CodecTag::<Vec<u8>>::new()).__bombsquad_codec();
        match judge_frames(1, reply, codec) {
            Err(Error::Codec { stage, message }) => {
                assert_eq!(stage, CodecStage::DecodeResult);
                assert_eq!(
                    message,
                    format!(
                        "the reply file ends before byte {}: it shrank while it was read",
                        frame.len()
                    )
                );
            }
            other => panic!("expected a codec error, got {other:?}"),
        }
    }
}
