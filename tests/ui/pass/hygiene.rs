//! Parameters named like anything the expansion uses, and a user trait with
//! a method named like the runtime's, still work.

#![deny(warnings)]

use bombsquad::bombsquad;

/// A blanket trait whose method name the expansion must not collide with.
pub trait Codec {
    fn codec(&self) -> u8 {
        0
    }
}
impl<T> Codec for T {}

#[bombsquad(start_method = "fork")]
fn forked(codec: i64, __bombsquad_args: i64, __bombsquad_options: i64, __bombsquad_codec: i64) -> i64 {
    codec + __bombsquad_args + __bombsquad_options + __bombsquad_codec
}

#[bombsquad]
fn spawned(codec: i64, __bombsquad_args: i64, __bombsquad_options: i64, __bombsquad_codec: i64) -> i64 {
    codec + __bombsquad_args + __bombsquad_options + __bombsquad_codec
}

fn main() {
    assert_eq!(forked(1, 2, 3, 4).unwrap(), 10);
    let _: fn(i64, i64, i64, i64) -> Result<i64, bombsquad::Error> = spawned;
    assert_eq!(1u8.codec(), 0);
}
