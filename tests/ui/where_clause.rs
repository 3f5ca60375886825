use bombsquad::bombsquad;

#[bombsquad]
fn double(x: i64) -> i64
where
    i64: Copy,
{
    x * 2
}

fn main() {}
