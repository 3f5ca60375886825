//! `async`: what awaiting an isolated call on tokio adds to the blocking
//! call, the same function in both forms, in the same run (target: at
//! most 1.1x), and what tokio's wait adds to a bare round trip over pipes
//! (the floor of the warm rows).

use bombsquad::bombsquad;

use crate::Config;
use crate::bench::{Case, Plan, interleave, ratio, show};
use crate::floors::{WARM_MESSAGE, WarmEcho};

#[bombsquad(start_method = "spawn", backend = "pipe")]
fn blocking_pipe() -> u64 {
    42
}

#[bombsquad(start_method = "spawn", backend = "pipe")]
async fn awaited_pipe() -> u64 {
    42
}

#[bombsquad(start_method = "forkserver", backend = "pipe")]
fn blocking_forkserver() -> u64 {
    42
}

#[bombsquad(start_method = "forkserver", backend = "pipe")]
async fn awaited_forkserver() -> u64 {
    42
}

/// Its body may wait, so its child builds a tokio runtime (the one above
/// has nothing to wait for and runs without one).
#[bombsquad(start_method = "forkserver", backend = "pipe")]
async fn awaited_forkserver_waiting() -> u64 {
    std::future::ready(42).await
}

#[bombsquad(pool = 1)]
fn blocking_pooled() -> u64 {
    42
}

#[bombsquad(pool = 1)]
async fn awaited_pooled() -> u64 {
    42
}

/// How many warm calls a sample awaits in one task: an async caller is in
/// its runtime already, and entering it (`block_on`, ~0.3 µs) is not the
/// call's cost. The rows "one block_on per call" show it.
const IN_A_TASK: u32 = 10;

pub fn awaited(config: &Config) {
    let plan = config.scale(Plan {
        rounds: 20,
        block: 25,
    });
    println!(
        "\n== awaited call vs blocking call (8-byte result, pipe backend), {} rounds x {} calls, medians",
        plan.rounds, plan.block
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a tokio runtime");
    bombsquad::start_forkserver().expect("start the fork server");
    // The floor of the warm rows: what tokio's wait adds to a round trip
    // over pipes that waits in an epoll set (`WarmEcho::start_watched`).
    let mut blocking_echo = WarmEcho::start_watched();
    let mut awaited_echo = WarmEcho::start_watched();
    let mut awaited_echo_each = WarmEcho::start_watched();
    let mut cases = vec![
        Case::new("spawn-mode call, blocking", || {
            assert_eq!(blocking_pipe().unwrap(), 42);
        }),
        Case::new("spawn-mode call, awaited (current-thread)", || {
            assert_eq!(runtime.block_on(awaited_pipe()).unwrap(), 42);
        }),
        Case::new("forkserver-mode call, blocking", || {
            assert_eq!(blocking_forkserver().unwrap(), 42);
        }),
        Case::new("forkserver-mode call, awaited (current-thread)", || {
            assert_eq!(runtime.block_on(awaited_forkserver()).unwrap(), 42);
        }),
        Case::new("  the same, its body awaits (builds a runtime)", || {
            assert_eq!(runtime.block_on(awaited_forkserver_waiting()).unwrap(), 42);
        }),
        Case::new("warm pooled call (pool = 1), blocking", || {
            assert_eq!(blocking_pooled().unwrap(), 42);
        }),
        Case::batched("warm pooled call, awaited in a task", IN_A_TASK, || {
            runtime.block_on(async {
                for _ in 0..IN_A_TASK {
                    assert_eq!(awaited_pooled().await.unwrap(), 42);
                }
            });
        }),
        Case::new("  the same, one block_on per call", || {
            assert_eq!(runtime.block_on(awaited_pooled()).unwrap(), 42);
        }),
        Case::new("floor: watched pipe round trip, blocking", || {
            blocking_echo.round_trip(&mut [7; WARM_MESSAGE]);
        }),
        Case::batched(
            "floor: watched pipe round trip, awaited in a task",
            IN_A_TASK,
            || {
                runtime.block_on(async {
                    for _ in 0..IN_A_TASK {
                        awaited_echo
                            .round_trip_awaited(&mut [7; WARM_MESSAGE])
                            .await;
                    }
                });
            },
        ),
        Case::new("  the same, one block_on per round trip", || {
            runtime.block_on(awaited_echo_each.round_trip_awaited(&mut [7; WARM_MESSAGE]));
        }),
    ];
    // Warm: each pool's worker started before the clock runs.
    assert_eq!(blocking_pooled().unwrap(), 42);
    assert_eq!(runtime.block_on(awaited_pooled()).unwrap(), 42);
    interleave(&mut cases, plan);
    println!(
        "{:<52} {:>12} {:>14} {:>8}",
        "case", "median", "vs blocking", "target"
    );
    // Each row against the last blocking row above it; the floor's rows
    // have no target.
    let mut blocking = None;
    let mut floor = false;
    for case in &cases {
        let is_baseline = case.name.ends_with(", blocking");
        if is_baseline {
            blocking = Some(case.median());
            floor = case.name.starts_with("floor");
        }
        let target = if is_baseline || floor { "" } else { "<= 1.10x" };
        let baseline = blocking.expect("the first row is a blocking one");
        println!(
            "{:<52} {:>12} {:>13.2}x {:>8}",
            case.name,
            show(case.median()),
            ratio(case.median(), baseline),
            target
        );
    }
}
