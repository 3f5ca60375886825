use bombsquad::bombsquad;

#[bombsquad(start_method = "fork")]
#[test]
fn generic_test<T: Default>(value: T) {
    let _ = value;
}

fn main() {}
