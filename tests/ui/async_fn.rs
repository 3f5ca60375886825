use bombsquad::bombsquad;

#[bombsquad]
async fn double(x: i64) -> i64 {
    x * 2
}

fn main() {}
