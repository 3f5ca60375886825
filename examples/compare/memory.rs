//! Memory: what a call costs as the parent's resident memory grows, and
//! the parent's peak resident memory for a large result.

use std::process::Command;

use crate::bench::{Case, Plan, interleave, ratio, show, show_size};
use crate::{Config, calls, floors};

/// Set in the environment of a peak-RSS subprocess: `CASE:LEN`.
const PEAK_CASE: &str = "COMPARE_PEAK_CASE";

/// Fork-mode and spawn-mode trivial calls with a touched heap of growing
/// size held by the parent.
pub fn heap(config: &Config) {
    let sizes: &[usize] = if config.quick {
        &[0, 512 << 20]
    } else {
        &[0, 512 << 20, 2 << 30]
    };
    let plan = config.scale(Plan {
        rounds: 6,
        block: 5,
    });
    println!(
        "\n== trivial call as the parent's touched heap grows, {} rounds x {} calls, medians",
        plan.rounds, plan.block
    );
    println!(
        "{:<10} {:>12} {:>12} {:>9} {:>12} {:>12} {:>9} {:>12} {:>15}",
        "heap",
        "raw fork",
        "fork call",
        "x floor",
        "raw re-exec",
        "spawn call",
        "x floor",
        "fork/spawn",
        "forkserver call"
    );
    // Started before the ballast only to keep its start out of the timings:
    // the server is a fresh execution, small whenever it starts.
    bombsquad::start_forkserver().expect("start the fork server");
    let fork = calls::TRIVIAL
        .iter()
        .find(|c| c.fork && c.name.contains("pipe"))
        .expect("fork pipe");
    let spawn = calls::TRIVIAL
        .iter()
        .find(|c| !c.fork && c.name.contains("pipe"))
        .expect("spawn pipe");
    for &size in sizes {
        let ballast = floors::payload(size);
        let mut cases = vec![
            Case::new("raw fork", || assert_eq!(floors::raw_fork(), 42)),
            Case::new("fork", || assert_eq!((fork.run)().unwrap(), 42)),
            Case::new("raw re-exec", floors::raw_reexec),
            Case::new("spawn", || assert_eq!((spawn.run)().unwrap(), 42)),
            Case::new("forkserver", || {
                assert_eq!(calls::forkserver_pipe().unwrap(), 42);
            }),
        ];
        interleave(&mut cases, plan);
        let m: Vec<_> = cases.iter().map(Case::median).collect();
        println!(
            "{:<10} {:>12} {:>12} {:>8.2}x {:>12} {:>12} {:>8.2}x {:>11.2}x {:>15}",
            if size == 0 {
                "small".to_owned()
            } else {
                show_size(size)
            },
            show(m[0]),
            show(m[1]),
            ratio(m[1], m[0]),
            show(m[2]),
            show(m[3]),
            ratio(m[3], m[2]),
            ratio(m[1], m[3]),
            show(m[4]),
        );
        drop(ballast);
    }
}

/// Peak parent RSS for the largest result, each case in a fresh
/// subprocess so the peaks do not mix.
pub fn peak(config: &Config) {
    let len = calls::sizes(config.max_size)
        .last()
        .copied()
        .expect("a size");
    println!(
        "\n== parent peak RSS (VmHWM) for a {} Vec<u8> result, one subprocess per case",
        show_size(len)
    );
    println!(
        "{:<40} {:>12} {:>14} {:>16}",
        "case", "peak RSS", "x payload", "above baseline"
    );
    let mut names: Vec<&str> = vec!["raw pipe", "raw temp file", "raw memfd"];
    names.extend(calls::BYTES.iter().map(|c| c.name));
    for name in names {
        let output = Command::new("/proc/self/exe")
            .env(PEAK_CASE, format!("{name}:{len}"))
            .output()
            .expect("run the peak subprocess");
        let text = String::from_utf8_lossy(&output.stdout);
        let Some((hwm, baseline)) = text
            .lines()
            .find_map(|l| l.strip_prefix("PEAK "))
            .and_then(|l| l.split_once(' '))
            .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
        else {
            println!(
                "{name:<40} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            continue;
        };
        #[allow(clippy::cast_precision_loss, reason = "a printed ratio")]
        let (x, above) = (
            hwm as f64 / len as f64,
            hwm.saturating_sub(baseline) as f64 / len as f64,
        );
        println!("{name:<40} {:>8} MiB {x:>13.2}x {above:>15.2}x", hwm >> 20);
    }
}

/// In a peak subprocess: run the named case once, print `PEAK hwm
/// baseline` (bytes) and exit.
pub fn run_if_peak_child() {
    let Some(spec) = std::env::var_os(PEAK_CASE) else {
        return;
    };
    let spec = spec.to_string_lossy().into_owned();
    let (name, len) = spec.rsplit_once(':').expect("CASE:LEN");
    let len: usize = len.parse().expect("a length");
    let (_, baseline) = floors::rss();
    let bytes = match name {
        "raw pipe" => floors::raw_pipe(len),
        "raw temp file" => floors::raw_file(len),
        "raw memfd" => floors::raw_memfd(len),
        name => {
            let call = calls::BYTES
                .iter()
                .find(|c| c.name == name)
                .expect("a known case");
            (call.run)(len).unwrap()
        }
    };
    floors::check_payload(&bytes, len);
    let (hwm, _) = floors::rss();
    println!("PEAK {hwm} {baseline}");
    std::process::exit(0);
}
