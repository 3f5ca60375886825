use bombsquad::bombsquad;

#[bombsquad]
fn evens(limit: i64) -> impl Iterator<Item = i64> {
    (0..limit).filter(|n| n % 2 == 0)
}

fn main() {}
