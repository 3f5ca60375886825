//! `Cow<'static, str>` borrows nothing and is accepted as a return type.

#![deny(warnings)]

use std::borrow::Cow;

use bombsquad::bombsquad;

#[bombsquad(start_method = "fork")]
fn label(n: u32) -> Cow<'static, str> {
    if n == 0 {
        Cow::Borrowed("zero")
    } else {
        Cow::Owned(n.to_string())
    }
}

#[bombsquad]
fn spawned_label(n: u32) -> Cow<'static, str> {
    Cow::Owned(n.to_string())
}

fn main() {
    assert_eq!(label(0).unwrap(), "zero");
    assert_eq!(label(12).unwrap(), "12");
    let _: fn(u32) -> Result<Cow<'static, str>, bombsquad::Error> = spawned_label;
}
