use bombsquad::bombsquad;

#[bombsquad]
fn words(list: Vec<&str>) -> usize {
    list.len()
}

#[bombsquad]
fn twice(text: &&str) -> usize {
    text.len()
}

fn main() {}
