//! Pattern and `mut` parameters, under both start methods.

#![deny(warnings)]

use bombsquad::bombsquad;

#[derive(serde::Serialize, serde::Deserialize)]
struct Point {
    x: i32,
    y: i32,
}

#[bombsquad(start_method = "fork")]
fn add_fork((a, b): (i32, i32), mut n: u32, Point { x, y }: Point) -> i64 {
    n += 1;
    i64::from(a + b + x + y) + i64::from(n)
}

#[bombsquad]
fn add_spawn((a, b): (i32, i32), mut n: u32, Point { x, y }: Point, _: u8) -> i64 {
    n += 1;
    i64::from(a + b + x + y) + i64::from(n)
}

fn main() {
    assert_eq!(add_fork((1, 2), 3, Point { x: 4, y: 5 }).unwrap(), 16);
    let _: fn((i32, i32), u32, Point, u8) -> Result<i64, bombsquad::Error> = add_spawn;
}
