use bombsquad::bombsquad;

#[bombsquad(timeout = 5)]
fn double(x: i64) -> i64 {
    x * 2
}

fn main() {}
