//! Under spawn, `&str`, `&[T]`, `&Path`, `&OsStr` and `&T` arguments are
//! sent owned and lent to the body.

#![deny(warnings)]

use std::ffi::OsStr;
use std::path::Path;

use bombsquad::bombsquad;

#[derive(serde::Serialize, serde::Deserialize)]
struct Config {
    depth: u32,
}

#[bombsquad]
fn measure(
    text: &str,
    numbers: &[i64],
    path: &Path,
    os: &OsStr,
    config: &Config,
    count: &u64,
    words: &Vec<String>,
) -> usize {
    text.len()
        + numbers.len()
        + path.as_os_str().len()
        + os.len()
        + config.depth as usize
        + *count as usize
        + words.len()
}

fn main() {
    let _: fn(
        &str,
        &[i64],
        &Path,
        &OsStr,
        &Config,
        &u64,
        &Vec<String>,
    ) -> Result<usize, bombsquad::Error> = measure;
}
