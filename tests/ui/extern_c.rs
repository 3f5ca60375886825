use bombsquad::bombsquad;

#[bombsquad]
extern "C" fn double(x: i64) -> i64 {
    x * 2
}

fn main() {}
