use bombsquad::bombsquad;

#[bombsquad(fork)]
fn forked(x: i64) -> i64 {
    x * 2
}

#[bombsquad(pipe)]
fn piped(x: i64) -> i64 {
    x * 2
}

fn main() {}
