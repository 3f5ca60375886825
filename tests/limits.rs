//! Resource limits (issue 4, items 2 and 3; docs/FAULTS.md A9, C1-C4, H6):
//! memory, CPU time and stack, applied in the child and classified in the
//! parent, with real allocations, real busy loops and real recursion, in
//! both start methods. `RUST_BACKTRACE=1` is process-global, so the runs
//! with it happen in a scenario: this binary run again as a subprocess.

mod common;

use std::process::Command;
use std::time::Duration;

use bombsquad::{Error, NonzeroExitcode, bombsquad};

const SCENARIO: &str = "BOMBSQUAD_TEST_LIMITS_BACKTRACE";

/// Serialises this file's tests: a test that panics in the parent (a
/// re-raised child panic, a panicking callback) holds std's backtrace lock
/// while it prints, and a child forked by another test at that moment
/// would wait on that lock forever when it panics or fails an allocation
/// itself (docs/FAULTS.md D3: fork in a multi-threaded parent).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn nonzero<T: std::fmt::Debug>(result: Result<T, Error>) -> NonzeroExitcode {
    match result {
        Err(Error::NonzeroExitcode(e)) => e,
        other => panic!("expected NonzeroExitcode, got {other:?}"),
    }
}

#[bombsquad(memory = "256MiB", stderr = "capture")]
fn allocates_a_gibibyte() -> usize {
    Vec::<u8>::with_capacity(1 << 30).capacity()
}

#[bombsquad(start_method = "fork", memory = "256MiB", stderr = "capture")]
fn allocates_a_gibibyte_forked() -> usize {
    Vec::<u8>::with_capacity(1 << 30).capacity()
}

#[bombsquad(memory = "256MiB")]
fn allocates_a_little() -> usize {
    vec![1u8; 64 << 20].iter().map(|&b| usize::from(b)).sum()
}

#[bombsquad(start_method = "fork", memory = "256MiB")]
fn allocates_a_little_forked() -> usize {
    vec![1u8; 64 << 20].iter().map(|&b| usize::from(b)).sum()
}

fn assert_out_of_memory(e: &NonzeroExitcode) {
    assert_eq!(e.signal(), Some(libc::SIGABRT), "{e}");
    assert!(e.is_oom(), "{e}");
    assert!(!e.is_stack_overflow(), "{e}");
    assert!(
        e.to_string().contains(
            "was killed by SIGABRT: out of memory: allocation of 1.0 GiB failed under the 256.0 MiB limit, after "
        ),
        "{e}"
    );
}

#[test]
fn an_allocation_beyond_the_memory_limit_is_out_of_memory() {
    common::watchdog();
    let _serial = serial();
    for result in [allocates_a_gibibyte(), allocates_a_gibibyte_forked()] {
        assert_out_of_memory(&nonzero(result));
    }
}

#[test]
fn memory_under_the_limit_is_fine() {
    common::watchdog();
    let _serial = serial();
    assert_eq!(allocates_a_little().unwrap(), 64 << 20);
    assert_eq!(allocates_a_little_forked().unwrap(), 64 << 20);
}

#[bombsquad(memory = "256MiB")]
fn overflows_capacity() -> usize {
    Vec::<u64>::with_capacity(usize::MAX / 4).len()
}

#[bombsquad(start_method = "fork", memory = "256MiB")]
fn overflows_capacity_forked() -> usize {
    Vec::<u64>::with_capacity(usize::MAX / 4).len()
}

#[test]
#[should_panic(expected = "capacity overflow")]
fn a_capacity_overflow_is_a_panic_not_oom_spawned() {
    common::watchdog();
    let _serial = serial();
    let _ = overflows_capacity();
}

#[test]
#[should_panic(expected = "capacity overflow")]
fn a_capacity_overflow_is_a_panic_not_oom_forked() {
    common::watchdog();
    let _serial = serial();
    let _ = overflows_capacity_forked();
}

#[bombsquad(cpu = "1s", timeout = "30s")]
fn spins() -> u64 {
    let mut n = 0u64;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

#[bombsquad(start_method = "fork", cpu = "1s", timeout = "30s")]
fn spins_forked() -> u64 {
    let mut n = 0u64;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

#[test]
fn a_busy_loop_meets_the_cpu_limit() {
    common::watchdog();
    let _serial = serial();
    for result in [spins(), spins_forked()] {
        let e = nonzero(result);
        assert_eq!(e.signal(), Some(libc::SIGXCPU), "{e}");
        assert!(e.is_cpu_limit(), "{e}");
        assert!(
            e.to_string()
                .contains("was killed by SIGXCPU: CPU time limit of 1 s exceeded, after "),
            "{e}"
        );
        // The kernel sends SIGXCPU once the child's runtime reaches 1 s;
        // `wait4`'s user and system times are sampled, and on a loaded VM
        // they were seen 135 ms short of it (865 ms). Far below would mean
        // the limit was not what ended it.
        let cpu = e.user_time().unwrap() + e.system_time().unwrap();
        assert!(cpu >= Duration::from_millis(600), "{cpu:?}");
    }
}

/// Recursion with a 4 KiB frame that the optimiser cannot fold away.
fn recurse(depth: u64) -> u64 {
    let frame = [depth as u8; 4096];
    std::hint::black_box(&frame);
    if depth == 0 {
        return u64::from(frame[7]);
    }
    recurse(depth - 1) + u64::from(frame[7])
}

/// Deep enough for 40 MiB or more of stack: more than a main thread's
/// 8 MiB, or a libtest thread's 2 MiB, hold.
const DEEP: u64 = 10_000;

#[bombsquad(stderr = "capture")]
fn recurses_deeply() -> u64 {
    recurse(DEEP)
}

#[bombsquad(start_method = "fork", stderr = "capture")]
fn recurses_deeply_forked() -> u64 {
    recurse(DEEP)
}

#[bombsquad(stack_size = "256MiB")]
fn recurses_deeply_on_a_big_stack() -> u64 {
    recurse(DEEP)
}

#[bombsquad(start_method = "fork", stack_size = "256MiB")]
fn recurses_deeply_on_a_big_stack_forked() -> u64 {
    recurse(DEEP)
}

fn expected_sum() -> u64 {
    (0..=DEEP).map(|d| d % 256).sum()
}

fn assert_stack_overflow(e: &NonzeroExitcode) {
    assert_eq!(e.signal(), Some(libc::SIGABRT), "{e}");
    assert!(e.is_stack_overflow(), "{e}");
    assert!(!e.is_oom(), "{e}");
    assert!(
        e.to_string()
            .contains("was killed by SIGABRT: stack overflow, after "),
        "{e}"
    );
    let stderr = String::from_utf8_lossy(e.stderr_tail());
    assert!(stderr.contains("has overflowed its stack"), "{stderr}");
}

#[test]
fn deep_recursion_is_a_stack_overflow() {
    common::watchdog();
    let _serial = serial();
    // Fork mode: std's own handler reports it (the fault handler chains to
    // it); spawn mode runs before `main`, where the fault handler does.
    for result in [recurses_deeply(), recurses_deeply_forked()] {
        assert_stack_overflow(&nonzero(result));
    }
}

#[test]
fn a_bigger_stack_lets_the_same_recursion_finish() {
    common::watchdog();
    let _serial = serial();
    assert_eq!(recurses_deeply_on_a_big_stack().unwrap(), expected_sum());
    assert_eq!(
        recurses_deeply_on_a_big_stack_forked().unwrap(),
        expected_sum()
    );
}

#[bombsquad(stack_size = "1MiB", stderr = "capture")]
fn overflows_a_small_stack() -> u64 {
    recurse(DEEP)
}

#[bombsquad(start_method = "fork", stack_size = "1MiB", stderr = "capture")]
fn overflows_a_small_stack_forked() -> u64 {
    recurse(DEEP)
}

#[test]
fn an_overflow_on_the_stack_thread_is_recognised() {
    common::watchdog();
    let _serial = serial();
    for result in [overflows_a_small_stack(), overflows_a_small_stack_forked()] {
        let e = nonzero(result);
        assert_stack_overflow(&e);
        let stderr = String::from_utf8_lossy(e.stderr_tail());
        assert!(stderr.contains("thread 'isolated-call'"), "{stderr}");
    }
}

/// `RLIMIT_DATA` counts thread stacks (docs/FAULTS.md C2): a thread whose stack
/// does not fit cannot start, and the function sees the error.
#[bombsquad(memory = "64MiB")]
fn starts_a_thread_with_a_big_stack() -> Result<(), String> {
    std::thread::Builder::new()
        .stack_size(128 << 20)
        .spawn(|| ())
        .map(|_| ())
        .map_err(|e| format!("{:?}", e.kind()))
}

#[test]
fn the_memory_limit_counts_thread_stacks() {
    common::watchdog();
    let _serial = serial();
    assert_eq!(
        starts_a_thread_with_a_big_stack().unwrap(),
        Err("WouldBlock".to_owned())
    );
}

#[bombsquad(stack_size = "8MiB", panic = "error")]
fn panics_on_its_own_stack() -> u8 {
    panic!("from the big-stack thread")
}

#[test]
fn a_panic_on_the_stack_thread_is_reported() {
    common::watchdog();
    let _serial = serial();
    let e = panics_on_its_own_stack().unwrap_err();
    let Error::Panicked {
        message, location, ..
    } = e
    else {
        panic!("{e}")
    };
    assert_eq!(message, "from the big-stack thread");
    assert!(location.is_some_and(|l| l.file.ends_with("limits.rs")));
}

#[bombsquad]
fn oom_score_adj() -> String {
    std::fs::read_to_string("/proc/self/oom_score_adj").unwrap()
}

#[bombsquad(start_method = "fork")]
fn oom_score_adj_forked() -> String {
    std::fs::read_to_string("/proc/self/oom_score_adj").unwrap()
}

#[test]
fn the_child_is_the_oom_killers_first_choice_and_the_parent_is_not() {
    common::watchdog();
    let _serial = serial();
    let parent = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap();
    assert_eq!(oom_score_adj().unwrap().trim(), "1000");
    assert_eq!(oom_score_adj_forked().unwrap().trim(), "1000");
    assert_eq!(
        std::fs::read_to_string("/proc/self/oom_score_adj").unwrap(),
        parent
    );
}

/// The scenario: runs only in the subprocess started below, with
/// `RUST_BACKTRACE` set to 1 or unset. Children inherit it: with it, std
/// prints a backtrace after its message, and the classification must
/// still find the message (docs/FAULTS.md H6).
#[test]
fn backtrace_scenario() {
    let Some(mode) = std::env::var_os(SCENARIO) else {
        return;
    };
    let with_backtrace = mode == "with";
    for result in [allocates_a_gibibyte(), allocates_a_gibibyte_forked()] {
        let e = nonzero(result);
        assert_out_of_memory(&e);
        let stderr = String::from_utf8_lossy(e.stderr_tail());
        let message = stderr.find("memory allocation of").unwrap();
        assert_eq!(
            stderr[message..].contains("stack backtrace:"),
            with_backtrace,
            "{stderr}"
        );
    }
    for result in [recurses_deeply(), recurses_deeply_forked()] {
        assert_stack_overflow(&nonzero(result));
    }
    println!("SCENARIO PASSED");
}

#[test]
fn classification_holds_with_and_without_rust_backtrace() {
    common::watchdog();
    let _serial = serial();
    for mode in ["with", "without"] {
        let mut scenario = Command::new(std::env::current_exe().unwrap());
        scenario
            .args(["--exact", "backtrace_scenario", "--nocapture"])
            .env(SCENARIO, mode);
        if mode == "with" {
            scenario.env("RUST_BACKTRACE", "1");
        } else {
            scenario.env_remove("RUST_BACKTRACE");
        }
        let output = common::scenario::run(scenario);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains("SCENARIO PASSED"), "{mode}: {stdout}");
    }
}

/// A memory cgroup this test may create children in: the v1 memory
/// controller's or the v2 (cgroup2 at /sys/fs/cgroup) directory of this
/// process, when writable. `None` skips the test (docs/FAULTS.md C4).
fn own_memory_cgroup() -> Option<(std::path::PathBuf, &'static str)> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let path = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "memory") {
            return Some((
                std::path::Path::new("/sys/fs/cgroup/memory").join(path),
                "memory.limit_in_bytes",
            ));
        }
        if controllers.is_empty()
            && std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
        {
            return Some((
                std::path::Path::new("/sys/fs/cgroup").join(path),
                "memory.max",
            ));
        }
    }
    None
}

/// Touches 256 MiB, page by page.
#[bombsquad(stderr = "capture", timeout = "60s")]
fn touches_256_mib() -> usize {
    let mut memory = vec![0u8; 256 << 20];
    for page in memory.chunks_mut(4096) {
        page[0] = 1;
    }
    std::hint::black_box(&memory).len()
}

const OOM_SCENARIO: &str = "BOMBSQUAD_TEST_OOM_KILL_CGROUP";

/// The scenario: this process joins the limited cgroup the test made (its
/// child then starts there too), so the counter it watches is the one the
/// kernel raises when the OOM killer takes the child.
#[test]
fn oom_kill_scenario() {
    let Some(cgroup) = std::env::var_os(OOM_SCENARIO) else {
        return;
    };
    let cgroup = std::path::PathBuf::from(cgroup);
    std::fs::write(cgroup.join("cgroup.procs"), std::process::id().to_string()).unwrap();
    let e = nonzero(touches_256_mib());
    assert_eq!(e.signal(), Some(libc::SIGKILL), "{e}");
    assert!(e.is_possible_oom_kill() && e.cgroup_oom_kill_rose(), "{e}");
    assert!(
        e.to_string().contains(
            "was killed by SIGKILL: not sent by bombsquad, possibly the OOM killer (the cgroup's oom_kill count rose)"
        ),
        "{e}"
    );
    println!("SCENARIO PASSED");
}

#[test]
fn a_kill_by_the_cgroup_oom_killer_is_attributed() {
    common::watchdog();
    let _serial = serial();
    let Some((parent, limit_file)) = own_memory_cgroup() else {
        eprintln!("skipped: no memory cgroup");
        return;
    };
    let cgroup = parent.join(format!("bombsquad-test-{}", std::process::id()));
    if std::fs::create_dir(&cgroup).is_err()
        || std::fs::write(cgroup.join(limit_file), (128u64 << 20).to_string()).is_err()
    {
        let _ = std::fs::remove_dir(&cgroup);
        eprintln!("skipped: cannot create a limited memory cgroup under {parent:?}");
        return;
    }
    for swap_limit in ["memory.memsw.limit_in_bytes", "memory.swap.max"] {
        let _ = std::fs::write(cgroup.join(swap_limit), (128u64 << 20).to_string());
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "oom_kill_scenario", "--nocapture"])
        .env(OOM_SCENARIO, &cgroup)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir(&cgroup);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("SCENARIO PASSED"), "{stdout}");
}
