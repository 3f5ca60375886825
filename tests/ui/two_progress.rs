use bombsquad::{Progress, bombsquad};

#[bombsquad]
fn twice(steps: Progress<u32>, lines: Progress<String>) {
    steps.send(1);
    lines.send("one".to_owned());
}

fn main() {}
