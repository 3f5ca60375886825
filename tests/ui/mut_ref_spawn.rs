use bombsquad::bombsquad;

#[bombsquad]
fn push_default(values: &mut Vec<i64>) {
    values.push(0);
}

#[bombsquad(start_method = "spawn")]
fn push_explicit(values: &mut Vec<i64>) {
    values.push(0);
}

fn main() {}
