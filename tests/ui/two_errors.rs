use bombsquad::bombsquad;

#[bombsquad]
extern "C" fn double<T: Into<i64>>(x: T) -> i64 {
    x.into() * 2
}

fn main() {}
