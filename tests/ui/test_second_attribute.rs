use bombsquad::bombsquad;

#[bombsquad]
#[test]
#[::core::prelude::v1::test]
fn twice() {}

fn main() {}
