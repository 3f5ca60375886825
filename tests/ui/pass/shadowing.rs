//! Generated code names only `::bombsquad::` and `::core::` paths: a user
//! who shadows `Result`, `Option`, `Ok`, `core`, `std` or has a module named
//! `bombsquad` is unaffected.

#![deny(warnings)]
#![allow(dead_code, unused_macros)]

use ::bombsquad::bombsquad;

mod bombsquad {}
mod core {}
mod std {}

struct Result;
struct Option;
struct Ok;
struct Err;
struct Some;
struct Box;
struct Vec;
struct String;

macro_rules! concat {
    () => {};
}
macro_rules! line {
    () => {};
}
macro_rules! column {
    () => {};
}
macro_rules! module_path {
    () => {};
}

#[bombsquad(start_method = "fork", timeout = "10s")]
fn forked(x: i64) -> i64 {
    x + 1
}

#[bombsquad(backend = "pipe", timeout = "10s", panic = "error")]
fn spawned(x: i64) -> i64 {
    x + 1
}

fn main() {
    assert_eq!(forked(1).unwrap(), 2);
    let _: fn(i64) -> ::core::result::Result<i64, ::bombsquad::Error> = spawned;
}
