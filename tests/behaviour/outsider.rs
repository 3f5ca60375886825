//! A child killed by someone else (docs/FAULTS.md A3): the call reports the
//! signal, and the next call works.

#![allow(
    clippy::undocumented_unsafe_blocks,
    reason = "crash tests call libc to fault on purpose"
)]

use crate::common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bombsquad::{Error, bombsquad};

#[bombsquad]
fn announce_pid_and_wait(path: PathBuf) -> u8 {
    std::fs::write(&path, std::process::id().to_string()).unwrap();
    std::thread::sleep(Duration::from_secs(60));
    0
}

#[bombsquad(start_method = "fork", backend = "pipe")]
fn announce_pid_and_wait_forked(path: PathBuf) -> u8 {
    std::fs::write(&path, std::process::id().to_string()).unwrap();
    std::thread::sleep(Duration::from_secs(60));
    0
}

/// Kills whatever pid appears in `path` with `signal`, from another thread.
fn kill_when_announced(path: PathBuf, signal: i32) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(pid) = std::fs::read_to_string(&path).map(|s| s.parse::<i32>())
                && let Ok(pid) = pid
            {
                // SAFETY: the pid belongs to our unreaped child: the call is still waiting on it.
                unsafe { libc::kill(pid, signal) };
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the child never announced itself"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

#[test]
fn an_outside_sigkill_is_reported_with_its_signal() {
    common::watchdog();
    let dir = tempfile::tempdir().unwrap();
    for (i, call) in [
        announce_pid_and_wait as fn(PathBuf) -> Result<u8, Error>,
        announce_pid_and_wait_forked,
    ]
    .into_iter()
    .enumerate()
    {
        let path = dir.path().join(format!("pid{i}"));
        let killer = kill_when_announced(path.clone(), libc::SIGKILL);
        match call(path) {
            Err(Error::NonzeroExitcode(e)) => {
                assert_eq!((e.signal(), e.exitcode()), (Some(libc::SIGKILL), -9));
                assert!(
                    e.to_string().contains(
                        "was killed by SIGKILL: not sent by bombsquad, possibly the OOM killer"
                    ),
                    "{e}"
                );
            }
            other => panic!("expected NonzeroExitcode, got {other:?}"),
        }
        killer.join().unwrap();
    }
    assert_eq!(
        bombsquad::fork(|| 2 + 2).unwrap(),
        4,
        "the parent carries on"
    );
}
