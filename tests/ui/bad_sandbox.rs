use bombsquad::bombsquad;

#[bombsquad(sandbox = "strict")]
fn double(x: i64) -> i64 {
    x * 2
}

fn main() {}
