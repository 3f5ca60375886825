use bombsquad::bombsquad;

#[bombsquad]
#[test]
unsafe fn unsafe_test() {}

fn main() {}
