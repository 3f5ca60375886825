//! Attributes on the function stay on the wrapper; lint attributes also
//! reach the body, and `pub(crate)` stays `pub(crate)`.

#![deny(warnings)]

use bombsquad::bombsquad;

mod inner {
    use bombsquad::bombsquad;

    /// Doubles a number in a child process.
    #[doc = "More documentation, as an attribute."]
    #[must_use]
    #[inline]
    #[allow(non_snake_case)]
    #[bombsquad(start_method = "fork")]
    pub(crate) fn Double(X: i64) -> i64 {
        let Twice = X * 2;
        Twice
    }

    #[bombsquad(
        start_method = "fork",
        backend = "pipe",
        timeout = "30s",
        panic = "error"
    )]
    pub(crate) fn all_options() -> u8 {
        7
    }
}

#[allow(unused_variables, clippy::all)]
#[bombsquad]
fn spawned_unused_binding(x: i64) -> i64 {
    let unused = 1;
    x
}

fn main() {
    assert_eq!(inner::Double(21).unwrap(), 42);
    assert_eq!(inner::all_options().unwrap(), 7);
    let _: fn(i64) -> Result<i64, bombsquad::Error> = spawned_unused_binding;
}
