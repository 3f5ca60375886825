use bombsquad::bombsquad;

#[bombsquad]
#[test]
#[should_panic(expected = "boom")]
fn returns_a_result() -> Result<(), String> {
    panic!("boom")
}

fn main() {}
