//! The one frame reader: [`FrameReader`] takes bytes as they arrive, in any
//! split, and hands out whole, checked frames; [`Frames`] walks a buffer
//! that is already whole.

use std::ops::Range;
use std::os::fd::BorrowedFd;

use super::{CallId, FrameError, FrameKind, HEADER_LEN, Header, Limit, MAX_FRAME_LEN};
use crate::sys;

/// Most the buffer grows ahead of the data on a frame's announced length,
/// so a child that announces 16 GiB and sends 10 bytes cannot make the
/// parent allocate (and abort on) 16 GiB.
const MAX_RESERVE_AHEAD: usize = 64 << 20;

/// A whole frame in a [`FrameReader`]'s buffer: where its header starts,
/// and its payload's range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FrameAt {
    pub(crate) kind: FrameKind,
    pub(crate) call_id: CallId,
    pub(crate) start: usize,
    pub(crate) payload: Range<usize>,
}

/// Reassembles frames from bytes that arrive in any split: each header is
/// checked as soon as it is whole (a lying length is refused before
/// anything is reserved for it), and each payload's checksum is computed
/// as its bytes arrive, while they are still in the cache.
#[derive(Debug)]
pub(crate) struct FrameReader {
    bytes: Vec<u8>,
    /// Where the next frame not yet handed out starts.
    next: usize,
    /// The frame at `next`, once its header is whole: its checksum so far.
    partial: Option<Partial>,
    /// The longest payloads accepted.
    limit: Limit,
}

#[derive(Debug)]
struct Partial {
    header: Header,
    hasher: crc32fast::Hasher,
    /// Payload bytes already in `hasher`.
    hashed: usize,
}

impl FrameReader {
    /// A reader that refuses payloads over `limit` ([`FrameError::TooLarge`]).
    pub(crate) fn new(limit: Limit) -> Self {
        Self {
            bytes: Vec::new(),
            next: 0,
            partial: None,
            limit,
        }
    }

    /// The buffer, for a read to append to.
    pub(crate) fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// Appends bytes that arrived.
    #[cfg(test)]
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    /// Every byte kept: the frames handed out since the last
    /// [`consume`](Self::consume), then what has arrived of the next one.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub(crate) fn payload(&self, frame: &FrameAt) -> &[u8] {
        &self.bytes[frame.payload.clone()]
    }

    /// Bytes that arrived after the last frame handed out.
    pub(crate) fn pending(&self) -> usize {
        self.bytes.len() - self.next
    }

    /// The length the next frame's header announced, once it is whole.
    pub(crate) fn announced(&self) -> Option<u64> {
        self.partial.as_ref().map(|partial| partial.header.len)
    }

    /// Forgets the frames handed out so far (their offsets with them).
    pub(crate) fn consume(&mut self) {
        self.bytes.drain(..self.next);
        self.next = 0;
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The next whole frame, its checksum checked; `None` until one has
    /// arrived. After an error the reader is of no further use.
    ///
    /// # Errors
    ///
    /// A bad header, a payload over the limit, or a checksum mismatch.
    pub(crate) fn next_frame(&mut self) -> Result<Option<FrameAt>, FrameError> {
        let start = self.next + HEADER_LEN;
        let partial = match &mut self.partial {
            Some(partial) => partial,
            None => {
                let Some(head) = self.bytes[self.next..].first_chunk::<HEADER_LEN>() else {
                    return Ok(None);
                };
                let header = Header::parse(head, self.limit)?;
                self.partial.insert(Partial {
                    hasher: header.checksum_start(),
                    header,
                    hashed: 0,
                })
            }
        };
        let len = usize::try_from(partial.header.len)
            .map_err(|_| FrameError::Malformed("frame length overflows usize".to_owned()))?;
        let arrived = (self.bytes.len() - start).min(len);
        partial
            .hasher
            .update(&self.bytes[start + partial.hashed..start + arrived]);
        partial.hashed = arrived;
        if arrived < len {
            self.bytes.reserve((len - arrived).min(MAX_RESERVE_AHEAD));
            return Ok(None);
        }
        let Partial { header, hasher, .. } = self.partial.take().expect("parsed above");
        header.verify(hasher.finalize())?;
        let frame = FrameAt {
            kind: header.kind,
            call_id: header.call_id,
            start: self.next,
            payload: start..start + len,
        };
        self.next = start + len;
        Ok(Some(frame))
    }
}

/// One frame read from a blocking descriptor, header and payload.
#[derive(Debug)]
pub(crate) struct OwnedFrame {
    pub(crate) kind: FrameKind,
    pub(crate) call_id: CallId,
    bytes: Vec<u8>,
}

impl OwnedFrame {
    pub(crate) fn payload(&self) -> &[u8] {
        &self.bytes[HEADER_LEN..]
    }

    pub(crate) fn into_payload(mut self) -> Vec<u8> {
        self.bytes.drain(..HEADER_LEN);
        self.bytes
    }
}

/// The most a [`FrameStream`] reads past the frame it needs: a small
/// request's frames in one `read`, whose buffer (a header and this) stays
/// small ([`sys::SMALL_READ`]).
const READ_AHEAD: usize = sys::SMALL_READ - super::HEADER_LEN;

/// Frames read one after another from a blocking descriptor every byte of
/// which is this reader's (a child's channel from its parent): each `read`
/// takes whatever has arrived, up to [`READ_AHEAD`] bytes past the frame
/// it needs, so a request of small frames (a call, its arguments, the
/// set-up) costs one `read`, not two per frame.
#[derive(Debug, Default)]
pub(crate) struct FrameStream {
    /// Bytes read past the last frame handed out.
    ahead: Vec<u8>,
}

impl FrameStream {
    /// A stream whose first `read` goes into `buffer` (emptied), which
    /// spares an allocation when `buffer` has room for [`sys::SMALL_READ`].
    pub(crate) fn with_buffer(mut buffer: Vec<u8>) -> Self {
        buffer.clear();
        Self { ahead: buffer }
    }

    /// Whether no byte was read past the frames handed out.
    pub(crate) fn is_drained(&self) -> bool {
        self.ahead.is_empty()
    }

    /// The next frame, its payload at most `limit` bytes, its checksum
    /// checked.
    ///
    /// # Errors
    ///
    /// The read failed or the channel ended, or the frame is bad.
    pub(crate) fn next(
        &mut self,
        fd: BorrowedFd<'_>,
        limit: u64,
    ) -> Result<OwnedFrame, FrameError> {
        let mut reader = FrameReader::new(Limit::Each(limit));
        *reader.buffer() = std::mem::take(&mut self.ahead);
        loop {
            if let Some(frame) = reader.next_frame()? {
                let mut bytes = reader.into_bytes();
                self.ahead = bytes.split_off(frame.payload.end);
                return Ok(OwnedFrame {
                    kind: frame.kind,
                    call_id: frame.call_id,
                    bytes,
                });
            }
            // Whole up to its header's end, or (once the header is whole)
            // its payload's.
            let whole = reader
                .announced()
                .map_or(HEADER_LEN, |len| HEADER_LEN + len as usize);
            let missing = whole - reader.bytes().len();
            sys::read_onto(fd, reader.buffer(), missing, missing + READ_AHEAD)
                .map_err(|e| FrameError::Malformed(format!("read a frame: {e}")))?;
        }
    }
}

/// A whole frame in a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Frame<'a> {
    pub(crate) kind: FrameKind,
    pub(crate) call_id: CallId,
    pub(crate) payload: &'a [u8],
}

/// The frames of a buffer that is whole, in order; an error (a bad header,
/// a checksum mismatch, a last frame cut short) ends the walk.
#[derive(Debug, Clone)]
pub(crate) struct Frames<'a> {
    rest: &'a [u8],
    /// Whether checksums are checked: not for bytes a [`FrameReader`]
    /// already checked as they arrived.
    verify: bool,
    failed: bool,
}

impl<'a> Frames<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self {
            rest: bytes,
            verify: true,
            failed: false,
        }
    }

    /// For bytes whose frames a [`FrameReader`] has checked already.
    pub(crate) fn checked(bytes: &'a [u8]) -> Self {
        Self {
            verify: false,
            ..Self::new(bytes)
        }
    }

    fn take(&mut self) -> Result<Frame<'a>, FrameError> {
        let Some(head) = self.rest.first_chunk::<HEADER_LEN>() else {
            return Err(FrameError::Malformed(format!(
                "truncated frame header ({} bytes)",
                self.rest.len()
            )));
        };
        let header = Header::parse(head, Limit::Each(MAX_FRAME_LEN))?;
        let rest = &self.rest[HEADER_LEN..];
        let payload = usize::try_from(header.len)
            .ok()
            .and_then(|len| rest.get(..len))
            .ok_or_else(|| {
                FrameError::Malformed(format!(
                    "truncated frame: {} of {} payload bytes arrived",
                    rest.len(),
                    header.len
                ))
            })?;
        if self.verify {
            let mut hasher = header.checksum_start();
            hasher.update(payload);
            header.verify(hasher.finalize())?;
        }
        self.rest = &rest[payload.len()..];
        Ok(Frame {
            kind: header.kind,
            call_id: header.call_id,
            payload,
        })
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let frame = self.take();
        self.failed = frame.is_err();
        Some(frame)
    }
}

/// Every frame of `bytes`, checked.
///
/// # Errors
///
/// The first bad frame, or a last frame cut short ("truncated").
pub(crate) fn split_frames(bytes: &[u8]) -> Result<Vec<Frame<'_>>, FrameError> {
    Frames::new(bytes).collect()
}

#[cfg(test)]
mod tests {
    use super::super::{MAX_FRAME_LEN, frame, header};
    use super::*;

    /// A frame as a test sees it.
    type Seen = (FrameKind, CallId, Vec<u8>);

    fn stream() -> (Vec<u8>, Vec<Seen>) {
        let frames = vec![
            (FrameKind::Progress, 5, b"one".to_vec()),
            (FrameKind::Panic, 5, Vec::new()),
            (FrameKind::Return, 5, (0..=255).collect()),
            (FrameKind::Hello, 0, b"x".to_vec()),
        ];
        let bytes = frames
            .iter()
            .flat_map(|(kind, id, payload)| frame(*kind, *id, payload))
            .collect();
        (bytes, frames)
    }

    /// Feeds `bytes` in pieces cut at `cuts`, taking frames as they come.
    fn read_in_pieces(bytes: &[u8], cuts: &[usize]) -> Result<Vec<Seen>, FrameError> {
        let mut reader = FrameReader::new(Limit::Each(MAX_FRAME_LEN));
        let mut got = Vec::new();
        let mut from = 0;
        for &to in cuts.iter().chain([&bytes.len()]) {
            reader.feed(&bytes[from..to]);
            from = to;
            while let Some(frame) = reader.next_frame()? {
                got.push((frame.kind, frame.call_id, reader.payload(&frame).to_vec()));
            }
        }
        assert_eq!(reader.pending(), 0);
        Ok(got)
    }

    #[test]
    fn frames_split_at_every_byte_boundary_arrive_whole() {
        let (bytes, frames) = stream();
        for cut in 0..=bytes.len() {
            assert_eq!(read_in_pieces(&bytes, &[cut]).unwrap(), frames, "cut {cut}");
        }
        let every: Vec<usize> = (1..bytes.len()).collect();
        assert_eq!(read_in_pieces(&bytes, &every).unwrap(), frames);
        let whole: Vec<_> = split_frames(&bytes)
            .unwrap()
            .into_iter()
            .map(|f| (f.kind, f.call_id, f.payload.to_vec()))
            .collect();
        assert_eq!(whole, frames);
    }

    #[test]
    fn consumed_frames_are_dropped_and_the_rest_kept() {
        let (bytes, frames) = stream();
        let mut reader = FrameReader::new(Limit::Each(MAX_FRAME_LEN));
        reader.feed(&bytes[..bytes.len() - 1]);
        let mut got = Vec::new();
        while let Some(frame) = reader.next_frame().unwrap() {
            got.push(reader.payload(&frame).to_vec());
            reader.consume();
        }
        assert_eq!(reader.announced(), Some(1));
        assert_eq!(reader.bytes().len(), reader.pending());
        reader.feed(&bytes[bytes.len() - 1..]);
        let last = reader.next_frame().unwrap().unwrap();
        assert_eq!(last.start, 0);
        assert_eq!(reader.payload(&last), b"x");
        assert_eq!(got.len() + 1, frames.len());
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let bytes = frame(FrameKind::Return, 9, b"\xcf\0\0\0\0\0\0\0\x2a");
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            let mut reader = FrameReader::new(Limit::Each(MAX_FRAME_LEN));
            reader.feed(&flipped);
            // A flipped length may wait for more bytes; they never match.
            match reader.next_frame() {
                Err(FrameError::Malformed(_)) | Ok(None) => {}
                other => panic!("bit {bit}: {other:?}"),
            }
            assert!(split_frames(&flipped).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn a_payload_byte_flipped_is_a_checksum_mismatch() {
        let mut bytes = frame(FrameKind::Return, 9, &[1, 2, 3]);
        bytes[HEADER_LEN + 1] ^= 0x40;
        let expected = crc32fast::hash(&{
            let mut zeroed = bytes.clone();
            zeroed[12..16].fill(0);
            zeroed
        });
        let stated = u32::from_le_bytes(bytes[12..16].try_into().unwrap());
        let message = format!(
            "checksum mismatch in a Return frame of 3 bytes: it says {stated:08x}, its bytes give {expected:08x}"
        );
        assert_eq!(
            split_frames(&bytes),
            Err(FrameError::Malformed(message.clone()))
        );
        let mut reader = FrameReader::new(Limit::Each(MAX_FRAME_LEN));
        reader.feed(&bytes);
        assert_eq!(reader.next_frame(), Err(FrameError::Malformed(message)));
    }

    #[test]
    fn a_lying_length_reserves_a_bounded_amount() {
        let mut bytes = header(FrameKind::Return, 1, &[]).to_vec();
        bytes[16..24].copy_from_slice(&(15u64 << 30).to_le_bytes());
        bytes.extend_from_slice(b"only ten b");
        let mut reader = FrameReader::new(Limit::Each(MAX_FRAME_LEN));
        reader.feed(&bytes);
        assert_eq!(reader.next_frame(), Ok(None));
        assert!(reader.buffer().capacity() <= bytes.len() + MAX_RESERVE_AHEAD);
        assert_eq!(reader.announced(), Some(15 << 30));
        let mut limited = FrameReader::new(Limit::Results(1 << 20));
        limited.feed(&bytes);
        assert_eq!(
            limited.next_frame(),
            Err(FrameError::TooLarge {
                size: 15 << 30,
                limit: 1 << 20
            })
        );
    }

    #[test]
    fn truncation_and_garbage_are_named() {
        let bytes = frame(FrameKind::Return, 1, b"abc");
        assert_eq!(
            split_frames(&bytes[..HEADER_LEN + 2]),
            Err(FrameError::Malformed(
                "truncated frame: 2 of 3 payload bytes arrived".to_owned()
            ))
        );
        assert_eq!(
            split_frames(&bytes[..5]),
            Err(FrameError::Malformed(
                "truncated frame header (5 bytes)".to_owned()
            ))
        );
        let garbage = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n";
        assert_eq!(
            split_frames(garbage),
            Err(FrameError::Malformed(
                "bad frame magic [47, 45, 54, 20]".to_owned()
            ))
        );
        let mut reader = FrameReader::new(Limit::Each(MAX_FRAME_LEN));
        reader.feed(garbage);
        assert!(matches!(
            reader.next_frame(),
            Err(FrameError::Malformed(m)) if m.starts_with("bad frame magic")
        ));
        // The walk stops at the first bad frame, after the good ones.
        let mut then_garbage = bytes.clone();
        then_garbage.extend_from_slice(garbage);
        let walked: Vec<_> = Frames::new(&then_garbage).collect();
        assert_eq!(walked.len(), 2);
        assert_eq!(walked[0].as_ref().unwrap().payload, b"abc");
        assert!(walked[1].is_err());
        assert_eq!(split_frames(&[]), Ok(Vec::new()));
    }

    #[test]
    fn a_stream_hands_out_frames_read_together_or_in_pieces() {
        let (read, write) = std::os::unix::net::UnixStream::pair().unwrap();
        let large = vec![9; 3 * READ_AHEAD + 5];
        let mut bytes = frame(FrameKind::Call, 4, b"name");
        bytes.extend(frame(FrameKind::Args, 4, &large));
        bytes.extend(frame(FrameKind::Setup, 0, &[]));
        bytes.extend(frame(FrameKind::Return, 4, &[7; 100]));
        let writer = std::thread::spawn(move || {
            // In pieces that split headers and payloads.
            for piece in bytes.chunks(1000) {
                sys::write_all(std::os::fd::AsFd::as_fd(&write), piece).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        });
        let fd = std::os::fd::AsFd::as_fd(&read);
        let mut stream = FrameStream::default();
        let call = stream.next(fd, 10).unwrap();
        assert_eq!(
            (call.kind, call.call_id, call.payload()),
            (FrameKind::Call, 4, &b"name"[..])
        );
        let args = stream.next(fd, 1 << 20).unwrap();
        assert_eq!((args.kind, args.payload()), (FrameKind::Args, &large[..]));
        assert_eq!(stream.next(fd, 10).unwrap().kind, FrameKind::Setup);
        assert_eq!(
            stream.next(fd, 10).unwrap_err(),
            FrameError::TooLarge {
                size: 100,
                limit: 10
            }
        );
        writer.join().unwrap();
        let (read, write) = nix::unistd::pipe().unwrap();
        let cut = frame(FrameKind::Args, 4, &[7; 100]);
        sys::write_all(std::os::fd::AsFd::as_fd(&write), &cut[..50]).unwrap();
        drop(write);
        assert_eq!(
            FrameStream::default()
                .next(std::os::fd::AsFd::as_fd(&read), 1000)
                .unwrap_err(),
            FrameError::Malformed("read a frame: unexpected end of file".to_owned())
        );
    }

    #[test]
    fn small_frames_that_arrived_together_take_one_read() {
        let (read, write) = nix::unistd::pipe().unwrap();
        let mut bytes = frame(FrameKind::Call, 4, b"name");
        bytes.extend(frame(FrameKind::Setup, 0, &[]));
        sys::write_all(std::os::fd::AsFd::as_fd(&write), &bytes).unwrap();
        let mut stream = FrameStream::default();
        let fd = std::os::fd::AsFd::as_fd(&read);
        assert_eq!(stream.next(fd, 10).unwrap().kind, FrameKind::Call);
        // Nothing is left in the pipe: the first read took both frames.
        assert_eq!(sys::bytes_waiting(fd).unwrap(), 0);
        assert_eq!(stream.next(fd, 10).unwrap().kind, FrameKind::Setup);
        drop(write);
    }

    /// A fork server's child reads its request into the buffer the server
    /// made: no allocation for the first read.
    #[test]
    fn a_stream_given_a_buffer_reads_its_first_frame_into_it() {
        let (read, write) = nix::unistd::pipe().unwrap();
        let mut bytes = frame(FrameKind::Call, 4, b"name");
        bytes.extend(frame(FrameKind::Setup, 0, &[]));
        sys::write_all(std::os::fd::AsFd::as_fd(&write), &bytes).unwrap();
        let mut buffer = Vec::with_capacity(sys::SMALL_READ);
        buffer.extend_from_slice(b"stale");
        let given = buffer.as_ptr();
        let mut stream = FrameStream::with_buffer(buffer);
        let fd = std::os::fd::AsFd::as_fd(&read);
        let call = stream.next(fd, 10).unwrap();
        assert_eq!((call.kind, call.payload()), (FrameKind::Call, &b"name"[..]));
        assert_eq!(call.bytes.as_ptr(), given, "read into the given buffer");
        assert_eq!(stream.next(fd, 10).unwrap().kind, FrameKind::Setup);
        drop(write);
    }

    #[test]
    fn checked_bytes_are_not_checked_twice() {
        let mut bytes = frame(FrameKind::Return, 1, b"abc");
        bytes[13] ^= 1; // only the stated checksum is wrong
        assert!(split_frames(&bytes).is_err());
        let trusted: Vec<_> = Frames::checked(&bytes).collect();
        assert_eq!(trusted[0].as_ref().unwrap().payload, b"abc");
    }
}
