use bombsquad::bombsquad;

// Every wrong option is reported at once, each on its own token; the
// right ones between them are read, and the wrapper keeps its signature.
#[bombsquad(backend = "socket", timeout = 5, frok, panic = "error", memory("1GiB"), retries = 2)]
fn double(x: i64) -> i64 {
    x * 2
}

fn main() -> Result<(), bombsquad::Error> {
    assert_eq!(double(2)?, 4);
    Ok(())
}
