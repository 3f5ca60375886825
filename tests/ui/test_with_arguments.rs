use bombsquad::bombsquad;

#[bombsquad]
#[test]
fn takes_arguments(a: i32, b: i32) {
    assert_eq!(a, b);
}

fn main() {}
