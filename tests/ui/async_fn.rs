use bombsquad::bombsquad;

#[bombsquad(start_method = "fork")]
async fn double(x: i64) -> i64 {
    x * 2
}

#[bombsquad(pool = 2)]
async fn pooled(x: i64) -> i64 {
    x * 2
}

#[bombsquad]
#[test]
async fn async_test() {}

fn main() {}
