//! Frames on the wire and the MessagePack encoding of values.
//!
//! A frame is a 16-byte header (magic, kind, length) followed by the payload.
//! Values are MessagePack from `rmp_serde::to_vec_named` (`to_vec` would
//! break `skip_serializing_if`); a `Vec<u8>` travels as one `bin` object, not
//! byte by byte.

use std::marker::PhantomData;
use std::ops::Range;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::Reply;

const MAGIC: [u8; 4] = *b"BSQ\x01";
pub(crate) const HEADER_LEN: usize = 16;

/// The largest frame the parent accepts. Lengths above it are rejected before
/// anything is allocated, so a lying child cannot exhaust the parent.
pub(crate) const MAX_FRAME_LEN: u64 = 16 << 30;

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
    /// Worker to parent: the encoded result's head; the rest of it lies in
    /// the shared arena (`pool/arena.rs`).
    ArenaReturn = 21,
    /// One-shot child to parent, before a large result in a reply file or
    /// memfd: zeros that put the result's bytes at a file offset matching
    /// their address in memory (`child::padding_before`). Skipped; never
    /// sent on a worker's channel.
    Padding = 22,
}

impl FrameKind {
    fn from_byte(byte: u8) -> Option<Self> {
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

/// The header that precedes a payload of `len` bytes.
pub(crate) fn header(kind: FrameKind, len: usize) -> [u8; HEADER_LEN] {
    let mut header = [0; HEADER_LEN];
    header[..4].copy_from_slice(&MAGIC);
    header[4] = kind as u8;
    header[8..].copy_from_slice(&(len as u64).to_le_bytes());
    header
}

/// A header read back: its kind and payload length.
pub(crate) fn parse_header(bytes: &[u8; HEADER_LEN]) -> Result<(FrameKind, u64), String> {
    if bytes[..4] != MAGIC {
        return Err(format!("bad frame magic {:02x?}", &bytes[..4]));
    }
    let kind =
        FrameKind::from_byte(bytes[4]).ok_or_else(|| format!("unknown frame kind {}", bytes[4]))?;
    let len = u64::from_le_bytes(bytes[8..].try_into().expect("8 bytes"));
    if len > MAX_FRAME_LEN {
        return Err(format!(
            "frame of {len} bytes exceeds the limit of {MAX_FRAME_LEN} bytes"
        ));
    }
    Ok((kind, len))
}

/// Splits a buffer of frames into `(kind, payload)` pairs.
///
/// # Errors
///
/// A bad header, or a last frame cut short ("truncated").
pub(crate) fn split_frames(mut bytes: &[u8]) -> Result<Vec<(FrameKind, &[u8])>, String> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let (kind, len) = frame_at(bytes)?;
        let rest = &bytes[HEADER_LEN..];
        if rest.len() < len {
            return Err(format!(
                "truncated frame: {} of {len} payload bytes arrived",
                rest.len()
            ));
        }
        frames.push((kind, &rest[..len]));
        bytes = &rest[len..];
    }
    Ok(frames)
}

/// The kind and payload length of the frame whose header starts `bytes`.
fn frame_at(bytes: &[u8]) -> Result<(FrameKind, usize), String> {
    let Some(head) = bytes.first_chunk::<HEADER_LEN>() else {
        return Err(format!("truncated frame header ({} bytes)", bytes.len()));
    };
    let (kind, len) = parse_header(head)?;
    let len = usize::try_from(len).map_err(|_| "frame length overflows usize".to_owned())?;
    Ok((kind, len))
}

/// Where the frames of a reply of `len` bytes lie, when its last frame is a
/// `Return` found by walking the frames in `head`, the reply's first bytes:
/// the frames before it end at `.0`, its payload is `.1`. `None` for any
/// other shape (a frame that is not whole or runs past the end included):
/// such a reply is read whole and split as usual, which names what is
/// wrong with it.
pub(crate) fn final_return(head: &[u8], len: usize) -> Option<(usize, Range<usize>)> {
    let mut at = 0;
    loop {
        let (kind, payload_len) = frame_at(head.get(at..)?).ok()?;
        let start = at + HEADER_LEN;
        let end = start.checked_add(payload_len)?;
        if end == len && kind == FrameKind::Return {
            return Some((at, start..end));
        }
        if end >= len {
            return None;
        }
        at = end;
    }
}

/// Encodes any serde value as MessagePack with field names.
pub(crate) fn to_msgpack<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, String> {
    rmp_serde::to_vec_named(value).map_err(|e| e.to_string())
}

/// Decodes a MessagePack value.
pub(crate) fn from_msgpack<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    rmp_serde::from_slice(bytes).map_err(|e| e.to_string())
}

/// An encoded value: `head`, then `tail` borrowed from the value itself
/// (the bytes of a `Vec<u8>`), so a large result is written as it lies,
/// never copied into an encode buffer first.
#[derive(Debug)]
pub(crate) struct Encoded<'a> {
    pub(crate) head: Head,
    pub(crate) tail: &'a [u8],
}

/// An encoding's head: on the stack up to 256 bytes, so a forked child
/// with a small result touches no heap page (each one it writes is a
/// copy-on-write fault, ~4 µs).
pub(crate) type Head = smallvec::SmallVec<[u8; 256]>;

/// How one type is encoded and decoded: chosen at the call site, where the
/// type is concrete, so `Vec<u8>` can take the `bin` path without the user
/// annotating anything.
///
/// Decoding takes the whole reply and the payload's range in it, so a
/// `Vec<u8>` result can be made from the reply buffer itself (no second
/// buffer: a 1 GiB result peaks at 1 GiB, not 2).
#[derive(Debug)]
pub struct Codec<T> {
    pub(crate) encode: for<'a> fn(&'a T) -> Result<Encoded<'a>, String>,
    pub(crate) decode: fn(Reply, Range<usize>) -> Result<T, String>,
    /// Decodes a value whose encoding is `head` then `tail` (a worker's
    /// large result: the head from its socket, the tail in the arena).
    pub(crate) decode_parts: fn(&[u8], &[u8]) -> Result<T, String>,
}

impl<T> Clone for Codec<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Codec<T> {}

impl<T> Codec<T> {
    /// Encodes `value` as the child does. For the benches.
    ///
    /// # Errors
    ///
    /// What the type's `Serialize` reports.
    #[doc(hidden)]
    pub fn encode(&self, value: &T) -> Result<Vec<u8>, String> {
        let encoded = (self.encode)(value)?;
        let mut bytes = encoded.head.into_vec();
        bytes.extend_from_slice(encoded.tail);
        Ok(bytes)
    }

    /// Decodes `bytes` as the parent decodes a reply it read. For the
    /// benches.
    ///
    /// # Errors
    ///
    /// Malformed bytes, or what the type's `Deserialize` reports.
    #[doc(hidden)]
    pub fn decode(&self, bytes: Vec<u8>) -> Result<T, String> {
        let range = 0..bytes.len();
        (self.decode)(Reply::Read(bytes), range)
    }
}

impl<T: Serialize + DeserializeOwned> Codec<T> {
    /// The general serde path.
    #[must_use]
    pub fn serde() -> Self {
        Self {
            encode: encode_serde::<T>,
            decode: decode_serde::<T>,
            decode_parts: decode_serde_parts::<T>,
        }
    }

    /// What a generic caller (the closure form) gets, where the macro's
    /// autoref selection cannot run: the `bin` codec when `T` is `Vec<u8>`,
    /// serde otherwise. `typeid` compares types that need not be `'static`.
    pub(crate) fn for_type() -> Self {
        if typeid::of::<T>() != typeid::of::<Vec<u8>>() {
            return Self::serde();
        }
        let bytes = bytes_codec();
        // SAFETY: `T` is `Vec<u8>` (equal type ids, and `Vec<u8>` has no
        // lifetime for the id to have erased), so both are the same type;
        // `Codec` is `Copy`, so nothing is dropped twice.
        unsafe { std::mem::transmute_copy::<Codec<Vec<u8>>, Self>(&bytes) }
    }
}

fn encode_serde<T: Serialize>(value: &T) -> Result<Encoded<'_>, String> {
    let mut head = Head::new();
    rmp_serde::encode::write_named(&mut head, value).map_err(|e| e.to_string())?;
    Ok(Encoded { head, tail: &[] })
}

#[allow(clippy::needless_pass_by_value)] // the signature is the codec's
fn decode_serde<T: DeserializeOwned>(reply: Reply, payload: Range<usize>) -> Result<T, String> {
    from_msgpack(&reply.get(payload)?)
}

fn decode_serde_parts<T: DeserializeOwned>(head: &[u8], tail: &[u8]) -> Result<T, String> {
    let mut whole = Vec::with_capacity(head.len() + tail.len());
    whole.extend_from_slice(head);
    whole.extend_from_slice(tail);
    from_msgpack(&whole)
}

/// A MessagePack `bin` header for `len` bytes (what `rmp_serde` writes for
/// `serde_bytes`).
fn bin_header(len: usize) -> Result<Head, String> {
    let mut head = Head::new();
    match len {
        0..=0xff => head.extend_from_slice(&[0xc4, len as u8]),
        0x100..=0xffff => {
            head.push(0xc5);
            head.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            let len = u32::try_from(len).map_err(|_| {
                format!("a Vec<u8> of {len} bytes is longer than MessagePack allows (4 GiB)")
            })?;
            head.push(0xc6);
            head.extend_from_slice(&len.to_be_bytes());
        }
    }
    Ok(head)
}

/// The longest `bin` header (`bin 32`).
const MAX_BIN_HEADER: usize = 5;

/// `(header length, data length)` of a `bin` object at the start of
/// `bytes`, if it is one.
fn parse_bin_header(bytes: &[u8]) -> Option<(usize, usize)> {
    match *bytes {
        [0xc4, len, ..] => Some((2, usize::from(len))),
        [0xc5, a, b, ..] => Some((3, usize::from(u16::from_be_bytes([a, b])))),
        [0xc6, a, b, c, d, ..] => Some((5, u32::from_be_bytes([a, b, c, d]) as usize)),
        _ => None,
    }
}

#[allow(clippy::ptr_arg)] // the signature must be `fn(&T)` with `T = Vec<u8>`
fn encode_bytes(bytes: &Vec<u8>) -> Result<Encoded<'_>, String> {
    Ok(Encoded {
        head: bin_header(bytes.len())?,
        tail: bytes,
    })
}

/// A `bin` payload becomes the result without a second buffer (see
/// [`Reply::into_range`]); anything else goes through serde, which reports
/// what is wrong with it.
fn decode_bytes(reply: Reply, payload: Range<usize>) -> Result<Vec<u8>, String> {
    let header = payload.start..payload.end.min(payload.start + MAX_BIN_HEADER);
    let bin = parse_bin_header(&reply.get(header)?);
    match bin {
        Some((head, len)) if head + len == payload.len() => {
            reply.into_range(payload.start + head..payload.end)
        }
        _ => {
            decode_serde::<serde_bytes::ByteBuf>(reply, payload).map(serde_bytes::ByteBuf::into_vec)
        }
    }
}

/// A `bin` header in `head` and its bytes in `tail` (in a worker's arena):
/// one copy into memory advised for huge pages (`arena::copy_out`), no
/// parsing.
fn decode_bytes_parts(head: &[u8], tail: &[u8]) -> Result<Vec<u8>, String> {
    match parse_bin_header(head) {
        Some((len, data)) if len == head.len() && data == tail.len() => {
            Ok(crate::pool::arena::copy_out(tail))
        }
        _ => decode_serde_parts::<serde_bytes::ByteBuf>(head, tail)
            .map(serde_bytes::ByteBuf::into_vec),
    }
}

/// Selects a [`Codec`] by autoref specialization:
/// `(&&CodecTag::<T>::new()).__bombsquad_codec()` (a name no user trait takes)
/// finds [`BytesCodec`] for `Vec<u8>` and [`SerdeCodec`] for everything else.
#[derive(Debug)]
pub struct CodecTag<T>(PhantomData<T>);

impl<T> CodecTag<T> {
    #[must_use]
    pub const fn new() -> Self {
        Self(PhantomData)
    }
}

impl<T> Default for CodecTag<T> {
    fn default() -> Self {
        Self::new()
    }
}

fn bytes_codec() -> Codec<Vec<u8>> {
    Codec {
        encode: encode_bytes,
        decode: decode_bytes,
        decode_parts: decode_bytes_parts,
    }
}

/// The `bin` codec, chosen for `Vec<u8>`.
pub trait BytesCodec {
    fn __bombsquad_codec(&self) -> Codec<Vec<u8>> {
        bytes_codec()
    }
}
impl BytesCodec for &CodecTag<Vec<u8>> {}

/// The serde codec, chosen for every other type.
pub trait SerdeCodec<T> {
    fn __bombsquad_codec(&self) -> Codec<T>;
}
impl<T: Serialize + DeserializeOwned> SerdeCodec<T> for CodecTag<T> {
    fn __bombsquad_codec(&self) -> Codec<T> {
        Codec::serde()
    }
}

/// The owned type a spawned child rebuilds for a `&T` argument: `String`
/// for `&str`, `Vec<T>` for `&[T]`, `PathBuf` for `&Path`, `T` for `&T`.
pub trait OwnedArg {
    type Owned: DeserializeOwned;
}
impl<T: DeserializeOwned> OwnedArg for T {
    type Owned = T;
}
impl OwnedArg for str {
    type Owned = String;
}
impl<T: DeserializeOwned> OwnedArg for [T] {
    type Owned = Vec<T>;
}
impl OwnedArg for std::path::Path {
    type Owned = std::path::PathBuf;
}
impl OwnedArg for std::ffi::OsStr {
    type Owned = std::ffi::OsString;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The closure form's codec sends a `Vec<u8>` as one `bin` object and
    /// every other type through serde, as the macro's selection does.
    #[test]
    fn generic_callers_get_bin_for_bytes_only() {
        let bytes = vec![200u8; 300];
        let encoded = Codec::<Vec<u8>>::for_type().encode(&bytes).unwrap();
        assert_eq!(encoded[..3], [0xc5, 0x01, 0x2c]);
        assert_eq!(encoded.len(), 3 + 300);
        let back = Codec::<Vec<u8>>::for_type().decode(encoded).unwrap();
        assert!(back == bytes);
        // A Vec of another element type stays an array, element by element.
        let words = Codec::<Vec<u16>>::for_type()
            .encode(&vec![200u16; 3])
            .unwrap();
        assert_eq!(words, [0x93, 0xcc, 200, 0xcc, 200, 0xcc, 200]);
        let borrowed: std::borrow::Cow<'_, str> = "text".into();
        let text = Codec::<std::borrow::Cow<'_, str>>::for_type()
            .encode(&borrowed)
            .unwrap();
        assert_eq!(text, b"\xa4text");
    }

    #[test]
    fn frames_round_trip_and_truncation_is_reported() {
        let mut buf = header(FrameKind::Return, 3).to_vec();
        buf.extend_from_slice(b"abc");
        buf.extend_from_slice(&header(FrameKind::Panic, 0));
        let frames = split_frames(&buf).unwrap();
        assert_eq!(
            frames,
            vec![
                (FrameKind::Return, &b"abc"[..]),
                (FrameKind::Panic, &b""[..])
            ]
        );
        assert_eq!(
            split_frames(&buf[..18]).unwrap_err(),
            "truncated frame: 2 of 3 payload bytes arrived"
        );
    }

    #[test]
    fn lying_length_is_rejected_before_allocating() {
        let mut head = header(FrameKind::Return, 0);
        head[8..].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(
            parse_header(&head)
                .unwrap_err()
                .contains("exceeds the limit")
        );
    }

    #[test]
    fn bytes_take_the_bin_path() {
        let codec = (&&CodecTag::<Vec<u8>>::new()).__bombsquad_codec();
        for len in [0, 1, 255, 256, 1000, 65_535, 65_536, 1 << 20] {
            let value: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let encoded = codec.encode(&value).unwrap();
            let head = match len {
                0..=255 => 2,
                256..=65_535 => 3,
                _ => 5,
            };
            assert_eq!(encoded.len(), len + head, "bin header, one byte per byte");
            assert_eq!(
                encoded,
                rmp_serde::to_vec_named(serde_bytes::Bytes::new(&value)).unwrap(),
                "the same bytes as rmp_serde"
            );
            assert_eq!(codec.decode(encoded).unwrap(), value);
        }
    }

    #[test]
    fn a_bin_payload_in_the_middle_of_a_reply_is_cut_out() {
        let codec = (&&CodecTag::<Vec<u8>>::new()).__bombsquad_codec();
        let mut reply = vec![9u8; 21];
        reply.extend_from_slice(&codec.encode(&vec![3u8; 300]).unwrap());
        reply.extend_from_slice(&[9; 5]);
        let range = 21..reply.len() - 5;
        assert_eq!(
            (codec.decode)(Reply::Read(reply), range).unwrap(),
            vec![3u8; 300]
        );
    }

    #[test]
    fn a_bin_header_that_lies_is_a_decode_error() {
        let codec = (&&CodecTag::<Vec<u8>>::new()).__bombsquad_codec();
        let mut lying = vec![0xc6, 0, 0, 1, 0];
        lying.extend_from_slice(&[1; 10]);
        assert!(codec.decode(lying).is_err());
    }

    fn frame(kind: FrameKind, payload: &[u8]) -> Vec<u8> {
        let mut frame = header(kind, payload.len()).to_vec();
        frame.extend_from_slice(payload);
        frame
    }

    #[test]
    fn a_final_return_is_found_behind_whole_frames_only() {
        let result = frame(FrameKind::Return, b"abc");
        let len = result.len();
        assert_eq!(final_return(&result, len), Some((0, 16..19)));
        assert_eq!(final_return(&result[..16], len), Some((0, 16..19)));

        let mut after_panic = frame(FrameKind::Panic, b"xy");
        after_panic.extend_from_slice(&result);
        let len = after_panic.len();
        assert_eq!(final_return(&after_panic, len), Some((18, 34..37)));
        // The result's header lies past the bytes read: not found.
        assert_eq!(final_return(&after_panic[..20], len), None);

        let mut then_fault = result.clone();
        then_fault.extend_from_slice(&frame(FrameKind::Fault, b""));
        assert_eq!(final_return(&then_fault, then_fault.len()), None);
        let panic_only = frame(FrameKind::Panic, b"xy");
        assert_eq!(final_return(&panic_only, panic_only.len()), None);
        // The file is shorter than the frame claims, or longer.
        assert_eq!(final_return(&result, result.len() - 1), None);
        assert_eq!(final_return(&result, result.len() + 1), None);
        assert_eq!(final_return(b"not a frame, just junk", 22), None);
        assert_eq!(final_return(&[], 0), None);
    }
}
