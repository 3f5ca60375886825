//! The temp-file backend: an unnamed file (`O_TMPFILE`, or created and
//! unlinked at once with a random name and mode 0600, by `tempfile`), so no
//! name is ever predictable and nothing is left behind (docs/FAULTS.md I5, C10).
//!
//! The child decides how long the file is (a sparse `ftruncate` costs it
//! nothing), so the parent never reads it whole on the child's word: it
//! walks the frame headers, reads the frames before the last (at most
//! [`FRAMING_ALLOWANCE`] bytes) and leaves the payload of a final `Return`
//! frame in the file until it is decoded. A malformed reply costs the
//! parent what it read to find it malformed (docs/FAULTS.md E11).

use std::borrow::Cow;
use std::cell::RefCell;
use std::fs::{File, Permissions};
use std::ops::Range;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::rc::Rc;

use super::{FRAMING_ALLOWANCE, check_reply_len, read_exact_range, read_into};
use crate::vocabulary::error::Error;
use crate::wire::{CallId, FrameError, FrameKind, HEADER_LEN, Header, Limit};

/// A reply file up to this long is read whole with one `pread`. A longer
/// one is read this far first, and the rest only as its frame headers
/// lead; the payload of a `Return` frame that ends it is left in the file,
/// for decoding to read straight into fresh memory of its own size: read
/// whole, a large `Vec<u8>` result would then be moved to the front of its
/// buffer, a second pass over all of it.
const HEAD_LEN: usize = 64 << 10;

/// The frames before a reply file's last one are held in memory up to
/// this many bytes.
const PREFIX_MAX: usize = FRAMING_ALLOWANCE as usize;

/// A result left in the file is read in pieces this large, each
/// checksummed while it is still in the cache.
const CHECK_CHUNK: usize = 256 << 10;

#[derive(Debug)]
pub(crate) struct FileReply {
    file: File,
}

/// A finished reply file: read whole, or walked.
#[derive(Debug)]
pub(crate) enum Finished {
    Whole(Vec<u8>),
    Walked(FileView),
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

    /// What the child wrote, once it has exited (see [`finish_reply`]).
    ///
    /// # Errors
    ///
    /// As [`finish_reply`].
    pub(crate) fn finish(self, limit: u64, call_id: CallId) -> Result<Finished, FrameError> {
        let file = NamedFile {
            file: self.file,
            what: "the reply file",
        };
        finish_reply(file, limit, call_id)
    }
}

/// A reply file or memfd, and its name in errors.
#[derive(Debug)]
pub(crate) struct NamedFile {
    pub(crate) file: File,
    pub(crate) what: &'static str,
}

impl NamedFile {
    /// `range` in fresh memory of its exact size.
    fn read(&self, range: Range<usize>) -> Result<Vec<u8>, String> {
        read_exact_range(&self.file, range, self.what)
    }

    fn read_into(&self, buffer: &mut [u8], offset: usize) -> Result<(), String> {
        read_into(&self.file, buffer, offset, self.what)
    }
}

/// What the child wrote to `file` for the call `call_id`, once it has
/// exited: the whole file when it is short, else its first [`HEAD_LEN`]
/// bytes and its frames walked. Reads are positional: the child shared the
/// file offset.
///
/// # Errors
///
/// The file could not be read, or is longer than a reply under `limit`
/// may be.
pub(crate) fn finish_reply(
    file: NamedFile,
    limit: u64,
    call_id: CallId,
) -> Result<Finished, FrameError> {
    let len = file
        .file
        .metadata()
        .map_err(|e| format!("stat {}: {e}", file.what))?
        .len();
    let len = check_reply_len(len, limit)?;
    if len <= HEAD_LEN {
        return Ok(Finished::Whole(file.read(0..len)?));
    }
    let head = file.read(0..HEAD_LEN)?;
    Ok(Finished::Walked(FileView::walk(
        Rc::new(file),
        len,
        head,
        call_id,
        limit,
    )))
}

/// A long reply file: the bytes read so far, and what walking its frame
/// headers found.
#[derive(Debug)]
pub(crate) struct FileView {
    file: Rc<NamedFile>,
    /// The file's length when the child had exited.
    len: usize,
    /// The file's first bytes: [`HEAD_LEN`], or up to the last frame.
    bytes: Vec<u8>,
    walk: Result<Walked, FrameError>,
}

#[derive(Debug)]
struct Walked {
    /// Where the frames held in `bytes` end.
    frames_end: usize,
    /// A final `Return` frame whose payload is left in the file.
    result: Option<Rc<ResultCheck>>,
}

impl FileView {
    fn walk(file: Rc<NamedFile>, len: usize, bytes: Vec<u8>, call_id: CallId, limit: u64) -> Self {
        let mut view = Self {
            file,
            len,
            bytes,
            walk: Err(FrameError::Malformed(String::new())),
        };
        view.walk = view.find_frames(call_id, limit);
        view
    }

    /// Follows the frame headers from the start of the file, reading the
    /// frames into memory, until one runs to the file's end.
    fn find_frames(&mut self, call_id: CallId, limit: u64) -> Result<Walked, FrameError> {
        let mut at = 0;
        loop {
            if at == self.len {
                return Ok(Walked {
                    frames_end: at,
                    result: None,
                });
            }
            if at + HEADER_LEN > self.len {
                return Err(FrameError::Malformed(format!(
                    "truncated frame header ({} bytes)",
                    self.len - at
                )));
            }
            self.hold(at + HEADER_LEN)?;
            let head = self.bytes[at..].first_chunk().expect("held above");
            let header = Header::parse(head, Limit::Results(limit))?;
            if header.call_id != call_id {
                return Err(FrameError::Malformed(format!(
                    "a {:?} frame for call {}, in the reply to call {call_id}",
                    header.kind, header.call_id
                )));
            }
            let start = at + HEADER_LEN;
            let end = usize::try_from(header.len)
                .ok()
                .and_then(|len| start.checked_add(len))
                .filter(|&end| end <= self.len)
                .ok_or_else(|| {
                    FrameError::Malformed(format!(
                        "truncated frame: {} of {} payload bytes arrived",
                        self.len - start,
                        header.len
                    ))
                })?;
            if end == self.len && header.kind == FrameKind::Return && end > self.bytes.len() {
                let result = ResultCheck {
                    file: Rc::clone(&self.file),
                    header,
                    payload: start..end,
                    verdict: RefCell::new(None),
                };
                return Ok(Walked {
                    frames_end: at,
                    result: Some(Rc::new(result)),
                });
            }
            if end > PREFIX_MAX.max(self.bytes.len()) {
                return Err(FrameError::Malformed(format!(
                    "a {:?} frame of {} bytes ends at byte {end} of {}: only the last frame \
                     of a reply may end past its first {PREFIX_MAX} bytes",
                    header.kind, header.len, self.len
                )));
            }
            self.hold(end)?;
            at = end;
        }
    }

    /// Reads the file into `bytes` up to `end` (at most [`PREFIX_MAX`] plus
    /// a header: the walk never asks for more).
    fn hold(&mut self, end: usize) -> Result<(), FrameError> {
        let have = self.bytes.len();
        if end > have {
            self.bytes.resize(end, 0);
            self.file.read_into(&mut self.bytes[have..], have)?;
        }
        Ok(())
    }

    /// The frames held in memory and the payload of a final `Return` left
    /// in the file.
    pub(crate) fn walked(&self) -> Result<(&[u8], Option<Range<usize>>), FrameError> {
        let walked = self.walk.as_ref().map_err(Clone::clone)?;
        let result = walked.result.as_ref().map(|result| result.payload.clone());
        Ok((&self.bytes[..walked.frames_end], result))
    }

    /// The file itself.
    pub(crate) fn file(&self) -> &File {
        &self.file.file
    }

    /// Every byte read so far.
    pub(crate) fn head(&self) -> &[u8] {
        &self.bytes
    }

    /// The file's last `len` bytes (fewer if it is shorter).
    pub(crate) fn trailing(&self, len: usize) -> Vec<u8> {
        let start = self.len.saturating_sub(len);
        self.file.read(start..self.len).unwrap_or_default()
    }

    pub(crate) fn result_check(&self) -> Option<Rc<ResultCheck>> {
        self.walk.as_ref().ok()?.result.clone()
    }

    /// `range` in fresh memory of its exact size.
    pub(crate) fn read_range(&self, range: Range<usize>) -> Result<Vec<u8>, String> {
        match self.result_check() {
            Some(result) if result.holds(&range) => result.read(range),
            _ => match self.bytes.get(range.clone()) {
                Some(bytes) => Ok(bytes.to_vec()),
                None => self.file.read(range),
            },
        }
    }

    /// `range`, borrowed from the bytes already read if they hold it.
    pub(crate) fn get(&self, range: Range<usize>) -> Result<Cow<'_, [u8]>, String> {
        match self.bytes.get(range.clone()) {
            Some(bytes) => Ok(Cow::Borrowed(bytes)),
            None => self.read_range(range).map(Cow::Owned),
        }
    }
}

/// The payload of a `Return` frame left in the reply file, and its
/// checksum: checked as decoding reads it (the read is the copy the check
/// rides on), or afterwards if decoding never read it through.
#[derive(Debug)]
pub(crate) struct ResultCheck {
    file: Rc<NamedFile>,
    header: Header,
    payload: Range<usize>,
    /// Whether the payload matched its checksum, once it was read through.
    verdict: RefCell<Option<Verdict>>,
}

/// What checking a result left in the reply file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Matched,
    /// The bytes are not what the child checksummed: a protocol error.
    Mismatch(String),
    /// The file could not be read through (it shrank): no value either.
    Unreadable(String),
}

impl ResultCheck {
    /// Whether `range` lies in the payload.
    pub(crate) fn holds(&self, range: &Range<usize>) -> bool {
        self.payload.start <= range.start && range.end <= self.payload.end
    }

    /// Whether `range` runs to the payload's end: reading it reads the
    /// payload through.
    pub(crate) fn completes(&self, range: &Range<usize>) -> bool {
        self.holds(range) && range.end == self.payload.end
    }

    /// Checks the payload where it lies in `mapped` (the file, mapped),
    /// for a decoder that borrows it instead of reading it.
    ///
    /// # Errors
    ///
    /// The mismatch, in words.
    pub(crate) fn check_in_place(&self, mapped: &[u8]) -> Result<(), String> {
        let cached = self.verdict.borrow().clone();
        let verdict = match cached {
            Some(verdict) => verdict,
            None => {
                let mut hasher = self.header.checksum_start();
                hasher.update(&mapped[self.payload.clone()]);
                self.conclude(Ok(hasher))
            }
        };
        match verdict {
            Verdict::Matched => Ok(()),
            Verdict::Mismatch(message) | Verdict::Unreadable(message) => Err(message),
        }
    }

    /// Reads `range`, a part of the payload, into fresh memory; when it
    /// runs to the payload's end (a whole payload, or all but a `bin`
    /// header), checks the payload's checksum as it reads, piece by piece.
    ///
    /// # Errors
    ///
    /// The read failed, or the payload does not match its checksum.
    fn read(&self, range: Range<usize>) -> Result<Vec<u8>, String> {
        if !self.completes(&range) {
            return self.file.read(range);
        }
        let mut hasher = self.header.checksum_start();
        let mut bytes = vec![0; range.len()];
        let read = self
            .file
            .read(self.payload.start..range.start)
            .and_then(|before| {
                hasher.update(&before);
                let pieces = bytes.chunks_mut(CHECK_CHUNK);
                for (offset, piece) in (range.start..).step_by(CHECK_CHUNK).zip(pieces) {
                    self.file.read_into(piece, offset)?;
                    hasher.update(piece);
                }
                Ok(())
            });
        match self.conclude(read.map(|()| hasher)) {
            Verdict::Matched => Ok(bytes),
            Verdict::Mismatch(message) | Verdict::Unreadable(message) => Err(message),
        }
    }

    /// Records and returns the verdict on a payload read through into
    /// `hasher` (or not read through).
    fn conclude(&self, read: Result<crc32fast::Hasher, String>) -> Verdict {
        let verdict = match read {
            Ok(hasher) => match self.header.verify(hasher.finalize()) {
                Ok(()) => Verdict::Matched,
                Err(mismatch) => Verdict::Mismatch(mismatch.into_message()),
            },
            Err(message) => Verdict::Unreadable(message),
        };
        *self.verdict.borrow_mut() = Some(verdict.clone());
        verdict
    }

    /// Whether the payload matched its checksum; read through now if
    /// decoding did not.
    pub(crate) fn verdict(&self) -> Verdict {
        let cached = self.verdict.borrow().clone();
        if let Some(verdict) = cached {
            return verdict;
        }
        let mut hasher = self.header.checksum_start();
        let mut piece = vec![0; CHECK_CHUNK.min(self.payload.len())];
        let read = self
            .payload
            .clone()
            .step_by(CHECK_CHUNK)
            .try_for_each(|offset| {
                let len = CHECK_CHUNK.min(self.payload.end - offset);
                self.file.read_into(&mut piece[..len], offset)?;
                hasher.update(&piece[..len]);
                Ok::<_, String>(())
            });
        self.conclude(read.map(|()| hasher))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;
    use crate::options::isolate::Isolate;
    use crate::parent::backend::{Reply, ReplyChannel};
    use crate::parent::outcome::judge_frames;
    use crate::vocabulary::error::{CodecStage, Error};
    use crate::wire::codec::{BytesCodec, CodecTag};
    use crate::wire::{self, MAX_FRAME_LEN};

    /// A reply channel whose file holds `frames`, as a child would leave it.
    fn reply_holding(frames: &[u8]) -> (ReplyChannel, File) {
        let channel = ReplyChannel::create(&Isolate::new(), wire::next_call_id()).unwrap();
        let file = File::from(channel.child_end().try_clone_to_owned().unwrap());
        file.write_all_at(frames, 0).unwrap();
        (channel, file)
    }

    /// A `Return` frame of a `Vec<u8>` of `len` bytes (`bin 32`).
    fn bytes_frame(len: usize, call_id: CallId) -> (Vec<u8>, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut payload = vec![0xc6];
        payload.extend_from_slice(&u32::try_from(len).unwrap().to_be_bytes());
        payload.extend_from_slice(&data);
        (wire::frame(FrameKind::Return, call_id, &payload), data)
    }

    fn finish(channel: ReplyChannel) -> Reply {
        channel.finish().unwrap()
    }

    #[test]
    fn a_long_result_stays_in_the_file_until_decoded() {
        let (channel, file) = reply_holding(&[]);
        let (frame, data) = bytes_frame(1 << 20, channel.call_id());
        file.write_all_at(&frame, 0).unwrap();
        let reply = finish(channel);
        let layout = reply.layout().unwrap();
        assert_eq!(layout.unread_result, Some(HEADER_LEN..frame.len()));
        assert!(layout.frames.is_empty(), "no frames before the result");
        drop(layout);
        let codec = (&&CodecTag::<Vec<u8>>::new()).__bombsquad_codec();
        assert!(judge_frames(1, reply, codec).unwrap() == data);
    }

    #[test]
    fn a_flipped_byte_in_a_result_left_in_the_file_is_a_protocol_error() {
        for at in [
            HEADER_LEN + 2,
            HEADER_LEN + 5 + 100_000,
            (1 << 20) + HEADER_LEN,
        ] {
            let (channel, file) = reply_holding(&[]);
            let (mut frame, _) = bytes_frame(1 << 20, channel.call_id());
            frame[at] ^= 0x10;
            file.write_all_at(&frame, 0).unwrap();
            let codec = (&&CodecTag::<Vec<u8>>::new()).__bombsquad_codec();
            match judge_frames(1, finish(channel), codec) {
                Err(Error::Protocol { pid, message, .. }) => {
                    assert_eq!(pid, 1);
                    assert!(
                        message.starts_with("checksum mismatch in a Return frame of 1048581 bytes"),
                        "{message}"
                    );
                }
                other => panic!("byte {at}: expected a protocol error, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_file_shrunk_after_the_child_exited_is_a_clean_error() {
        let (channel, file) = reply_holding(&[]);
        let (frame, _) = bytes_frame(1 << 20, channel.call_id());
        file.write_all_at(&frame, 0).unwrap();
        let reply = finish(channel);
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
                        HEADER_LEN + 5 + CHECK_CHUNK
                    )
                );
            }
            other => panic!("expected a codec error, got {other:?}"),
        }
    }

    #[test]
    fn a_sparse_tail_is_found_without_reading_it() {
        let (channel, file) = reply_holding(&[]);
        let small = wire::frame(FrameKind::Return, channel.call_id(), &[0x2a]);
        file.write_all_at(&small, 0).unwrap();
        file.set_len(3 << 30).unwrap(); // 3 GiB of holes, free to make
        let reply = channel.finish().unwrap();
        assert_eq!(reply.len(), HEAD_LEN, "only the head was read");
        assert_eq!(
            reply.layout().unwrap_err(),
            FrameError::Malformed("bad frame magic [00, 00, 00, 00]".to_owned())
        );
    }

    #[test]
    fn a_file_longer_than_the_limit_is_refused_unread() {
        let isolate = Isolate::new().max_result(1 << 20);
        let channel = ReplyChannel::create(&isolate, wire::next_call_id()).unwrap();
        let file = File::from(channel.child_end().try_clone_to_owned().unwrap());
        file.set_len(MAX_FRAME_LEN).unwrap();
        assert_eq!(
            channel.finish().unwrap_err(),
            FrameError::TooLarge {
                size: MAX_FRAME_LEN,
                limit: 1 << 20
            }
        );
    }

    #[test]
    fn a_result_frame_over_the_limit_is_refused_unread() {
        let isolate = Isolate::new().max_result(100 << 10);
        let channel = ReplyChannel::create(&isolate, wire::next_call_id()).unwrap();
        let file = File::from(channel.child_end().try_clone_to_owned().unwrap());
        let (frame, _) = bytes_frame(200 << 10, channel.call_id());
        file.write_all_at(&frame, 0).unwrap();
        let reply = channel.finish().unwrap();
        assert_eq!(
            reply.layout().unwrap_err(),
            FrameError::TooLarge {
                size: (200 << 10) + 5,
                limit: 100 << 10
            }
        );
    }

    #[test]
    fn a_frame_for_another_call_is_refused() {
        let (channel, file) = reply_holding(&[]);
        let (frame, _) = bytes_frame(1 << 20, channel.call_id() + 1);
        file.write_all_at(&frame, 0).unwrap();
        let call = channel.call_id();
        assert_eq!(
            channel.finish().unwrap().layout().unwrap_err(),
            FrameError::Malformed(format!(
                "a Return frame for call {}, in the reply to call {call}",
                call + 1
            ))
        );
    }
}
