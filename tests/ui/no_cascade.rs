use bombsquad::bombsquad;

// An error in the options: the wrapper is still emitted, with the default
// options, so it keeps its signature `fn(i64) -> Result<i64, Error>`.
#[bombsquad(backend = "socket", timeout = "2s")]
fn double(x: i64) -> i64 {
    x * 2
}

// A misspelt start method: the `&mut` argument, which only a forked child
// takes, raises nothing more.
#[bombsquad(start_method = "frok")]
fn push(items: &mut Vec<i64>, x: i64) -> usize {
    items.push(x);
    items.len()
}

// An argument only the start method rejects: one error, on the argument.
#[bombsquad]
fn clear(items: &mut Vec<i64>) {
    items.clear();
}

// Callers written against the real API compile without another error.
fn caller() -> Result<usize, bombsquad::Error> {
    let mut items = Vec::new();
    let four: i64 = double(2)?;
    clear(&mut items)?;
    push(&mut items, four)
}

fn main() {
    let _ = caller();
}
