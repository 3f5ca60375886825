use bombsquad::bombsquad;

#[bombsquad(retries = "3")]
fn double(x: i64) -> i64 {
    x * 2
}

fn main() {}
