//! A `Progress` parameter, named by any path, in any position, with any
//! pattern, under every start method.

#![deny(warnings)]

use bombsquad::{Progress, bombsquad};

#[bombsquad]
fn spawned(first: u32, progress: bombsquad::Progress<String>, last: &str) -> u32 {
    progress.send(format!("{first} {last}"));
    first
}

#[bombsquad(start_method = "fork")]
fn forked(mut progress: Progress<u8>) {
    progress.send(1);
    progress = Progress::ignore();
    progress.send(2);
}

#[bombsquad(start_method = "forkserver")]
fn served(_: Progress<u8>) {}

fn main() {
    let (progress, messages) = Progress::channel();
    assert_eq!(spawned(7, progress, "x").unwrap(), 7);
    assert_eq!(messages.collect::<Vec<_>>(), ["7 x"]);
    let (progress, messages) = Progress::channel();
    forked(progress).unwrap();
    assert_eq!(messages.collect::<Vec<_>>(), [1]);
    served(Progress::ignore()).unwrap();
}
