//! `crate = "renamed"`, for a dependency renamed in Cargo.toml: generated
//! code names the crate by that path only. Here `::bombsquad` is this crate
//! itself, so any `::bombsquad::..` path the expansion leaked would fail
//! to resolve.

#![deny(warnings)]

extern crate bombsquad as renamed;
extern crate self as bombsquad;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use renamed::{Error, Progress, Task};

#[renamed::bombsquad(crate = "renamed")]
fn spawned(text: &str) -> usize {
    text.len()
}

#[renamed::bombsquad(crate = "renamed", start_method = "fork", backend = "pipe")]
fn forked(x: &mut i64) -> i64 {
    *x += 1;
    *x
}

#[renamed::bombsquad(crate = "renamed", start_method = "forkserver", timeout = "10s")]
fn served(x: i64) -> Vec<u8> {
    vec![u8::try_from(x).unwrap_or(0)]
}

#[renamed::bombsquad(crate = "renamed", pool = 1, max_calls = 10)]
fn pooled(x: i64, progress: Progress<i64>) -> i64 {
    progress.send(x);
    x * 2
}

#[derive(Default)]
struct Echo;

#[renamed::bombsquad(crate = "renamed")]
impl Task for Echo {
    type Input = u8;
    type Output = u8;
    type Error = ();
    fn run(&mut self, input: u8) -> Result<u8, ()> {
        Ok(input)
    }
}

static SET_UP: AtomicBool = AtomicBool::new(false);

#[renamed::child_init(crate = "renamed")]
fn set_up() {
    SET_UP.store(true, Ordering::Relaxed);
}

#[renamed::bombsquad(crate = "renamed")]
fn was_set_up() -> bool {
    SET_UP.load(Ordering::Relaxed)
}

#[renamed::bombsquad(crate = "renamed")]
#[test]
fn isolated_test() {}

fn main() -> Result<(), Error> {
    assert_eq!(spawned("four")?, 4);
    let mut x = 1;
    assert_eq!(forked(&mut x)?, 2);
    assert_eq!(served(7)?, [7]);
    let (progress, messages) = Progress::channel();
    assert_eq!(pooled(21, progress)?, 42);
    assert_eq!(messages.collect::<Vec<_>>(), [21]);
    assert!(was_set_up()?, "the child ran the child_init function");
    assert!(!SET_UP.load(Ordering::Relaxed), "but the caller did not");
    renamed::shutdown_pools(Duration::from_secs(1));
    Ok(())
}
