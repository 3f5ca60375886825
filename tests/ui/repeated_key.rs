use bombsquad::bombsquad;

#[bombsquad(backend = "file", backend = "pipe")]
fn double(x: i64) -> i64 {
    x * 2
}

fn main() {}
