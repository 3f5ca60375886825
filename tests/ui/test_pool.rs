use bombsquad::bombsquad;

#[bombsquad(pool = 2)]
#[test]
fn pooled_test() {}

fn main() {}
