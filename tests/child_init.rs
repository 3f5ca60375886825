//! `#[child_init]`: spawned and fork-server children and pool workers never
//! run `main` (docs/FAULTS.md D8), so a `OnceLock` set there is empty in
//! them; a registered set-up function runs in each of them before the
//! function instead. A forked child runs none: it has the caller's memory.

mod common;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use bombsquad::{Error, bombsquad};

/// What the set-up function made, with the process it ran in.
static CONFIGURED: OnceLock<String> = OnceLock::new();
/// How many times it ran in this process.
static RUNS: AtomicUsize = AtomicUsize::new(0);

const PANICS: &str = "a_panicking_child_init_is_the_calls_panic";
const MAIN_ONCE: &str = "main_never_starts_in_a_child_scenario";

#[bombsquad::child_init]
fn configure() {
    assert!(
        !common::scenario::is(PANICS),
        "no configuration in this child"
    );
    RUNS.fetch_add(1, Ordering::Relaxed);
    CONFIGURED
        .set(format!("configured in {}", std::process::id()))
        .unwrap();
}

/// What a child sees: the configuration, how many times it was made, and
/// the child's pid.
type Seen = (Option<String>, usize, u32);

fn seen() -> Seen {
    (
        CONFIGURED.get().cloned(),
        RUNS.load(Ordering::Relaxed),
        std::process::id(),
    )
}

#[bombsquad(timeout = "20s", panic = "error")]
fn spawned() -> Seen {
    seen()
}

#[bombsquad(start_method = "forkserver", timeout = "20s", panic = "error")]
fn served() -> Seen {
    seen()
}

#[bombsquad(pool = 1, timeout = "20s")]
fn pooled() -> Seen {
    seen()
}

#[bombsquad(start_method = "fork", timeout = "20s")]
fn forked() -> Seen {
    seen()
}

fn configured_once_in(seen: &Seen) {
    let (configured, runs, pid) = seen;
    assert_eq!(
        configured.as_deref(),
        Some(&*format!("configured in {pid}"))
    );
    assert_eq!(*runs, 1);
}

#[test]
fn spawned_and_served_children_and_workers_run_it_first() {
    common::watchdog();
    configured_once_in(&spawned().unwrap());
    configured_once_in(&served().unwrap());
    let first = pooled().unwrap();
    configured_once_in(&first);
    let second = pooled().unwrap();
    assert_eq!(second, first, "a worker runs it once, as it starts");
    assert_eq!(
        forked().unwrap().0,
        None,
        "a forked child has the caller's memory and runs none"
    );
    assert_eq!(CONFIGURED.get(), None, "the caller never runs it");
}

/// Run as a scenario, in which the set-up function panics: the call
/// reports that panic, as if the function had panicked.
#[test]
fn a_panicking_child_init_is_the_calls_panic() {
    common::watchdog();
    if !common::scenario::is(PANICS) {
        common::scenario::run(common::scenario::command(PANICS));
        return;
    }
    for result in [spawned(), served()] {
        match result {
            Err(Error::Panicked { message, .. }) => {
                assert_eq!(message, "no configuration in this child");
            }
            other => panic!("expected Panicked, got {other:?}"),
        }
    }
}

/// The scenario, whose `main` is libtest running this one test (its name
/// is in the environment, which children inherit). A spawned child, a
/// fork-server child or a worker that started `main` would run it again
/// and print its first line again, relayed to this stdout.
#[test]
fn main_never_starts_in_a_child_scenario() {
    if !common::scenario::is(MAIN_ONCE) {
        return;
    }
    common::watchdog();
    println!("MAIN STARTED in {}", std::process::id());
    configured_once_in(&spawned().unwrap());
    configured_once_in(&served().unwrap());
    configured_once_in(&pooled().unwrap());
    println!("SCENARIO PASSED");
}

/// D8: a re-executed child cannot run `main` by mistake (there is no
/// `init()` for `main` to call first, or to forget): it is served by a
/// constructor, before `main`, and leaves without returning to it.
#[test]
fn main_never_starts_in_a_spawned_or_served_child_or_a_worker() {
    common::watchdog();
    let output = common::scenario::run(common::scenario::command(MAIN_ONCE));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("SCENARIO PASSED"), "{stdout}");
    assert_eq!(stdout.matches("MAIN STARTED").count(), 1, "{stdout}");
}
