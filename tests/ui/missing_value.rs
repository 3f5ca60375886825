use bombsquad::bombsquad;

#[bombsquad(timeout)]
fn bare_key(x: i64) -> i64 {
    x * 2
}

#[bombsquad(timeout("2s"))]
fn call_syntax(x: i64) -> i64 {
    x * 2
}

fn main() {}
