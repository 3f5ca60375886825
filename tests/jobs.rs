//! Integration tests of `bombsquad::jobs`, with real processes.
//!
//! Every test that could hang has a [`Watchdog`] and uses bounded waits.
//! Tests run in parallel (threads under `cargo test`, processes under
//! nextest); the fd/zombie hygiene test takes [`SERIAL`] exclusively so that
//! no other test's processes or fds are in flight while it counts.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;
use std::time::{Duration, Instant};

use bombsquad::jobs::{
    Command, JobError, JobId, JobInfo, Jobs, OwnerId, Retention, Status, StopType, Stream,
};

const GRACE: Duration = Duration::from_millis(300);
const BOUND: Duration = Duration::from_secs(10);

static SERIAL: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    SERIAL.read().unwrap_or_else(|poison| poison.into_inner())
}

fn exclusive() -> RwLockWriteGuard<'static, ()> {
    SERIAL.write().unwrap_or_else(|poison| poison.into_inner())
}

/// Aborts the whole test process if the test is still running after 60 s.
struct Watchdog(#[allow(dead_code)] mpsc::Sender<()>);

fn watchdog(test: &'static str) -> Watchdog {
    let (done, wait) = mpsc::channel::<()>();
    thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(Duration::from_secs(60)) {
            eprintln!("watchdog: test {test} hung for 60 s, aborting");
            std::process::abort();
        }
    });
    Watchdog(done)
}

fn jobs_in(dir: &Path) -> Jobs {
    Jobs::builder()
        .log_dir(dir)
        .retention(Retention::keep_all())
        .stop_grace(GRACE)
        .build()
        .expect("build Jobs")
}

fn sh(script: &str) -> Command {
    Command::new("sh", ["-c", script])
}

fn finish(jobs: &Jobs, id: JobId, owner: OwnerId) -> JobInfo {
    jobs.wait_timeout(id, owner, BOUND)
        .expect("wait")
        .expect("job did not end within the bound")
}

fn read_all(mut reader: impl Read) -> String {
    let mut text = String::new();
    reader.read_to_string(&mut text).expect("read output");
    text
}

fn output(jobs: &Jobs, id: JobId, owner: OwnerId, only: Option<Stream>) -> String {
    match only {
        None => read_all(jobs.stream(id, owner).unwrap()),
        Some(stream) => read_all(jobs.stream_only(id, owner, stream).unwrap()),
    }
}

/// True if `pid` is gone or a zombie: either way it runs no more.
fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat_fields(&stat).first() == Some(&"Z"),
    }
}

/// The fields of a /proc/<pid>/stat line after `(comm)`: state, ppid, ...
fn stat_fields(stat: &str) -> Vec<&str> {
    let after_comm = stat.rfind(')').map_or("", |end| &stat[end + 1..]);
    after_comm.split_whitespace().collect()
}

fn wait_until_dead(pid: u32) -> bool {
    let deadline = Instant::now() + BOUND;
    while !is_dead(pid) {
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
    true
}

#[test]
fn exit_code_and_each_stream_in_order() {
    let _serial = shared();
    let _watchdog = watchdog("exit_code_and_each_stream_in_order");
    let jobs = Jobs::new().unwrap();
    let me = OwnerId::new_v4();
    let command = sh("echo one; echo two >&2; exit 3");
    let id = jobs.start(command.clone(), me).unwrap();

    let info = finish(&jobs, id, me);
    assert_eq!(info.status, Status::Exited(3));
    assert_eq!((info.id, info.owner, &info.command), (id, me, &command));
    assert!(info.pid > 0);
    assert!(info.ended_at.expect("ended_at is set") >= info.started_at);
    assert_eq!(output(&jobs, id, me, None), "one\ntwo\n");
    assert_eq!(output(&jobs, id, me, Some(Stream::Stdout)), "one\n");
    assert_eq!(output(&jobs, id, me, Some(Stream::Stderr)), "two\n");
    assert_eq!(jobs.query(id, me).unwrap(), info);
}

#[test]
fn env_and_working_directory_reach_the_job() {
    let _serial = shared();
    let _watchdog = watchdog("env_and_working_directory_reach_the_job");
    let dir = tempfile::tempdir().unwrap();
    let jobs = Jobs::new().unwrap();
    let me = OwnerId::new_v4();
    let command = sh("echo \"$GREETING\"; pwd")
        .env("GREETING", "hello")
        .current_dir(dir.path());
    let id = jobs.start(command, me).unwrap();
    assert_eq!(finish(&jobs, id, me).status, Status::Exited(0));
    let expected = format!("hello\n{}\n", dir.path().canonicalize().unwrap().display());
    assert_eq!(output(&jobs, id, me, None), expected);
}

fn stop_sleep(how: StopType) {
    let jobs = Jobs::new().unwrap();
    let me = OwnerId::new_v4();
    let id = jobs.start(Command::new("sleep", ["30"]), me).unwrap();
    assert_eq!(jobs.query(id, me).unwrap().status, Status::Running);
    let asked = Instant::now();
    jobs.stop(id, me, how).unwrap();
    assert_eq!(finish(&jobs, id, me).status, Status::Stopped(how));
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "took {:?}",
        asked.elapsed()
    );
    // Stopping an ended job is Ok and leaves its status alone.
    jobs.stop(id, me, StopType::Kill).unwrap();
    assert_eq!(jobs.query(id, me).unwrap().status, Status::Stopped(how));
}

#[test]
fn stop_term_ends_sleep_as_stopped_term() {
    let _serial = shared();
    let _watchdog = watchdog("stop_term_ends_sleep_as_stopped_term");
    stop_sleep(StopType::Term);
}

#[test]
fn stop_kill_ends_sleep_as_stopped_kill() {
    let _serial = shared();
    let _watchdog = watchdog("stop_kill_ends_sleep_as_stopped_kill");
    stop_sleep(StopType::Kill);
}

#[test]
fn term_ignored_is_killed_after_the_grace() {
    let _serial = shared();
    let _watchdog = watchdog("term_ignored_is_killed_after_the_grace");
    let dir = tempfile::tempdir().unwrap();
    let jobs = jobs_in(dir.path());
    let me = OwnerId::new_v4();
    let id = jobs
        .start(sh("trap '' TERM; echo ready; sleep 30"), me)
        .unwrap();
    let mut lines = BufReader::new(jobs.stream(id, me).unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready"); // the trap is set

    let asked = Instant::now();
    jobs.stop(id, me, StopType::Term).unwrap();
    assert_eq!(
        finish(&jobs, id, me).status,
        Status::Stopped(StopType::Term)
    );
    let took = asked.elapsed();
    assert!(took >= GRACE, "SIGKILL came before the grace: {took:?}");
    assert!(took < GRACE + Duration::from_secs(2), "took {took:?}");
}

/// Starts a job whose shell puts `sleep 300` in the background and prints
/// its pid; returns the job and that grandchild's pid, checked alive.
fn start_with_background_sleep(jobs: &Jobs, me: OwnerId, script: &str) -> (JobId, u32) {
    let id = jobs.start(sh(script), me).unwrap();
    let mut lines = BufReader::new(jobs.stream(id, me).unwrap()).lines();
    let grandchild: u32 = lines.next().unwrap().unwrap().trim().parse().unwrap();
    assert!(
        !is_dead(grandchild),
        "the background sleep should be running"
    );
    (id, grandchild)
}

#[test]
fn stop_kills_the_background_processes_too() {
    let _serial = shared();
    let _watchdog = watchdog("stop_kills_the_background_processes_too");
    let jobs = Jobs::new().unwrap();
    let me = OwnerId::new_v4();
    for how in [StopType::Term, StopType::Kill] {
        let (id, grandchild) = start_with_background_sleep(&jobs, me, "sleep 300 & echo $!; wait");
        jobs.stop(id, me, how).unwrap();
        assert_eq!(finish(&jobs, id, me).status, Status::Stopped(how));
        assert!(
            wait_until_dead(grandchild),
            "background sleep {grandchild} survived {how:?}"
        );
    }
}

#[test]
fn background_processes_do_not_outlive_their_leader() {
    let _serial = shared();
    let _watchdog = watchdog("background_processes_do_not_outlive_their_leader");
    let jobs = Jobs::new().unwrap();
    let me = OwnerId::new_v4();
    let (id, grandchild) = start_with_background_sleep(&jobs, me, "sleep 300 & echo $!; sleep 1");
    assert_eq!(finish(&jobs, id, me).status, Status::Exited(0));
    assert!(
        wait_until_dead(grandchild),
        "background sleep {grandchild} survived"
    );
}

#[test]
fn killed_by_a_foreign_signal_is_signaled() {
    let _serial = shared();
    let _watchdog = watchdog("killed_by_a_foreign_signal_is_signaled");
    let jobs = Jobs::new().unwrap();
    let me = OwnerId::new_v4();
    let id = jobs.start(sh("kill -9 $$"), me).unwrap();
    assert_eq!(finish(&jobs, id, me).status, Status::Signaled(9));
}

#[test]
fn follower_sees_each_line_once_in_order_then_eof() {
    let _serial = shared();
    let _watchdog = watchdog("follower_sees_each_line_once_in_order_then_eof");
    let jobs = Jobs::new().unwrap();
    let me = OwnerId::new_v4();
    let script = "sleep 0.3; for i in 1 2 3 4 5; do echo $i; sleep 0.05; done";
    let id = jobs.start(sh(script), me).unwrap();
    let mut follower = BufReader::new(jobs.stream(id, me).unwrap());

    let mut first = String::new();
    follower.read_line(&mut first).unwrap();
    assert_eq!(first, "1\n");
    // Got a line while the job still runs: the reader follows live output.
    assert_eq!(jobs.query(id, me).unwrap().status, Status::Running);
    let rest = read_all(follower); // returns at EOF, i.e. after the end
    assert_eq!(rest, "2\n3\n4\n5\n");
    assert_eq!(jobs.query(id, me).unwrap().status, Status::Exited(0));
}

#[test]
fn concurrent_readers_and_a_late_reader_get_everything() {
    let _serial = shared();
    let _watchdog = watchdog("concurrent_readers_and_a_late_reader_get_everything");
    let jobs = Jobs::new().unwrap();
    let me = OwnerId::new_v4();
    let id = jobs
        .start(sh("for i in $(seq 1 2000); do echo line $i; done"), me)
        .unwrap();
    let expected: String = (1..=2000).map(|i| format!("line {i}\n")).collect();

    let readers: Vec<_> = (0..4).map(|_| jobs.stream(id, me).unwrap()).collect();
    let texts = thread::scope(|scope| {
        let handles: Vec<_> = readers
            .into_iter()
            .map(|r| scope.spawn(|| read_all(r)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    for text in texts {
        assert_eq!(text, expected);
    }
    assert_eq!(finish(&jobs, id, me).status, Status::Exited(0));
    assert_eq!(output(&jobs, id, me, None), expected);
    assert_eq!(output(&jobs, id, me, Some(Stream::Stderr)), "");
}

#[test]
fn fifty_concurrent_jobs_each_get_their_own_output() {
    let _serial = shared();
    let _watchdog = watchdog("fifty_concurrent_jobs_each_get_their_own_output");
    let jobs = Jobs::new().unwrap();
    let me = OwnerId::new_v4();
    let ids: Vec<JobId> = (0..50)
        .map(|n| {
            jobs.start(sh(&format!("echo out {n}; echo err {n} >&2")), me)
                .unwrap()
        })
        .collect();
    for (n, id) in ids.iter().enumerate() {
        assert_eq!(finish(&jobs, *id, me).status, Status::Exited(0));
        assert_eq!(output(&jobs, *id, me, None), format!("out {n}\nerr {n}\n"));
        assert_eq!(
            output(&jobs, *id, me, Some(Stream::Stdout)),
            format!("out {n}\n")
        );
    }
    assert_eq!(jobs.list(me).len(), 50);
}

#[test]
fn another_owner_cannot_see_the_job() {
    let _serial = shared();
    let _watchdog = watchdog("another_owner_cannot_see_the_job");
    let jobs = Jobs::new().unwrap();
    let (me, stranger) = (OwnerId::new_v4(), OwnerId::new_v4());
    let id = jobs.start(Command::new("sleep", ["30"]), me).unwrap();
    let missing = jobs.query(JobId::new_v4(), me).unwrap_err().to_string();

    let errors = [
        jobs.query(id, stranger).unwrap_err(),
        jobs.stop(id, stranger, StopType::Kill).unwrap_err(),
        jobs.stream(id, stranger).unwrap_err(),
        jobs.stream_only(id, stranger, Stream::Stdout).unwrap_err(),
        jobs.wait_timeout(id, stranger, BOUND).unwrap_err(),
    ];
    for error in errors {
        assert!(
            matches!(error, JobError::NotFound { id: asked } if asked == id),
            "{error:?}"
        );
        assert_eq!(error.to_string(), missing);
    }
    assert_eq!(jobs.list(stranger), vec![]);
    assert_eq!(jobs.query(id, me).unwrap().status, Status::Running);
}

#[test]
fn bad_commands_are_errors_and_create_no_job() {
    let _serial = shared();
    let _watchdog = watchdog("bad_commands_are_errors_and_create_no_job");
    let dir = tempfile::tempdir().unwrap();
    let not_executable = dir.path().join("script.sh");
    std::fs::write(&not_executable, "#!/bin/sh\necho hi\n").unwrap();
    let jobs = jobs_in(&dir.path().join("logs"));
    let me = OwnerId::new_v4();
    let none: [&str; 0] = [];

    let missing = jobs.start(Command::new("/no/such/program", none), me);
    assert!(
        matches!(&missing, Err(JobError::ProgramNotFound { program }) if program == "/no/such/program")
    );
    let unknown = jobs.start(Command::new("no-such-program-bombsquad", none), me);
    assert!(
        matches!(unknown, Err(JobError::ProgramNotFound { .. })),
        "{unknown:?}"
    );
    let empty = jobs.start(Command::new("", ["x"]), me);
    assert!(matches!(empty, Err(JobError::EmptyProgram {})), "{empty:?}");
    let denied = jobs.start(Command::new(not_executable.to_str().unwrap(), none), me);
    assert!(
        matches!(denied, Err(JobError::NotExecutable { .. })),
        "{denied:?}"
    );
    let bad_dir = jobs.start(Command::new("true", none).current_dir("/no/such/dir"), me);
    assert!(
        matches!(bad_dir, Err(JobError::BadWorkingDir { .. })),
        "{bad_dir:?}"
    );

    assert_eq!(jobs.list(me), vec![]);
    assert_eq!(log_files(jobs.log_dir()), Vec::<PathBuf>::new());
}

fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
        .collect();
    logs.sort();
    logs
}

#[test]
fn a_new_jobs_over_the_same_dir_lists_finished_jobs() {
    let _serial = shared();
    let _watchdog = watchdog("a_new_jobs_over_the_same_dir_lists_finished_jobs");
    let dir = tempfile::tempdir().unwrap();
    let me = OwnerId::new_v4();
    let (exited, dropped) = {
        let first = jobs_in(dir.path());
        let in_use = Jobs::builder().log_dir(dir.path()).build();
        assert!(
            matches!(in_use, Err(JobError::DirInUse { .. })),
            "{in_use:?}"
        );
        let exited = first.start(sh("echo kept; exit 3"), me).unwrap();
        finish(&first, exited, me);
        // Still running when `first` is dropped: the drop kills it.
        let dropped = first.start(sh("echo running; sleep 30"), me).unwrap();
        let mut lines = BufReader::new(first.stream(dropped, me).unwrap()).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "running");
        (exited, dropped)
    };

    let second = jobs_in(dir.path());
    let listed = second.list(me);
    let statuses: Vec<(JobId, Status)> = listed.iter().map(|info| (info.id, info.status)).collect();
    assert_eq!(
        statuses,
        [
            (exited, Status::Exited(3)),
            (dropped, Status::Stopped(StopType::Kill))
        ]
    );
    assert_eq!(output(&second, exited, me, None), "kept\n");
    assert_eq!(
        output(&second, dropped, me, Some(Stream::Stdout)),
        "running\n"
    );
    assert_eq!(second.list(OwnerId::new_v4()), vec![]);
}

const DYING_SUPERVISOR_DIR: &str = "BOMBSQUAD_JOBS_TEST_DYING_SUPERVISOR_DIR";
const DYING_SUPERVISOR_OWNER: &str = "BOMBSQUAD_JOBS_TEST_DYING_SUPERVISOR_OWNER";

/// Not a test on its own (it returns at once): `a_job_whose_supervisor_died_is_lost`
/// runs this test binary again with the variables above set, to get a
/// supervisor process that really dies while its job runs.
#[test]
fn dying_supervisor_helper() {
    let (Ok(dir), Ok(owner)) = (
        std::env::var(DYING_SUPERVISOR_DIR),
        std::env::var(DYING_SUPERVISOR_OWNER),
    ) else {
        return;
    };
    let jobs = jobs_in(Path::new(&dir));
    let owner: OwnerId = owner.parse().unwrap();
    jobs.start(Command::new("sleep", ["30"]), owner).unwrap();
    // Die as a crashed supervisor does: no Drop, nothing recorded after the start.
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL).unwrap();
    unreachable!("SIGKILL cannot be caught");
}

#[test]
fn a_job_whose_supervisor_died_is_lost() {
    let _serial = shared();
    let _watchdog = watchdog("a_job_whose_supervisor_died_is_lost");
    let dir = tempfile::tempdir().unwrap();
    let me = OwnerId::new_v4();
    // A real second process, because a supervisor dying is what we simulate;
    // `mem::forget` would keep this process's directory lock held instead.
    let helper = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["dying_supervisor_helper", "--exact", "--nocapture"])
        .env(DYING_SUPERVISOR_DIR, dir.path())
        .env(DYING_SUPERVISOR_OWNER, me.to_string())
        .output()
        .unwrap();
    assert_eq!(helper.status.signal(), Some(9), "{helper:?}");

    let jobs = jobs_in(dir.path());
    let listed = jobs.list(me);
    assert_eq!(listed.len(), 1);
    let lost = &listed[0];
    assert_eq!((lost.status, lost.ended_at), (Status::Lost, None));
    assert_eq!(jobs.query(lost.id, me).unwrap().status, Status::Lost);
    // A lost job is never signalled (its pid may be reused): stop is a no-op.
    jobs.stop(lost.id, me, StopType::Kill).unwrap();
    assert_eq!(jobs.query(lost.id, me).unwrap().status, Status::Lost);
    assert_eq!(output(&jobs, lost.id, me, None), "");
    kill_orphaned_sleep(lost.pid);
}

/// The dead helper's `sleep 30` lives on, orphaned; end it if it is still ours.
fn kill_orphaned_sleep(pid: u32) {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if cmdline.starts_with(b"sleep\0") {
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    }
}

#[test]
fn retention_by_size_spares_running_jobs() {
    let _serial = shared();
    let _watchdog = watchdog("retention_by_size_spares_running_jobs");
    let dir = tempfile::tempdir().unwrap();
    let jobs = Jobs::builder()
        .log_dir(dir.path())
        .retention(Retention::keep_all().max_total_bytes(15_000))
        .build()
        .unwrap();
    let me = OwnerId::new_v4();
    // A running job whose log alone is over the limit.
    let big = jobs
        .start(
            sh("head -c 20000 /dev/zero | tr '\\0' x; exec sleep 30"),
            me,
        )
        .unwrap();
    let mut reader = jobs.stream(big, me).unwrap();
    let mut first = vec![0; 20_000];
    reader.read_exact(&mut first).unwrap();

    let small = jobs.start(sh("echo small"), me).unwrap();
    finish(&jobs, small, me); // its end applies the retention
    assert!(matches!(
        jobs.query(small, me),
        Err(JobError::NotFound { .. })
    ));
    assert!(!jobs.log_dir().join(format!("{small}.log")).exists());
    assert_eq!(jobs.apply_retention().unwrap(), 0);
    assert_eq!(jobs.query(big, me).unwrap().status, Status::Running);
    assert_eq!(
        log_files(jobs.log_dir()),
        [jobs.log_dir().join(format!("{big}.log"))]
    );

    jobs.stop(big, me, StopType::Kill).unwrap();
    finish(&jobs, big, me);
    // Once finished, the big one goes too: it alone is over the limit.
    assert!(matches!(
        jobs.query(big, me),
        Err(JobError::NotFound { .. })
    ));
    assert_eq!(read_all(reader).len(), 0, "an open reader keeps working");
}

#[test]
fn retention_by_age_removes_old_finished_jobs() {
    let _serial = shared();
    let _watchdog = watchdog("retention_by_age_removes_old_finished_jobs");
    let dir = tempfile::tempdir().unwrap();
    let me = OwnerId::new_v4();
    let old = {
        let jobs = jobs_in(dir.path());
        let old = jobs.start(sh("echo old"), me).unwrap();
        finish(&jobs, old, me);
        old
    };
    thread::sleep(Duration::from_millis(300));
    let by_age = Retention::keep_all().max_age(Duration::from_millis(200));
    let jobs = Jobs::builder()
        .log_dir(dir.path())
        .retention(by_age)
        .build()
        .unwrap();
    // Applied at construction: the old job is gone, row and log.
    assert_eq!(jobs.list(me), vec![]);
    assert_eq!(log_files(dir.path()), Vec::<PathBuf>::new());
    assert!(matches!(
        jobs.query(old, me),
        Err(JobError::NotFound { .. })
    ));

    let running = jobs.start(Command::new("sleep", ["30"]), me).unwrap();
    let recent = jobs.start(sh("echo recent"), me).unwrap();
    finish(&jobs, recent, me);
    thread::sleep(Duration::from_millis(300));
    assert_eq!(jobs.apply_retention().unwrap(), 1); // `recent`, now old
    let listed: Vec<JobId> = jobs.list(me).iter().map(|info| info.id).collect();
    assert_eq!(listed, [running]);
}

/// Open fds of this process, with what they point to.
fn open_fds() -> BTreeMap<String, PathBuf> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let target = std::fs::read_link(entry.path()).ok()?;
            Some((entry.file_name().to_string_lossy().into_owned(), target))
        })
        .collect()
}

/// (pid, state) of every process whose parent is this process.
fn children() -> Vec<(u32, String)> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let fields = stat_fields(&stat);
            (fields.get(1) == Some(&me.as_str())).then(|| (pid, fields[0].to_owned()))
        })
        .collect()
}

#[test]
fn no_zombies_and_no_leaked_fds() {
    let _serial = exclusive();
    let _watchdog = watchdog("no_zombies_and_no_leaked_fds");
    let dir = tempfile::tempdir().unwrap();
    let me = OwnerId::new_v4();
    // Warm up once, so anything opened lazily for good is already open.
    drop(jobs_in(&dir.path().join("warm-up")));
    let fds_before = open_fds();
    {
        let jobs = jobs_in(&dir.path().join("jobs"));
        let done = jobs.start(sh("echo out; echo err >&2"), me).unwrap();
        let stopped = jobs.start(sh("sleep 300 & wait"), me).unwrap();
        let killed = jobs.start(Command::new("sleep", ["30"]), me).unwrap();
        let _left_running = jobs.start(Command::new("sleep", ["30"]), me).unwrap();
        let _refused = jobs
            .start(Command::new("/no/such/program", ["x"]), me)
            .unwrap_err();
        let _open_reader = jobs.stream(killed, me).unwrap();
        jobs.stop(stopped, me, StopType::Term).unwrap();
        jobs.stop(killed, me, StopType::Kill).unwrap();
        for id in [done, stopped, killed] {
            finish(&jobs, id, me);
            read_all(jobs.stream(id, me).unwrap());
        }
    } // dropping Jobs kills and reaps `_left_running`
    assert_eq!(children(), vec![], "children (pid, state) left behind");
    assert_eq!(open_fds(), fds_before, "fds leaked");
}
