//! The wire: how every byte crosses between a parent and its children.
//! One frame format, one writer ([`header`], [`frame`], [`seal`]) and one
//! reader ([`FrameReader`], [`Frames`]) for every channel: a one-shot
//! child's reply (pipe, file, memfd), its progress pipe, a spawned child's
//! call, and a worker's socket in both directions (`PROTOCOL.md`).
//!
//! A frame is a 24-byte header, then the payload:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `BSQ\x02` (the last byte is the frame format's version) |
//! | 4 | 1 | kind ([`FrameKind`]) |
//! | 5 | 3 | reserved, zero |
//! | 8 | 4 | call id, u32 little-endian |
//! | 12 | 4 | checksum, u32 little-endian |
//! | 16 | 8 | payload length, u64 little-endian |
//!
//! The checksum is CRC-32 as zlib computes it (`crc32fast`, Python's
//! `zlib.crc32`) over the header with its checksum field zeroed, then the
//! payload. A frame whose checksum does not match is refused: flipped bits
//! or bytes scribbled onto the channel by a crashing library are an error,
//! never a value (docs/FAULTS.md E9). Every request carries a call id and every frame sent for
//! it echoes the id, so a reply left over from another call is refused too.
//!
//! This layer imports only `sys`; the call's errors are made from a
//! [`FrameError`] by those who read frames for a call (`backend`).

pub(crate) mod arena;
pub(crate) mod args;
pub(crate) mod codec;
pub(crate) mod forkserver;
pub(crate) mod marker;
mod reader;

use std::sync::atomic::{AtomicU32, Ordering};

pub(crate) use reader::{
    Frame, FrameAt, FrameReader, FrameStream, Frames, OwnedFrame, split_frames,
};

/// The frame format: `BSQ` and its version.
pub(crate) const MAGIC: [u8; 4] = *b"BSQ\x02";
/// The length of a frame header.
pub(crate) const HEADER_LEN: usize = 24;

/// The largest frame any reader accepts; lengths above it are refused
/// before anything is allocated. A parent reading a reply refuses anything
/// above its `max_result` first (see `Isolate::max_result`).
pub(crate) const MAX_FRAME_LEN: u64 = 16 << 30;

/// What a frame that carries no result (a panic report, a progress
/// message, padding) may hold, whatever the result's limit: a caller that
/// accepts tiny results still gets a panic's message and backtrace.
pub(crate) const SMALL_FRAME_LIMIT: u64 = 1 << 20;

/// How long a frame a reader accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// Every frame at most this long (a child reading what its parent sent).
    Each(u64),
    /// A reply: a result (`Return`, `ArenaReturn`) at most this long, any
    /// other frame at most this or [`SMALL_FRAME_LIMIT`], the larger.
    Results(u64),
}

impl Limit {
    /// The most a frame of `kind` may carry.
    pub(crate) fn for_kind(self, kind: FrameKind) -> u64 {
        match (self, kind) {
            (Self::Each(limit), _) => limit,
            (Self::Results(limit), FrameKind::Return | FrameKind::ArenaReturn) => limit,
            (Self::Results(limit), _) => limit.max(SMALL_FRAME_LIMIT),
        }
    }
}

/// A call's id on the wire: every request carries one, every frame sent
/// for it echoes it.
pub(crate) type CallId = u32;

/// The id of frames that belong to no call: `Hello`, `Shutdown`, and the
/// frames that set up a worker.
pub(crate) const NO_CALL: CallId = 0;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum FrameKind {
    /// Parent to child: the registered name of the function to run.
    Call = 1,
    /// Parent to child: the encoded arguments.
    Args = 2,
    /// Parent to child: the limits and stack size the child applies to
    /// itself before the call (`limits::ChildSetup`).
    Setup = 3,
    /// Worker to parent, once: the worker is ready (`PROTOCOL.md`).
    Hello = 4,
    /// Parent to worker: one call's encoded input.
    Request = 5,
    /// Parent to worker: leave after the call in flight, if any.
    Shutdown = 6,
    /// Parent to a re-executed worker: the registered name it serves.
    Worker = 7,
    /// Child to parent: the encoded result.
    Return = 16,
    /// Child to parent: a `PanicReport`.
    Panic = 17,
    /// Child to parent: a `ChildFailure`.
    Failure = 18,
    /// Child to parent, from its fault signal handler: a fixed-size record
    /// (`fault::FaultRecord`), not MessagePack, since the handler may not
    /// allocate. Always the last thing a crashing child writes.
    Fault = 19,
    /// Child to parent, during a call: one encoded progress message.
    Progress = 20,
    /// Worker to parent: the length and checksum of the encoded result's
    /// tail, which lies in the shared arena (`pool/arena.rs`), then its head.
    ArenaReturn = 21,
    /// One-shot child to parent, before a large result in a reply file or
    /// memfd: zeros that put the result's bytes at a file offset matching
    /// their address in memory (`child::padding_before`). Skipped; never
    /// sent on a worker's channel.
    Padding = 22,
}

impl FrameKind {
    pub(crate) fn from_byte(byte: u8) -> Option<Self> {
        [
            Self::Call,
            Self::Args,
            Self::Setup,
            Self::Hello,
            Self::Request,
            Self::Shutdown,
            Self::Worker,
            Self::Return,
            Self::Panic,
            Self::Failure,
            Self::Fault,
            Self::Progress,
            Self::ArenaReturn,
            Self::Padding,
        ]
        .into_iter()
        .find(|kind| *kind as u8 == byte)
    }
}

/// A fresh call id: never [`NO_CALL`], unique among the calls of this
/// process until it has made four billion of them.
pub(crate) fn next_call_id() -> CallId {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    loop {
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        if id != NO_CALL {
            return id;
        }
    }
}

/// A frame header, read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) kind: FrameKind,
    pub(crate) call_id: CallId,
    pub(crate) checksum: u32,
    pub(crate) len: u64,
    /// The header as it arrived, its checksum field zeroed: what the
    /// checksum covers (the reserved bytes included, whatever they hold).
    unsealed: [u8; HEADER_LEN],
}

impl Header {
    /// Checks magic, kind and length (within `limit`) of the header in
    /// `bytes`. The checksum is checked once the payload has arrived.
    ///
    /// # Errors
    ///
    /// [`FrameError::Malformed`] for a bad magic or kind or a length above
    /// [`MAX_FRAME_LEN`]; [`FrameError::TooLarge`] for one above its limit.
    pub(crate) fn parse(bytes: &[u8; HEADER_LEN], limit: Limit) -> Result<Self, FrameError> {
        if bytes[..4] != MAGIC {
            return Err(FrameError::Malformed(format!(
                "bad frame magic {:02x?}",
                &bytes[..4]
            )));
        }
        let kind = FrameKind::from_byte(bytes[4])
            .ok_or_else(|| FrameError::Malformed(format!("unknown frame kind {}", bytes[4])))?;
        let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let len = u64::from_le_bytes(bytes[16..].try_into().expect("8 bytes"));
        if len > MAX_FRAME_LEN {
            return Err(FrameError::Malformed(format!(
                "frame of {len} bytes exceeds the limit of {MAX_FRAME_LEN} bytes"
            )));
        }
        let limit = limit.for_kind(kind);
        if len > limit {
            return Err(FrameError::TooLarge { size: len, limit });
        }
        let mut unsealed = *bytes;
        unsealed[12..16].fill(0);
        Ok(Self {
            kind,
            call_id: word(8),
            checksum: word(12),
            len,
            unsealed,
        })
    }

    /// The header's bytes with the checksum field zeroed: where every
    /// frame's checksum starts.
    fn unsealed(kind: FrameKind, call_id: CallId, len: u64) -> [u8; HEADER_LEN] {
        let mut bytes = [0; HEADER_LEN];
        bytes[..4].copy_from_slice(&MAGIC);
        bytes[4] = kind as u8;
        bytes[8..12].copy_from_slice(&call_id.to_le_bytes());
        bytes[16..].copy_from_slice(&len.to_le_bytes());
        bytes
    }

    /// A checksum over this header, to be continued over its payload.
    pub(crate) fn checksum_start(&self) -> crc32fast::Hasher {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&self.unsealed);
        hasher
    }

    /// Checks `checksum`, the header's checksum continued over the whole
    /// payload.
    ///
    /// # Errors
    ///
    /// [`FrameError::Malformed`] naming both checksums.
    pub(crate) fn verify(&self, computed: u32) -> Result<(), FrameError> {
        if computed == self.checksum {
            return Ok(());
        }
        Err(FrameError::Malformed(format!(
            "checksum mismatch in a {:?} frame of {} bytes: it says {:08x}, its bytes give {computed:08x}",
            self.kind, self.len, self.checksum
        )))
    }
}

/// Why bytes read from a channel are not a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// Bad magic, kind or checksum, a frame for another call, a cut frame.
    Malformed(String),
    /// A frame, or a reply, larger than the reader accepts.
    TooLarge { size: u64, limit: u64 },
}

impl FrameError {
    /// The message, for channels where any refusal is a protocol error.
    pub(crate) fn into_message(self) -> String {
        match self {
            Self::Malformed(message) => message,
            Self::TooLarge { size, limit } => {
                format!("frame of {size} bytes exceeds the limit of {limit} bytes")
            }
        }
    }
}

impl From<String> for FrameError {
    fn from(message: String) -> Self {
        Self::Malformed(message)
    }
}

/// The header of a frame whose payload is `parts` joined, checksum
/// included: the one frame writer. The parts are never joined (a large
/// result is checksummed where it lies, then written from there).
pub(crate) fn header(kind: FrameKind, call_id: CallId, parts: &[&[u8]]) -> [u8; HEADER_LEN] {
    let len: usize = parts.iter().map(|part| part.len()).sum();
    let mut bytes = Header::unsealed(kind, call_id, len as u64);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes);
    for part in parts {
        hasher.update(part);
    }
    bytes[12..16].copy_from_slice(&hasher.finalize().to_le_bytes());
    bytes
}

/// A whole frame carrying `payload`.
pub(crate) fn frame(kind: FrameKind, call_id: CallId, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
    frame.extend_from_slice(&header(kind, call_id, &[payload]));
    frame.extend_from_slice(payload);
    frame
}

/// Appends a frame whose payload `encode` writes to `out`, then fills in its
/// header: a payload encoded straight into the frame, never copied.
///
/// # Errors
///
/// What `encode` returns; `out` is then left as it was.
pub(crate) fn append_frame<E>(
    out: &mut Vec<u8>,
    kind: FrameKind,
    call_id: CallId,
    encode: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> Result<(), E> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    if let Err(e) = encode(out) {
        out.truncate(start);
        return Err(e);
    }
    let header = header(kind, call_id, &[&out[start + HEADER_LEN..]]);
    out[start..start + HEADER_LEN].copy_from_slice(&header);
    Ok(())
}

/// Writes the header of a frame into the first [`HEADER_LEN`] bytes of
/// `frame`, whose payload is the rest: async-signal-safe (no allocation, no
/// lock, no CPU feature detection), for the fault handler.
pub(crate) fn seal(frame: &mut [u8], kind: FrameKind, call_id: CallId) {
    let len = (frame.len() - HEADER_LEN) as u64;
    frame[..HEADER_LEN].copy_from_slice(&Header::unsealed(kind, call_id, len));
    let checksum = crc32_plain(frame);
    frame[12..16].copy_from_slice(&checksum.to_le_bytes());
}

/// CRC-32 (zlib's) bit by bit: slow, but pure arithmetic on the stack.
fn crc32_plain(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & 0u32.wrapping_sub(crc & 1));
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_is_zlibs_crc32() {
        // zlib.crc32(b"123456789") == 0xcbf43926, the CRC-32 check value.
        assert_eq!(crc32_plain(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32fast::hash(b"123456789"), 0xcbf4_3926);
        let payload = b"\x81\xa2Ok\x2a";
        let written = frame(FrameKind::Return, 7, payload);
        let mut sealed = written.clone();
        sealed[12..16].fill(0xee);
        seal(&mut sealed, FrameKind::Return, 7);
        assert_eq!(sealed, written, "the signal-safe writer agrees");
    }

    /// The headers of PROTOCOL.md section 10's examples, byte for byte.
    #[test]
    fn a_header_is_laid_out_as_documented() {
        let hello = b"\x82\xa8protocol\x02\xa3pid\xcd\x10\x92";
        let request = b"\x82\xa2op\xa6double\xa1x\x15";
        let progress = b"\x82\xa4step\x00\xa2of\x03";
        let answer = b"\x81\xa2Ok\x2a";
        let documented: [(FrameKind, CallId, &[u8], u32); 5] = [
            (FrameKind::Hello, NO_CALL, hello, 0xac3b_30ef),
            (FrameKind::Request, 7, request, 0xa3f8_c932),
            (FrameKind::Progress, 7, progress, 0x6ed5_621a),
            (FrameKind::Return, 7, answer, 0x294a_63ae),
            (FrameKind::Shutdown, NO_CALL, b"", 0x3a0d_cb35),
        ];
        for (kind, call_id, payload, checksum) in documented {
            let bytes = header(kind, call_id, &[payload]);
            let mut expected = b"BSQ\x02".to_vec();
            expected.extend_from_slice(&[kind as u8, 0, 0, 0]);
            expected.extend_from_slice(&call_id.to_le_bytes());
            expected.extend_from_slice(&checksum.to_le_bytes());
            expected.extend_from_slice(&(payload.len() as u64).to_le_bytes());
            assert_eq!(bytes[..], expected[..], "{kind:?}");
            let parsed = Header::parse(&bytes, Limit::Each(MAX_FRAME_LEN)).unwrap();
            assert_eq!(
                (parsed.kind, parsed.call_id, parsed.checksum, parsed.len),
                (kind, call_id, checksum, payload.len() as u64)
            );
        }
    }

    #[test]
    fn headers_are_checked_before_anything_is_allocated() {
        let mut bytes = header(FrameKind::Return, 1, &[]);
        bytes[16..].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(
            Header::parse(&bytes, Limit::Each(MAX_FRAME_LEN)),
            Err(FrameError::Malformed(format!(
                "frame of {} bytes exceeds the limit of {MAX_FRAME_LEN} bytes",
                u64::MAX
            )))
        );
        bytes[16..].copy_from_slice(&1000u64.to_le_bytes());
        assert_eq!(
            Header::parse(&bytes, Limit::Each(999)),
            Err(FrameError::TooLarge {
                size: 1000,
                limit: 999
            })
        );
        bytes[3] = 1; // the previous format
        assert_eq!(
            Header::parse(&bytes, Limit::Each(MAX_FRAME_LEN)),
            Err(FrameError::Malformed(
                "bad frame magic [42, 53, 51, 01]".to_owned()
            ))
        );
        bytes[3] = 2;
        bytes[4] = 99;
        assert_eq!(
            Header::parse(&bytes, Limit::Each(MAX_FRAME_LEN)),
            Err(FrameError::Malformed("unknown frame kind 99".to_owned()))
        );
    }

    #[test]
    fn a_reply_keeps_room_for_a_panic_and_a_child_reads_exact_limits() {
        assert_eq!(Limit::Results(16).for_kind(FrameKind::Return), 16);
        assert_eq!(Limit::Results(16).for_kind(FrameKind::ArenaReturn), 16);
        assert_eq!(
            Limit::Results(16).for_kind(FrameKind::Panic),
            SMALL_FRAME_LIMIT
        );
        assert_eq!(
            Limit::Results(8 << 20).for_kind(FrameKind::Progress),
            8 << 20
        );
        assert_eq!(Limit::Each(4096).for_kind(FrameKind::Call), 4096);
        assert_eq!(Limit::Each(4096).for_kind(FrameKind::Return), 4096);
    }

    #[test]
    fn call_ids_are_never_zero() {
        let a = next_call_id();
        let b = next_call_id();
        assert_ne!(a, NO_CALL);
        assert_ne!(a, b);
    }

    #[test]
    fn an_appended_frame_is_whole_or_absent() {
        let mut out = b"before".to_vec();
        append_frame(&mut out, FrameKind::Request, 3, |out| {
            out.extend_from_slice(b"abc");
            Ok::<_, ()>(())
        })
        .unwrap();
        assert_eq!(out[6..], frame(FrameKind::Request, 3, b"abc"));
        let failed = append_frame(&mut out, FrameKind::Request, 4, |out| {
            out.extend_from_slice(b"half");
            Err("no")
        });
        assert_eq!(failed, Err("no"));
        assert_eq!(out[6..], frame(FrameKind::Request, 3, b"abc"));
    }
}
