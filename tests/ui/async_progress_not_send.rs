//! An async function's progress callback must be `Send + 'static`: the
//! call's future owns it and may move between threads. (A blocking call
//! takes this callback: `tests/progress.rs`.)

use std::cell::Cell;
use std::rc::Rc;

use bombsquad::{Progress, bombsquad};

#[bombsquad]
async fn fetch(n: u32, progress: Progress<u32>) -> u32 {
    progress.send(n);
    n
}

fn main() {
    let count = Rc::new(Cell::new(0));
    let counter = Rc::clone(&count);
    let _call = fetch(1, Progress::new(move |_| counter.set(counter.get() + 1)));
}
