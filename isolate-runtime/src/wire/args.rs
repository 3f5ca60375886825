//! A registered function's arguments on the wire: each travels as serde
//! writes it, except bytes (`Vec<u8>`, `&[u8]`, `&Vec<u8>`), which travel
//! as one MessagePack `bin` object, as a `Vec<u8>` result does, instead of
//! an array of small integers written and read one by one.
//!
//! The generated code wraps each argument in [`Arg`] in the parent and
//! each owned value in [`ArgIn`] in the child. The choice is made by type
//! id at run time (serde's traits cannot be specialized), so a user's own
//! types are untouched.

use serde::de::{self, Deserialize, DeserializeOwned, Deserializer, SeqAccess, Visitor};
use serde::ser::{Serialize, Serializer};

use crate::sys::{self, same_type};

/// An argument as the parent sends it.
#[derive(Debug)]
pub struct Arg<'a, T: ?Sized>(pub &'a T);

impl<T: Serialize + ?Sized> Serialize for Arg<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match bytes_of(self.0) {
            Some(bytes) => serializer.serialize_bytes(bytes),
            None => self.0.serialize(serializer),
        }
    }
}

/// The bytes of `value` when it is `Vec<u8>`, `&[u8]` or `&Vec<u8>`.
fn bytes_of<T: ?Sized>(value: &T) -> Option<&[u8]> {
    if let Some(vec) = same_type::<&T, &Vec<u8>>(value) {
        return Some(vec);
    }
    if let Some(slice) = same_type::<&T, &&[u8]>(value) {
        return Some(slice);
    }
    same_type::<&T, &&Vec<u8>>(value).map(|vec| vec.as_slice())
}

/// An argument as the child rebuilds it.
#[derive(Debug)]
pub struct ArgIn<T>(pub T);

impl<'de, T: DeserializeOwned> Deserialize<'de> for ArgIn<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if typeid::of::<T>() == typeid::of::<Vec<u8>>() {
            let bytes = deserializer.deserialize_byte_buf(FreshBytes)?;
            let value = same_type::<Vec<u8>, T>(bytes).expect("T is Vec<u8>");
            return Ok(Self(value));
        }
        T::deserialize(deserializer).map(Self)
    }
}

/// Takes a `bin` object (or an array of bytes) as a `Vec<u8>`: a large
/// one copied once, into huge pages (`sys::copy_to_fresh`).
struct FreshBytes;

impl<'de> Visitor<'de> for FreshBytes {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("bytes")
    }

    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
        Ok(sys::copy_to_fresh(bytes))
    }

    fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(bytes)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
        while let Some(byte) = seq.next_element()? {
            bytes.push(byte);
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
        rmp_serde::to_vec_named(&Arg(value)).unwrap()
    }

    #[test]
    fn bytes_travel_as_one_bin_object_in_every_form() {
        let bytes = vec![200u8; 300];
        let bin: Vec<u8> = [0xc5, 0x01, 0x2c]
            .into_iter()
            .chain(bytes.clone())
            .collect();
        assert_eq!(encode(&bytes), bin);
        assert_eq!(encode(&bytes.as_slice()), bin);
        assert_eq!(encode(&&bytes), bin);
        let back: ArgIn<Vec<u8>> = rmp_serde::from_slice(&bin).unwrap();
        assert_eq!(back.0, bytes);
    }

    #[test]
    fn other_types_travel_as_serde_writes_them() {
        assert_eq!(encode(&vec![200u16; 2]), [0x92, 0xcc, 200, 0xcc, 200]);
        assert_eq!(encode(&"text"), b"\xa4text");
        let words: ArgIn<Vec<u16>> = rmp_serde::from_slice(&[0x92, 1, 2]).unwrap();
        assert_eq!(words.0, [1, 2]);
    }

    #[test]
    fn bytes_sent_as_an_array_still_arrive() {
        // An older encoding (or a hand-written one): ByteBuf takes both.
        let back: ArgIn<Vec<u8>> = rmp_serde::from_slice(&[0x92, 7, 8]).unwrap();
        assert_eq!(back.0, [7, 8]);
    }
}
