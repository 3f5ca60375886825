//! Interleaved blocks and medians: every case of a table runs one block in
//! turn, round after round, so drift on a shared machine (another tenant,
//! the page cache, thermal limits) lands on all of them alike.

use std::time::{Duration, Instant};

/// One measured case: a name and what one sample runs.
pub struct Case<'a> {
    pub name: String,
    run: Box<dyn FnMut() + 'a>,
    /// How many operations one run does: a sample is its time divided by
    /// this.
    operations: u32,
    samples: Vec<Duration>,
}

impl<'a> Case<'a> {
    pub fn new(name: impl Into<String>, run: impl FnMut() + 'a) -> Self {
        Self::batched(name, 1, run)
    }

    /// A case whose `run` does `operations` operations, and whose samples
    /// are the time of one: for operations that need a setting up that is
    /// not theirs to pay each time (entering an async runtime).
    pub fn batched(name: impl Into<String>, operations: u32, run: impl FnMut() + 'a) -> Self {
        Self {
            name: name.into(),
            run: Box::new(run),
            operations,
            samples: Vec::new(),
        }
    }

    /// The median sample.
    pub fn median(&self) -> Duration {
        let mut sorted = self.samples.clone();
        sorted.sort_unstable();
        sorted[sorted.len() / 2]
    }
}

/// How many rounds, and samples per case in each round.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub rounds: usize,
    pub block: usize,
}

/// Runs `plan.rounds` rounds; in each, every case takes `plan.block`
/// samples in turn.
pub fn interleave(cases: &mut [Case<'_>], plan: Plan) {
    for _ in 0..plan.rounds {
        for case in cases.iter_mut() {
            for _ in 0..plan.block {
                let start = Instant::now();
                (case.run)();
                case.samples.push(start.elapsed() / case.operations);
            }
        }
    }
}

/// A duration in the unit that suits it.
pub fn show(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs >= 1.0 {
        format!("{secs:.2} s")
    } else if secs >= 1e-3 {
        format!("{:.2} ms", secs * 1e3)
    } else if secs >= 1e-6 {
        format!("{:.1} µs", secs * 1e6)
    } else {
        format!("{:.0} ns", secs * 1e9)
    }
}

/// A byte count as "1 KiB", "64 MiB", "1 GiB".
pub fn show_size(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

/// Parses "1K", "64M", "1G" or a plain byte count.
pub fn parse_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let (digits, shift) = match text.char_indices().last()? {
        (i, 'K' | 'k') => (&text[..i], 10),
        (i, 'M' | 'm') => (&text[..i], 20),
        (i, 'G' | 'g') => (&text[..i], 30),
        _ => (text, 0),
    };
    digits.parse::<usize>().ok().map(|n| n << shift)
}

/// Throughput in GB/s (10^9 bytes per second).
pub fn gbps(bytes: usize, d: Duration) -> f64 {
    #[allow(clippy::cast_precision_loss, reason = "a printed rate")]
    let bytes = bytes as f64;
    bytes / d.as_secs_f64() / 1e9
}

/// `a / b`, for ratios of durations.
pub fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}
