use bombsquad::bombsquad;

#[bombsquad]
fn crash() -> ! {
    std::process::abort()
}

fn main() {}
