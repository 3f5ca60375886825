use bombsquad::bombsquad;

#[bombsquad(backend = "socket")]
fn double(x: i64) -> i64 {
    x * 2
}

fn main() {
    // The function is emitted unchanged next to the error: calling it as a
    // plain `fn(i64) -> i64` raises nothing more.
    let four: i64 = double(2);
    assert_eq!(four, 4);
}
