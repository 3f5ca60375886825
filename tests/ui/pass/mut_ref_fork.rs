//! `&mut` is accepted under fork: the child writes to its own copy.

#![deny(warnings)]

use bombsquad::bombsquad;

#[bombsquad(start_method = "fork")]
fn push(values: &mut Vec<i64>) -> usize {
    values.push(0);
    values.len()
}

fn main() {
    let mut values = vec![1, 2];
    assert_eq!(push(&mut values).unwrap(), 3);
    assert_eq!(values, [1, 2], "the parent's vector is untouched");
}
