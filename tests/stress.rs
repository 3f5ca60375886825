//! 10,000 short calls with random timeouts (docs/FAULTS.md F5, F8): every call
//! is `Ok` with its own token or a `Timeout`, a bystander process that leads
//! its own group survives every kill, and no zombie is left. One test in
//! its own binary, so the counts see only its children. (pid_reuse.rs makes
//! a reused pid happen on purpose.)

mod common;

use std::os::unix::process::CommandExt as _;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bombsquad::{Backend, Error, Isolate};

/// xorshift32: random enough to mix sleeps and timeouts, and repeatable.
fn next(state: &mut u32) -> u32 {
    *state ^= *state << 13;
    *state ^= *state >> 17;
    *state ^= *state << 5;
    *state
}

#[test]
fn ten_thousand_calls_with_random_timeouts_hit_no_bystander_and_leave_no_zombie() {
    common::watchdog();
    let mut sentinel = Command::new("sleep")
        .arg("600")
        .process_group(0)
        .spawn()
        .unwrap();
    let started = Instant::now();
    let (ok, timed_out) = (AtomicUsize::new(0), AtomicUsize::new(0));
    std::thread::scope(|scope| {
        for thread in 0..4u32 {
            let (ok, timed_out) = (&ok, &timed_out);
            scope.spawn(move || {
                let mut state = 0x9E37_79B9 ^ (thread + 1);
                for call in 0..2500u32 {
                    let token = thread * 10_000 + call;
                    let sleep = Duration::from_micros(u64::from(next(&mut state) % 1500));
                    let timeout = Duration::from_micros(300 + u64::from(next(&mut state) % 2000));
                    let result =
                        Isolate::new()
                            .backend(Backend::Pipe)
                            .timeout(timeout)
                            .fork(move || {
                                std::thread::sleep(sleep);
                                token
                            });
                    match result {
                        Ok(value) => {
                            assert_eq!(value, token);
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(Error::Timeout { after, .. }) => {
                            assert_eq!(after, timeout);
                            timed_out.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(other) => panic!("call {token}: {other:?}"),
                    }
                }
            });
        }
    });
    let (ok, timed_out) = (ok.into_inner(), timed_out.into_inner());
    eprintln!("{ok} ok, {timed_out} timed out in {:?}", started.elapsed());
    assert_eq!(ok + timed_out, 10_000);
    assert!(ok > 0 && timed_out > 0, "{ok} ok, {timed_out} timed out");
    assert_eq!(
        sentinel.try_wait().unwrap(),
        None,
        "the bystander was killed"
    );
    assert_eq!(common::zombie_children(), Vec::<i32>::new(), "zombies left");
    let sentinel_pid = sentinel.id().cast_signed();
    let others: Vec<_> = common::call_children(std::process::id())
        .into_iter()
        .filter(|(pid, _)| *pid != sentinel_pid)
        .collect();
    assert_eq!(others, Vec::new(), "children left running");
    sentinel.kill().unwrap();
    sentinel.wait().unwrap();
}
