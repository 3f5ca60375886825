//! No return type and `-> ()` both give `Result<(), bombsquad::Error>`.

#![deny(warnings)]

use bombsquad::bombsquad;

#[bombsquad(start_method = "fork")]
fn nothing(_x: i64) {}

#[allow(clippy::unused_unit)]
#[bombsquad(start_method = "fork")]
fn unit(_x: i64) -> () {}

#[bombsquad]
fn spawned_nothing() {}

fn main() {
    let () = nothing(1).unwrap();
    let () = unit(1).unwrap();
    let _: fn() -> Result<(), bombsquad::Error> = spawned_nothing;
}
