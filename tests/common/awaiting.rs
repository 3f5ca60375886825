//! Helpers for the tests of awaited calls (feature `tokio`): runtimes, and
//! waiting for a process that a dropped future must have killed and reaped.

use std::path::Path;
use std::time::{Duration, Instant};

use bombsquad::{Error, NonzeroExitcode};

pub fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

pub fn nonzero<T: std::fmt::Debug>(result: Result<T, Error>) -> NonzeroExitcode {
    match result {
        Err(Error::NonzeroExitcode(e)) => e,
        other => panic!("expected NonzeroExitcode, got {other:?}"),
    }
}

/// Waits until `pid` is gone: not running, not a zombie. Fails after 3 s.
pub fn assert_gone_soon(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while super::process_exists(pid) {
        assert!(
            Instant::now() < deadline,
            "process {pid} still exists 3 s after its future was dropped"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The pid a child wrote to `path`, once it has.
pub async fn pid_in(path: &Path) -> u32 {
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(pid) = text.trim().parse()
        {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
