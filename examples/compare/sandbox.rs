//! What `Sandbox::compute()` adds to a trivial call: the same fork-mode
//! call with and without it, interleaved in one run.

use bombsquad::{Backend, Isolate, Sandbox};

use crate::Config;
use crate::bench::{Case, Plan, interleave, ratio, show};

pub fn sandbox(config: &Config) {
    let plan = config.scale(Plan {
        rounds: 20,
        block: 25,
    });
    println!(
        "\n== sandbox: a trivial fork-mode call (pipe backend), {} rounds x {} calls, medians",
        plan.rounds, plan.block
    );
    let plain = Isolate::new().backend(Backend::Pipe);
    let sandboxed = plain.clone().sandbox(Sandbox::compute());
    let mut cases = vec![
        Case::new("fork-mode call", || {
            assert_eq!(plain.fork(|| 42u64).unwrap(), 42);
        }),
        Case::new("fork-mode call, sandbox compute", || {
            assert_eq!(sandboxed.fork(|| 42u64).unwrap(), 42);
        }),
    ];
    interleave(&mut cases, plan);
    println!("{:<40} {:>12} {:>13}", "case", "median", "vs unsandboxed");
    let floor = cases[0].median();
    for case in &cases {
        println!(
            "{:<40} {:>12} {:>12.2}x",
            case.name,
            show(case.median()),
            ratio(case.median(), floor)
        );
    }
}
