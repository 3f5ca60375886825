use bombsquad::{Progress, bombsquad};

struct Opaque;

#[bombsquad]
fn opaque(progress: Progress<Opaque>) {
    progress.send(Opaque);
}

fn main() {}
