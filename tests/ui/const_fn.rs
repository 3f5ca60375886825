use bombsquad::bombsquad;

#[bombsquad]
const fn double(x: i64) -> i64 {
    x * 2
}

fn main() {}
