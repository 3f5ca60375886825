use bombsquad::bombsquad;

#[bombsquad]
fn total(values: impl IntoIterator<Item = i64>) -> i64 {
    values.into_iter().sum()
}

fn main() {}
