#[bombsquad::child_init]
fn with_argument(level: u8) {
    let _ = level;
}

#[bombsquad::child_init]
fn with_result() -> bool {
    true
}

#[bombsquad::child_init(timeout = "1s")]
fn with_option() {}

#[bombsquad::child_init]
unsafe fn unsafe_init() {}

#[bombsquad::child_init]
static NOT_A_FUNCTION: u8 = 0;

fn main() {}
