//! Scratch: a loop of trivial fork-server calls (not committed).
use bombsquad::bombsquad;
use std::time::Instant;

#[bombsquad(start_method = "forkserver", backend = "pipe")]
fn fs() -> u64 {
    42
}

fn raw() {
    unsafe {
        let mut p = [0i32; 2];
        libc::pipe(p.as_mut_ptr());
        let pid = libc::fork();
        if pid == 0 {
            let v = 42u64.to_le_bytes();
            libc::write(p[1], v.as_ptr().cast(), 8);
            libc::_exit(0);
        }
        libc::close(p[1]);
        let mut v = [0u8; 8];
        libc::read(p[0], v.as_mut_ptr().cast(), 8);
        libc::close(p[0]);
        let mut st = 0;
        libc::waitpid(pid, &mut st, 0);
    }
}

fn main() {
    let n: usize = std::env::args().nth(1).map_or(500, |s| s.parse().unwrap());
    let mode = std::env::args().nth(2).unwrap_or_default();
    bombsquad::start_forkserver().unwrap();
    fs().unwrap();
    let mut a = Vec::new();
    let mut b = Vec::new();
    for _ in 0..n / 10 {
        if mode != "raw" {
            let t = Instant::now();
            for _ in 0..10 {
                assert_eq!(fs().unwrap(), 42);
            }
            a.push(t.elapsed().as_secs_f64() * 1e6 / 10.0);
        }
        if mode != "fs" {
            let t = Instant::now();
            for _ in 0..10 {
                raw();
            }
            b.push(t.elapsed().as_secs_f64() * 1e6 / 10.0);
        }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|x, y| x.partial_cmp(y).unwrap());
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let (ma, mb) = (med(&mut a), med(&mut b));
    let p10 = |v: &Vec<f64>| v.get(v.len() / 10).copied().unwrap_or(0.0);
    println!(
        "forkserver {ma:.1} us  raw {mb:.1} us  ratio {:.2} p10 {:.1} {:.1} {:.2}",
        ma / mb,
        p10(&a),
        p10(&b),
        p10(&a) / p10(&b)
    );
}
