use bombsquad::bombsquad;

mod other {
    pub use bombsquad::bombsquad as test;
}

#[bombsquad]
#[other::test]
fn third_party_test_attribute() {}

fn main() {}
