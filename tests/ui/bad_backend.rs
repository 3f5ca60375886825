use bombsquad::bombsquad;

#[bombsquad(backend = "socket")]
fn double(x: i64) -> i64 {
    x * 2
}

fn main() {}
