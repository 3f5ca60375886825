//! An `unsafe fn` stays `unsafe fn`; its body keeps its contract.

#![deny(warnings)]

use bombsquad::bombsquad;

/// # Safety
/// `ptr` must point to a readable `i64`.
#[bombsquad(start_method = "fork")]
unsafe fn read(ptr: usize) -> i64 {
    // SAFETY: the caller's contract.
    unsafe { *(ptr as *const i64) }
}

/// # Safety
/// None really; spawned.
#[bombsquad]
unsafe fn spawned(x: i64) -> i64 {
    x
}

fn main() {
    let value = 9_i64;
    // SAFETY: points to `value`, which the forked child shares a copy of.
    let read_back = unsafe { read(&raw const value as usize) }.unwrap();
    assert_eq!(read_back, 9);
    let _: unsafe fn(i64) -> Result<i64, bombsquad::Error> = spawned;
}
