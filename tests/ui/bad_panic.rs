use bombsquad::bombsquad;

#[bombsquad(panic = "abort")]
fn double(x: i64) -> i64 {
    x * 2
}

fn main() {}
