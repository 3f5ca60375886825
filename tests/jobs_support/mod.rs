//! Helpers shared by the `bombsquad::jobs` integration tests.
//!
//! Tests run in parallel (threads under `cargo test`, processes under
//! nextest); a test that counts fds or children takes [`SERIAL`]
//! exclusively, every other test holds it shared.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;
use std::time::{Duration, Instant};

use bombsquad::jobs::{Command, JobId, JobInfo, Jobs, OwnerId, Retention, Stream};

pub const GRACE: Duration = Duration::from_millis(300);
pub const BOUND: Duration = Duration::from_secs(10);

pub static SERIAL: RwLock<()> = RwLock::new(());

pub fn shared() -> RwLockReadGuard<'static, ()> {
    SERIAL.read().unwrap_or_else(|poison| poison.into_inner())
}

pub fn exclusive() -> RwLockWriteGuard<'static, ()> {
    SERIAL.write().unwrap_or_else(|poison| poison.into_inner())
}

/// Aborts the whole test process if the test is still running after 60 s.
pub struct Watchdog(#[allow(dead_code)] mpsc::Sender<()>);

pub fn watchdog(test: &'static str) -> Watchdog {
    let (done, wait) = mpsc::channel::<()>();
    thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(Duration::from_secs(60)) {
            eprintln!("watchdog: test {test} hung for 60 s, aborting");
            std::process::abort();
        }
    });
    Watchdog(done)
}

pub fn jobs_in(dir: &Path) -> Jobs {
    Jobs::builder()
        .log_dir(dir)
        .retention(Retention::keep_all())
        .stop_grace(GRACE)
        .build()
        .expect("build Jobs")
}

pub fn sh(script: &str) -> Command {
    Command::new("sh", ["-c", script])
}

pub fn finish(jobs: &Jobs, id: JobId, owner: OwnerId) -> JobInfo {
    jobs.wait_timeout(id, owner, BOUND)
        .expect("wait")
        .expect("job did not end within the bound")
}

pub fn read_all(mut reader: impl Read) -> String {
    let mut text = String::new();
    reader.read_to_string(&mut text).expect("read output");
    text
}

pub fn output(jobs: &Jobs, id: JobId, owner: OwnerId, only: Option<Stream>) -> String {
    match only {
        None => read_all(jobs.stream(id, owner).unwrap()),
        Some(stream) => read_all(jobs.stream_only(id, owner, stream).unwrap()),
    }
}

/// True if `pid` is gone or a zombie: either way it runs no more.
pub fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat_fields(&stat).first() == Some(&"Z"),
    }
}

/// The fields of a /proc/<pid>/stat line after `(comm)`: state, ppid, ...
pub fn stat_fields(stat: &str) -> Vec<&str> {
    let after_comm = stat.rfind(')').map_or("", |end| &stat[end + 1..]);
    after_comm.split_whitespace().collect()
}

pub fn wait_until_dead(pid: u32) -> bool {
    let deadline = Instant::now() + BOUND;
    while !is_dead(pid) {
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
    true
}

pub fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
        .collect();
    logs.sort();
    logs
}

/// The environment variable that marks a test's job processes, so they can
/// be counted wherever they are reparented.
pub const MARK: &str = "BOMBSQUAD_JOBS_TEST_MARK";

/// The live processes (not zombies) whose environment holds `MARK=mark`,
/// with their names.
pub fn marked_processes(mark: &str) -> Vec<(u32, String)> {
    let needle = format!("{MARK}={mark}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let marked = environ
            .split(|b| *b == 0)
            .any(|var| var == needle.as_bytes());
        if marked && !is_dead(pid) {
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            found.push((pid, comm.trim().to_owned()));
        }
    }
    found
}
