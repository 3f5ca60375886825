use bombsquad::bombsquad;

#[bombsquad(pool = 0)]
fn double(x: i64) -> i64 {
    x * 2
}

#[bombsquad(pool = "4")]
fn triple(x: i64) -> i64 {
    x * 3
}

fn main() {}
