use bombsquad::bombsquad;

#[bombsquad]
fn length<'a>(text: &'a str) -> usize {
    text.len()
}

fn main() {}
