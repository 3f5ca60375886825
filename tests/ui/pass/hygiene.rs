//! Parameters named like the expansion's own locals (`codec` in the child's
//! entry, `__bombsquad_args`) still reach the body.

#![deny(warnings)]

use bombsquad::bombsquad;

#[bombsquad(start_method = "fork")]
fn forked(codec: i64, __bombsquad_args: i64) -> i64 {
    codec + __bombsquad_args
}

#[bombsquad]
fn spawned(codec: i64, __bombsquad_args: i64) -> i64 {
    codec + __bombsquad_args
}

fn main() {
    assert_eq!(forked(1, 2).unwrap(), 3);
    let _: fn(i64, i64) -> Result<i64, bombsquad::Error> = spawned;
}
