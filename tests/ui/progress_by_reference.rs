use bombsquad::{Progress, bombsquad};

#[bombsquad(start_method = "fork")]
fn borrowed(progress: &Progress<u32>) {
    progress.send(1);
}

fn main() {}
