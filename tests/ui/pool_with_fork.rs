use bombsquad::bombsquad;

#[bombsquad(pool = 2, start_method = "fork", backend = "pipe")]
fn double(x: i64) -> i64 {
    x * 2
}

fn main() {}
