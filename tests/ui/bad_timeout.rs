use bombsquad::bombsquad;

#[bombsquad(timeout = "fast")]
fn not_a_duration(x: i64) -> i64 {
    x * 2
}

#[bombsquad(timeout = "0s")]
fn zero(x: i64) -> i64 {
    x * 2
}

#[bombsquad(timeout = "2")]
fn no_unit(x: i64) -> i64 {
    x * 2
}

#[bombsquad(timeout = "1.5s")]
fn fractional(x: i64) -> i64 {
    x * 2
}

fn main() {}
