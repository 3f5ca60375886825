//! bombsquad against the floors the kernel allows and against its peers,
//! measured in one run, in interleaved blocks, as medians, each printed as
//! a ratio to a floor measured in the same run (DESIGN.md "Performance
//! floors", BENCHMARKS.md):
//!
//! - `trivial`: a fork-mode call vs raw `fork` + 8 bytes through a pipe +
//!   `waitpid`; a spawn-mode call vs `Command` re-executing this binary;
//! - `hygiene`: the guarantees of a fork-mode call as a ladder of raw
//!   kernel operations, each rung adding one to the raw fork floor, up to
//!   the hygienic floors of the pipe and file backends, vs the library's
//!   fork-mode calls on those backends;
//! - `server-hygiene`: the same for a fork-server call, from a raw fork
//!   server (a fork and one hop of IPC) up to the hygienic floor of a
//!   fork-server call, vs the library's;
//! - `payload`: `Vec<u8>` results on each backend vs a raw pipe, a raw temp
//!   file and a raw memfd into fresh memory, and in-process memcpy;
//! - `heap`: fork-mode and spawn-mode calls as the parent's resident
//!   memory grows;
//! - `peak`: the parent's peak RSS for a large result, one subprocess per
//!   case;
//! - `warm`: a call to a warm worker (`#[bombsquad(pool = 1)]`, `Worker`)
//!   vs one 64-byte round trip to a child forked once; a 64 MiB result
//!   from a warm worker vs the same function one-shot;
//! - `async`: an awaited call on a
//!   current-thread tokio runtime vs the same blocking call;
//! - `peers`: procspawn, rusty-fork (`benches/peers`, built on demand) and
//!   Python bombsquad (`benches/peers/python-setup.sh`).
//!
//! ```text
//! cargo run --release --example compare                 # everything, ~3 min
//! cargo run --release --example compare -- --quick      # CI smoke, seconds
//! cargo run --release --example compare -- --only payload,peak --max-size 64M
//! ```

mod arguments;
mod awaited;
mod bench;
mod calls;
mod floors;
mod hygiene;
mod memory;
mod peers;
mod sandbox;

use std::time::Duration;

use bench::{Case, Plan, interleave, ratio, show};

/// What to run, from the command line.
#[derive(Debug, Clone)]
pub struct Config {
    /// CI smoke: few rounds, results up to 64 MiB, no peers.
    pub quick: bool,
    /// Sections to run; all when empty.
    pub only: Vec<String>,
    /// The largest result measured.
    pub max_size: usize,
    /// Multiplies every round count.
    pub rounds: f64,
}

impl Config {
    fn from_args() -> Self {
        let mut config = Self {
            quick: false,
            only: Vec::new(),
            max_size: 1 << 30,
            rounds: 1.0,
        };
        let mut args = std::env::args().skip(1);
        let mut max_size = None;
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .unwrap_or_else(|| usage(&format!("{name} needs a value")))
            };
            match arg.as_str() {
                "--quick" => config.quick = true,
                "--only" => {
                    config.only = value("--only").split(',').map(str::to_owned).collect();
                }
                "--max-size" => {
                    let text = value("--max-size");
                    max_size = Some(
                        bench::parse_size(&text)
                            .unwrap_or_else(|| usage(&format!("bad size {text}"))),
                    );
                }
                "--rounds" => {
                    let text = value("--rounds");
                    config.rounds = text
                        .parse()
                        .unwrap_or_else(|_| usage(&format!("bad multiplier {text}")));
                }
                "-h" | "--help" => usage(""),
                other => usage(&format!("unknown argument {other}")),
            }
        }
        if config.quick {
            config.max_size = 64 << 20;
            config.rounds *= 0.25;
        }
        if let Some(max_size) = max_size {
            config.max_size = max_size;
        }
        config
    }

    fn wants(&self, section: &str) -> bool {
        if self.only.is_empty() {
            return section != "peers" || !self.quick;
        }
        self.only.iter().any(|s| s == section)
    }

    /// `plan` with its rounds scaled, at least 1.
    pub fn scale(&self, plan: Plan) -> Plan {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "a small positive count"
        )]
        let rounds = ((plan.rounds as f64 * self.rounds).round() as usize).max(1);
        Plan { rounds, ..plan }
    }
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("compare: {problem}");
    }
    eprintln!(
        "usage: compare [--quick] [--only trivial,hygiene,server-hygiene,sandbox,payload,arguments,heap,peak,async,warm,peers] \
         [--max-size 1G] [--rounds MULTIPLIER]"
    );
    std::process::exit(2)
}

/// The floors of the trivial section, for the peers to be compared with.
#[derive(Debug, Clone, Copy, Default)]
pub struct Floors {
    pub fork: Option<Duration>,
    pub reexec: Option<Duration>,
}

fn main() {
    floors::exit_if_floor_child();
    hygiene::forkserver::serve_if_raw_server();
    memory::run_if_peak_child();
    let config = Config::from_args();
    println!(
        "compare: {} rounds x{:.2}, results up to {}{}",
        if config.quick { "quick," } else { "full," },
        config.rounds,
        bench::show_size(config.max_size),
        if config.only.is_empty() {
            String::new()
        } else {
            format!(", only {}", config.only.join(","))
        }
    );
    let mut floors = Floors::default();
    if config.wants("trivial") {
        floors = trivial(&config);
    }
    if config.wants("hygiene") {
        hygiene::hygiene(&config);
    }
    if config.wants("server-hygiene") {
        hygiene::forkserver::hygiene(&config);
    }
    if config.wants("sandbox") {
        sandbox::sandbox(&config);
    }
    if config.wants("payload") {
        calls::payload(&config);
    }
    if config.wants("arguments") {
        arguments::arguments(&config);
    }
    if config.wants("heap") {
        memory::heap(&config);
    }
    if config.wants("peak") {
        memory::peak(&config);
    }
    if config.wants("async") {
        awaited::awaited(&config);
    }
    // Last but the peers: its pools start a keeper thread, and the
    // sections before fork from a single-threaded parent.
    if config.wants("warm") {
        calls::warm(&config);
    }
    if config.wants("peers") {
        peers::run(&config, floors);
    } else if config.quick {
        println!("\n(peers skipped in --quick; `--only peers` runs them)");
    }
}

/// A trivial call (an 8-byte result) in each mode and on each backend
/// against its floor.
fn trivial(config: &Config) -> Floors {
    let plan = config.scale(Plan {
        rounds: 20,
        block: 25,
    });
    println!(
        "\n== trivial call (8-byte result), {} rounds x {} calls, medians",
        plan.rounds, plan.block
    );
    let mut cases = vec![Case::new("raw fork + pipe + waitpid", || {
        assert_eq!(floors::raw_fork(), 42);
    })];
    let fork_cases = calls::TRIVIAL.iter().filter(|c| c.fork).count() + 1;
    for call in calls::TRIVIAL.iter().filter(|c| c.fork) {
        cases.push(Case::new(call.name, move || {
            assert_eq!((call.run)().unwrap(), 42);
        }));
    }
    bombsquad::start_forkserver().expect("start the fork server");
    cases.push(Case::new("forkserver-mode call, pipe backend", || {
        assert_eq!(calls::forkserver_pipe().unwrap(), 42);
    }));
    cases.push(Case::new(
        "raw re-exec via Command + wait",
        floors::raw_reexec,
    ));
    for call in calls::TRIVIAL.iter().filter(|c| !c.fork) {
        cases.push(Case::new(call.name, move || {
            assert_eq!((call.run)().unwrap(), 42);
        }));
    }
    interleave(&mut cases, plan);
    println!("{:<40} {:>12} {:>13}", "case", "median", "vs its floor");
    let fork_floor = cases[0].median();
    let reexec_floor = cases[fork_cases + 1].median();
    for (i, case) in cases.iter().enumerate() {
        let floor = if i <= fork_cases {
            fork_floor
        } else {
            reexec_floor
        };
        println!(
            "{:<40} {:>12} {:>12.2}x",
            case.name,
            show(case.median()),
            ratio(case.median(), floor)
        );
    }
    Floors {
        fork: Some(fork_floor),
        reexec: Some(reexec_floor),
    }
}
