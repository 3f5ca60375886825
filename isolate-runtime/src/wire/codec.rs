//! The MessagePack encoding of values (the frames they travel in are
//! `wire`'s).
//!
//! Values are MessagePack from `rmp_serde::to_vec_named` (`to_vec` would
//! break `skip_serializing_if`); a `Vec<u8>` travels as one `bin` object, not
//! byte by byte.

use std::borrow::Cow;
use std::marker::PhantomData;
use std::ops::Range;

use serde::Serialize;
use serde::de::DeserializeOwned;

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

/// A reply's bytes, wherever they lie (read into memory, mapped, in a
/// file): what a codec decodes a payload from.
pub(crate) trait ReplyBytes {
    /// The bytes in `range`, borrowed where they lie in memory.
    ///
    /// # Errors
    ///
    /// They could not be read (a file that shrank).
    fn get(&self, range: Range<usize>) -> Result<Cow<'_, [u8]>, String>;

    /// The bytes in `range` as a buffer of their own, taken without a copy
    /// where the reply was read into memory. The reply is spent after it.
    ///
    /// # Errors
    ///
    /// They could not be read (a file that shrank).
    fn take_range(&mut self, range: Range<usize>) -> Result<Vec<u8>, String>;
}

/// A reply read whole into memory.
impl ReplyBytes for Vec<u8> {
    fn get(&self, range: Range<usize>) -> Result<Cow<'_, [u8]>, String> {
        <[u8]>::get(self, range.clone())
            .map(Cow::Borrowed)
            .ok_or_else(|| format!("bytes {range:?} lie beyond the reply's {}", self.len()))
    }

    fn take_range(&mut self, range: Range<usize>) -> Result<Vec<u8>, String> {
        if range.end > self.len() {
            return Err(format!(
                "bytes {range:?} lie beyond the reply's {}",
                self.len()
            ));
        }
        let mut bytes = std::mem::take(self);
        let len = range.len();
        bytes.copy_within(range, 0);
        bytes.truncate(len);
        bytes.shrink_to_fit();
        Ok(bytes)
    }
}

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
    pub(crate) decode: fn(&mut dyn ReplyBytes, Range<usize>) -> Result<T, String>,
    /// Decodes a value whose encoding is `head` then `tail` (a worker's
    /// large result: the head from its socket, the tail in the arena),
    /// checking `tail` against its CRC-32 as it is copied or read.
    pub(crate) decode_parts: DecodeParts<T>,
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
        (self.decode)(&mut { bytes }, range)
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
        crate::sys::same_type::<Codec<Vec<u8>>, Self>(bytes_codec()).unwrap_or_else(Self::serde)
    }
}

fn encode_serde<T: Serialize>(value: &T) -> Result<Encoded<'_>, String> {
    let mut head = Head::new();
    rmp_serde::encode::write_named(&mut head, value).map_err(|e| e.to_string())?;
    Ok(Encoded { head, tail: &[] })
}

#[allow(clippy::needless_pass_by_value)] // the signature is the codec's
fn decode_serde<T: DeserializeOwned>(
    reply: &mut dyn ReplyBytes,
    payload: Range<usize>,
) -> Result<T, String> {
    from_msgpack(&reply.get(payload)?)
}

/// Decodes a value sent as a head, then a tail with its CRC-32.
pub(crate) type DecodeParts<T> = fn(&[u8], &[u8], u32) -> Result<T, PartsError>;

/// Why a value sent in two parts did not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PartsError {
    /// The tail does not match its checksum: a protocol error, not the
    /// type's.
    Corrupt(String),
    /// The bytes are whole but are not a value of the type.
    Invalid(String),
}

/// `computed`, the CRC-32 of a tail's bytes alone, against `checksum`.
fn tail_verdict(computed: u32, checksum: u32) -> Result<(), PartsError> {
    if computed == checksum {
        return Ok(());
    }
    Err(PartsError::Corrupt(format!(
        "checksum mismatch in the result's bytes in the arena: it says {checksum:08x}, \
         its bytes give {computed:08x}"
    )))
}

fn decode_serde_parts<T: DeserializeOwned>(
    head: &[u8],
    tail: &[u8],
    checksum: u32,
) -> Result<T, PartsError> {
    let mut whole = Vec::with_capacity(head.len() + tail.len());
    whole.extend_from_slice(head);
    whole.extend_from_slice(tail);
    tail_verdict(crc32fast::hash(&whole[head.len()..]), checksum)?;
    from_msgpack(&whole).map_err(PartsError::Invalid)
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
fn decode_bytes(reply: &mut dyn ReplyBytes, payload: Range<usize>) -> Result<Vec<u8>, String> {
    let header = payload.start..payload.end.min(payload.start + MAX_BIN_HEADER);
    let bin = parse_bin_header(&reply.get(header)?);
    match bin {
        Some((head, len)) if head + len == payload.len() => {
            reply.take_range(payload.start + head..payload.end)
        }
        _ => {
            decode_serde::<serde_bytes::ByteBuf>(reply, payload).map(serde_bytes::ByteBuf::into_vec)
        }
    }
}

/// A `bin` header in `head` and its bytes in `tail` (in a worker's arena):
/// one copy into memory advised for huge pages (`arena::copy_out`), then
/// the checksum over the copy (what is handed out is what was checked),
/// and no parsing.
fn decode_bytes_parts(head: &[u8], tail: &[u8], checksum: u32) -> Result<Vec<u8>, PartsError> {
    match parse_bin_header(head) {
        Some((len, data)) if len == head.len() && data == tail.len() => {
            let copy = crate::wire::arena::copy_out(tail);
            tail_verdict(crc32fast::hash(&copy), checksum)?;
            Ok(copy)
        }
        _ => decode_serde_parts::<serde_bytes::ByteBuf>(head, tail, checksum)
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
        assert_eq!((codec.decode)(&mut reply, range).unwrap(), vec![3u8; 300]);
    }

    #[test]
    fn a_bin_header_that_lies_is_a_decode_error() {
        let codec = (&&CodecTag::<Vec<u8>>::new()).__bombsquad_codec();
        let mut lying = vec![0xc6, 0, 0, 1, 0];
        lying.extend_from_slice(&[1; 10]);
        assert!(codec.decode(lying).is_err());
    }

    #[test]
    fn a_tail_that_does_not_match_its_checksum_is_corrupt_not_invalid() {
        let codec = (&&CodecTag::<Vec<u8>>::new()).__bombsquad_codec();
        let tail = vec![5u8; (3 << 20) + 7];
        let head = bin_header(tail.len()).unwrap();
        let checksum = crc32fast::hash(&tail);
        assert!((codec.decode_parts)(&head, &tail, checksum).unwrap() == tail);
        let mut flipped = tail.clone();
        flipped[(2 << 20) + 1] ^= 4;
        let corrupt = |result| matches!(result, Err(PartsError::Corrupt(m)) if m.starts_with("checksum mismatch"));
        assert!(corrupt((codec.decode_parts)(&head, &flipped, checksum)));
        let serde = Codec::<Vec<u32>>::serde();
        let words = to_msgpack(&vec![7u32; 100]).unwrap();
        let (head, tail) = words.split_at(3);
        assert_eq!(
            (serde.decode_parts)(head, tail, crc32fast::hash(tail)).unwrap(),
            vec![7; 100]
        );
        assert!(matches!(
            (serde.decode_parts)(head, tail, 0),
            Err(PartsError::Corrupt(_))
        ));
        assert!(matches!(
            (serde.decode_parts)(&[0x93], &[1], crc32fast::hash(&[1])),
            Err(PartsError::Invalid(_))
        ));
    }
}
