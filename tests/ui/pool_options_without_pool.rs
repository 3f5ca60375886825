use bombsquad::bombsquad;

#[bombsquad(max_calls = 10, retries = 2)]
fn double(x: i64) -> i64 {
    x * 2
}

fn main() {}
