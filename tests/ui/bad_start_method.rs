use bombsquad::bombsquad;

#[bombsquad(start_method = "thread")]
fn double(x: i64) -> i64 {
    x * 2
}

fn main() {}
