//! The isolated functions measured, one per start method and backend, the
//! payload section (`Vec<u8>` results against the raw transports) and the
//! warm section (calls to warm workers against a raw round trip to a warm
//! child, and a large result warm against one-shot).

use std::time::Duration;

use bombsquad::{Error, Task, Worker, bombsquad};

use crate::bench::{self, Case, Plan, gbps, interleave, show, show_size};
use crate::{Config, floors};

/// An isolated call with an 8-byte result.
pub struct Trivial {
    pub name: &'static str,
    pub fork: bool,
    pub run: fn() -> Result<u64, Error>,
}

/// An isolated call returning `len` bytes.
pub struct Bytes {
    pub name: &'static str,
    pub fork: bool,
    pub run: fn(usize) -> Result<Vec<u8>, Error>,
}

macro_rules! calls {
    ($($trivial:ident, $bytes:ident: $start:literal, $backend:literal;)*) => {
        $(
            #[bombsquad(start_method = $start, backend = $backend)]
            fn $trivial() -> u64 {
                42
            }

            #[bombsquad(start_method = $start, backend = $backend)]
            fn $bytes(len: usize) -> Vec<u8> {
                floors::payload(len)
            }
        )*

        pub const TRIVIAL: &[Trivial] = &[$(Trivial {
            name: concat!($start, "-mode call, ", $backend, " backend"),
            fork: matches!($start.as_bytes(), b"fork"),
            run: $trivial,
        }),*];

        pub const BYTES: &[Bytes] = &[$(Bytes {
            name: concat!($start, "-mode call, ", $backend, " backend"),
            fork: matches!($start.as_bytes(), b"fork"),
            run: $bytes,
        }),*];
    };
}

calls! {
    fork_pipe, bytes_fork_pipe: "fork", "pipe";
    fork_file, bytes_fork_file: "fork", "file";
    fork_shm, bytes_fork_shm: "fork", "shm";
    spawn_pipe, bytes_spawn_pipe: "spawn", "pipe";
    spawn_file, bytes_spawn_file: "spawn", "file";
    spawn_shm, bytes_spawn_shm: "spawn", "shm";
}

/// A fork-server call: a fork of the small server process, with spawn's
/// semantics. Measured against the raw fork floor.
#[bombsquad(start_method = "forkserver", backend = "pipe")]
pub fn forkserver_pipe() -> u64 {
    42
}

/// A trivial call to a warm worker of a `pool = 1` function.
#[bombsquad(pool = 1)]
pub fn warm_trivial(x: u64) -> u64 {
    x + 1
}

/// A large result from a warm worker: through the shared arena.
#[bombsquad(pool = 1)]
pub fn warm_bytes(len: usize) -> Vec<u8> {
    floors::payload(len)
}

/// The same function one-shot, with the defaults (forkserver mode, file backend).
#[bombsquad]
pub fn oneshot_bytes(len: usize) -> Vec<u8> {
    floors::payload(len)
}

/// A trivial [`Task`], for a call through [`Worker`].
#[derive(Debug, Default)]
pub struct Increment;

#[bombsquad]
impl Task for Increment {
    type Input = u64;
    type Output = u64;
    type Error = String;

    fn run(&mut self, x: u64) -> Result<u64, String> {
        Ok(x + 1)
    }
}

/// The result sizes measured, up to `max`.
pub fn sizes(max: usize) -> Vec<usize> {
    [1 << 10, 1 << 20, 64 << 20, 1 << 30]
        .into_iter()
        .filter(|&size| size <= max)
        .collect()
}

/// Rounds and samples per size: enough samples for a median, within a
/// few seconds per size.
fn plan_for(size: usize) -> Plan {
    match size {
        s if s <= 1 << 10 => Plan {
            rounds: 10,
            block: 10,
        },
        s if s <= 1 << 20 => Plan {
            rounds: 10,
            block: 5,
        },
        s if s <= 64 << 20 => Plan {
            rounds: 7,
            block: 1,
        },
        _ => Plan {
            rounds: 3,
            block: 1,
        },
    }
}

/// `Vec<u8>` results: fork mode on every backend (spawn mode at 64 MiB
/// too; at 1 GiB it would add a minute and show the same) against the raw
/// transports into fresh memory and memcpy.
pub fn payload(config: &Config) {
    println!("\n== Vec<u8> results into fresh memory, medians; GB/s = 10^9 bytes/s");
    for size in sizes(config.max_size) {
        let plan = config.scale(plan_for(size));
        let source = floors::payload(size);
        let check = move |bytes: &[u8]| floors::check_payload(bytes, size);
        let mut cases = vec![
            Case::new("raw pipe (1 MiB capacity)", move || {
                check(&floors::raw_pipe(size));
            }),
            Case::new("raw temp file (O_TMPFILE)", move || {
                check(&floors::raw_file(size));
            }),
            Case::new("raw memfd", move || check(&floors::raw_memfd(size))),
            Case::new("in-process memcpy", || check(&floors::memcpy(&source))),
        ];
        let raw = cases.len() - 1;
        for call in BYTES.iter().filter(|c| c.fork || size == 64 << 20) {
            cases.push(Case::new(call.name, move || {
                check(&(call.run)(size).unwrap());
            }));
        }
        interleave(&mut cases, plan);
        let best = cases[..raw]
            .iter()
            .map(Case::median)
            .min()
            .expect("raw cases");
        println!(
            "\n{} ({} rounds x {}): {:<32} {:>10} {:>9} {:>12}",
            show_size(size),
            plan.rounds,
            plan.block,
            "case",
            "median",
            "GB/s",
            "vs best raw"
        );
        for case in &cases {
            println!(
                "  {:<50} {:>10} {:>9.2} {:>11.2}x",
                case.name,
                show(case.median()),
                gbps(size, case.median()),
                bench::ratio(best, case.median()),
            );
        }
    }
}

/// The warm-call targets (the issue "Benchmarks in the comparison runner").
const WARM_TARGET: f64 = 1.5;
const LARGE_TARGET: f64 = 2.0;

/// Issue 18's target for a warm call against a round trip over two pipes,
/// both pinned to one CPU.
const WARM_PIPE_TARGET: f64 = 1.3;
/// The large result of the warm section.
const LARGE: usize = 64 << 20;

/// Warm workers: a trivial call through `#[bombsquad(pool = 1)]` and
/// through a [`Worker`] against one 64-byte round trip to a warm child; a
/// 64 MiB result from a warm worker against the same function one-shot.
pub fn warm(config: &Config) {
    warm_trivial_calls(config);
    if config.max_size >= LARGE {
        warm_large(config);
    } else {
        println!("\n(warm 64 MiB result skipped: --max-size is below 64 MiB)");
    }
    bombsquad::shutdown_pools(Duration::from_secs(1));
}

fn warm_trivial_calls(config: &Config) {
    let plan = config.scale(Plan {
        rounds: 20,
        block: 200,
    });
    println!(
        "\n== warm call (u64 in, u64 out), {} rounds x {} calls, medians",
        plan.rounds, plan.block
    );
    // The echo children first: they are forked, and should inherit no
    // worker's socket.
    let mut echo = floors::WarmEcho::start();
    let mut pipe_echo = floors::WarmEcho::start_pipes();
    let mut message = [7u8; floors::WARM_MESSAGE];
    let mut watched_echo = floors::WarmEcho::start_watched();
    let mut hygienic_echo = floors::WarmEcho::start_hygienic();
    let mut pipe_message = message;
    let mut watched_message = message;
    let mut hygienic_message = message;
    let worker = Worker::<Increment>::spawn().expect("start the task worker");
    assert_eq!(warm_trivial(1).unwrap(), 2, "start the pool's worker");
    let mut x = 0u64;
    let mut y = 0u64;
    println!(
        "{:<44} {:>10} {:>11} {:>8} {:>9} {:>8} {:>10} {:>10}",
        "case", "median", "vs socket", "target", "vs pipes", "target", "vs watched", "vs hygienic"
    );
    for placement in Placement::ALL {
        let Some(pinned) = placement.apply() else {
            println!(
                "({}: not measured, the affinity could not be set)",
                placement.name()
            );
            continue;
        };
        println!("{}:", placement.name());
        let mut cases = vec![
            Case::new("raw 64-byte round trip to a warm child", || {
                echo.round_trip(&mut message);
            }),
            Case::new("  the same over two pipes", || {
                pipe_echo.round_trip(&mut pipe_message);
            }),
            Case::new("  the same, watched (epoll: pidfd + pipes)", || {
                watched_echo.round_trip(&mut watched_message);
            }),
            Case::new("  the same, + stray check, C stdio flush", || {
                hygienic_echo.round_trip(&mut hygienic_message);
            }),
            Case::new("pool = 1 function, warm", || {
                x = warm_trivial(x).unwrap();
            }),
            Case::new("Worker<T: Task>, warm", || {
                y = worker.call(y).unwrap().unwrap();
            }),
        ];
        interleave(&mut cases, plan);
        pinned.restore();
        let floors: [Duration; 4] = std::array::from_fn(|i| cases[i].median());
        for (i, case) in cases.iter().enumerate() {
            let (target, pipe_target) = if i < floors.len() {
                (String::new(), String::new())
            } else {
                (
                    format!("<= {WARM_TARGET:.1}x"),
                    format!("<= {WARM_PIPE_TARGET:.1}x"),
                )
            };
            let [socket, pipes, watched, hygienic] =
                floors.map(|floor| bench::ratio(case.median(), floor));
            println!(
                "  {:<42} {:>10} {:>10.2}x {:>8} {:>8.2}x {:>8} {:>9.2}x {:>10.2}x",
                case.name,
                show(case.median()),
                socket,
                target,
                pipes,
                pipe_target,
                watched,
                hygienic
            );
        }
    }
    assert!(x > 0 && y > 0);
}

/// Where the caller and the children (the echo child, the workers) run
/// while a warm call is measured. A round trip costs very different
/// amounts with both on one CPU and on two (a wake-up of another, idle
/// vCPU), and the scheduler's choice differs between a forked child and a
/// worker started from the keeper thread: measured free, and pinned both
/// ways, each against its own floor.
#[derive(Debug, Clone, Copy)]
enum Placement {
    Free,
    OneCpu,
    TwoCpus,
}

/// The affinities to put back.
struct Pinned {
    caller: Option<floors::CpuSet>,
    children: Vec<(i32, floors::CpuSet)>,
}

impl Placement {
    const ALL: [Self; 3] = [Self::Free, Self::OneCpu, Self::TwoCpus];

    fn name(self) -> &'static str {
        match self {
            Self::Free => "where the scheduler puts them",
            Self::OneCpu => "caller and children on one CPU",
            Self::TwoCpus => "caller on one CPU, children on another",
        }
    }

    /// Pins the calling thread and this process's children; `None` when
    /// there are too few CPUs or the kernel refuses.
    fn apply(self) -> Option<Pinned> {
        let mine = floors::affinity(0)?;
        let cpus = floors::cpus(&mine);
        let (caller, children) = match self {
            Self::Free => return Some(Pinned::nothing()),
            Self::OneCpu => (*cpus.first()?, *cpus.first()?),
            Self::TwoCpus => (*cpus.first()?, *cpus.get(1)?),
        };
        let mut pinned = Pinned::nothing();
        for child in floors::children() {
            if let Some(old) = floors::affinity(child)
                && floors::set_affinity(child, &floors::only(children))
            {
                pinned.children.push((child, old));
            }
        }
        pinned.caller = Some(mine);
        if !floors::set_affinity(0, &floors::only(caller)) {
            pinned.restore();
            return None;
        }
        Some(pinned)
    }
}

impl Pinned {
    fn nothing() -> Self {
        Self {
            caller: None,
            children: Vec::new(),
        }
    }

    fn restore(self) {
        if let Some(caller) = self.caller {
            floors::set_affinity(0, &caller);
        }
        for (child, old) in self.children {
            floors::set_affinity(child, &old);
        }
    }
}

/// A 64 MiB result: a warm worker (through the shared arena) against the
/// same function one-shot with the defaults, and against every one-shot
/// start method and backend of the same run.
fn warm_large(config: &Config) {
    // More rounds than the payload section's 7: the warm case is short
    // and sequential (the worker copies, then the parent), so a busy
    // neighbour on the other core moves it more than the others.
    let plan = config.scale(Plan {
        rounds: 15,
        block: 1,
    });
    println!(
        "\n== 64 MiB Vec<u8> result, warm vs one-shot, {} rounds x {}, medians",
        plan.rounds, plan.block
    );
    let check = |bytes: &[u8]| floors::check_payload(bytes, LARGE);
    check(&warm_bytes(LARGE).unwrap()); // the worker starts and sizes its arena
    let mut cases = vec![
        Case::new("pool = 1 function, warm", move || {
            check(&warm_bytes(LARGE).unwrap());
        }),
        Case::new("#[bombsquad] one-shot (forkserver, file)", move || {
            check(&oneshot_bytes(LARGE).unwrap());
        }),
    ];
    // The default (forkserver, file) is measured above.
    for call in BYTES {
        cases.push(Case::new(call.name, move || {
            check(&(call.run)(LARGE).unwrap());
        }));
    }
    // What the function itself costs (black_box: else the filled vector
    // is optimised away, the check needing only three of its bytes).
    cases.push(Case::new("in-process: make the payload", move || {
        check(&std::hint::black_box(floors::payload(LARGE)));
    }));
    interleave(&mut cases, plan);
    let warm = cases[0].median();
    let default = cases[1].median();
    let (fastest, fastest_name) = cases[1..cases.len() - 1]
        .iter()
        .map(|c| (c.median(), c.name.as_str()))
        .min()
        .expect("one-shot cases");
    println!("{:<44} {:>10} {:>9}", "case", "median", "GB/s");
    for case in &cases {
        println!(
            "{:<44} {:>10} {:>9.2}",
            case.name,
            show(case.median()),
            gbps(LARGE, case.median())
        );
    }
    println!(
        "warm is {:.2}x faster than #[bombsquad] one-shot (target >= {LARGE_TARGET:.1}x)",
        bench::ratio(default, warm)
    );
    println!(
        "warm is {:.2}x faster than the fastest one-shot, {fastest_name} (target >= {LARGE_TARGET:.1}x)",
        bench::ratio(fastest, warm)
    );
    // Every case runs the function, which faults in its own 64 MiB each
    // time, warm or not: what each adds beyond it is the transport.
    let own = cases[cases.len() - 1].median();
    let beyond = |d: Duration| d.saturating_sub(own);
    println!(
        "beyond making the payload ({}): warm +{}, fastest one-shot +{}: {:.2}x",
        show(own),
        show(beyond(warm)),
        show(beyond(fastest)),
        bench::ratio(beyond(fastest), beyond(warm))
    );
}
