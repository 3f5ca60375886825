//! Integration tests of `bombsquad::jobs` with real processes: exit
//! statuses, streams, stopping, owners, bad commands. Every test that could
//! hang has a watchdog and uses bounded waits.

mod jobs_support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use bombsquad::jobs::{Command, JobError, JobId, Jobs, OwnerId, Status, StopType, Stream};

use jobs_support::*;

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
    // Two pipes: the order between the streams is not promised (see
    // `merged_output_keeps_the_order_of_alternating_writes` for that).
    let merged = output(&jobs, id, me, None);
    assert!(
        merged == "one\ntwo\n" || merged == "two\none\n",
        "{merged:?}"
    );
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

#[test]
fn a_reader_up_to_now_ends_while_the_job_runs() {
    let _serial = shared();
    let _watchdog = watchdog("a_reader_up_to_now_ends_while_the_job_runs");
    let jobs = Jobs::new().unwrap();
    let me = OwnerId::new_v4();
    let id = jobs
        .start(sh("echo first; echo second >&2; exec sleep 30"), me)
        .unwrap();
    // Follow until both lines are in the log, then take a snapshot.
    let mut follower = BufReader::new(jobs.stream(id, me).unwrap());
    let mut line = String::new();
    for _ in 0..2 {
        follower.read_line(&mut line).unwrap();
    }
    let snapshot = read_all(jobs.stream(id, me).unwrap().up_to_now().unwrap());
    assert_eq!(snapshot.lines().count(), 2, "{snapshot:?}");
    assert!(snapshot.contains("first\n") && snapshot.contains("second\n"));
    let only_stdout = jobs
        .stream_only(id, me, Stream::Stdout)
        .unwrap()
        .up_to_now()
        .unwrap();
    assert_eq!(read_all(only_stdout), "first\n");
    assert_eq!(
        jobs.query(id, me).unwrap().status,
        Status::Running,
        "it returned without waiting"
    );
    jobs.stop(id, me, StopType::Kill).unwrap();
    assert_eq!(
        finish(&jobs, id, me).status,
        Status::Stopped(StopType::Kill)
    );
}

#[test]
fn merged_output_keeps_the_order_of_alternating_writes() {
    let _serial = shared();
    let _watchdog = watchdog("merged_output_keeps_the_order_of_alternating_writes");
    let jobs = Jobs::new().unwrap();
    let me = OwnerId::new_v4();
    let script = "i=0; while [ $i -lt 500 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done";
    let id = jobs.start(sh(script).merged_output(true), me).unwrap();
    assert_eq!(finish(&jobs, id, me).status, Status::Exited(0));
    let expected: String = (0..500).map(|i| format!("out{i}\nerr{i}\n")).collect();
    assert_eq!(output(&jobs, id, me, None), expected);
    // One pipe: everything is logged as stdout.
    assert_eq!(output(&jobs, id, me, Some(Stream::Stdout)), expected);
    assert_eq!(output(&jobs, id, me, Some(Stream::Stderr)), "");
}

#[test]
fn two_pipes_keep_the_order_within_each_stream() {
    let _serial = shared();
    let _watchdog = watchdog("two_pipes_keep_the_order_within_each_stream");
    let jobs = Jobs::new().unwrap();
    let me = OwnerId::new_v4();
    let script = "i=0; while [ $i -lt 500 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done";
    let id = jobs.start(sh(script), me).unwrap();
    assert_eq!(finish(&jobs, id, me).status, Status::Exited(0));
    let outs: String = (0..500).map(|i| format!("out{i}\n")).collect();
    let errs: String = (0..500).map(|i| format!("err{i}\n")).collect();
    assert_eq!(output(&jobs, id, me, Some(Stream::Stdout)), outs);
    assert_eq!(output(&jobs, id, me, Some(Stream::Stderr)), errs);
    let mut merged: Vec<String> = output(&jobs, id, me, None)
        .lines()
        .map(str::to_owned)
        .collect();
    merged.sort();
    let mut all: Vec<String> = outs
        .lines()
        .chain(errs.lines())
        .map(str::to_owned)
        .collect();
    all.sort();
    assert_eq!(merged, all);
}

#[test]
fn a_job_over_its_memory_limit_ends_out_of_memory() {
    let _serial = shared();
    let _watchdog = watchdog("a_job_over_its_memory_limit_ends_out_of_memory");
    let jobs = Jobs::new().unwrap();
    let me = OwnerId::new_v4();
    let hog =
        sh("x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived").memory_limit(32 << 20);
    let id = jobs.start(hog, me).unwrap();
    let info = finish(&jobs, id, me);
    assert_eq!(info.status, Status::OutOfMemory);
    assert_eq!(info.status.to_string(), "out of memory");
    assert_eq!(output(&jobs, id, me, Some(Stream::Stdout)), "");
}

#[test]
fn a_pids_limit_refuses_forks_beyond_it() {
    let _serial = shared();
    let _watchdog = watchdog("a_pids_limit_refuses_forks_beyond_it");
    let jobs = Jobs::new().unwrap();
    let me = OwnerId::new_v4();
    // The shell and three sleeps fit in 4; the fourth sleep does not.
    let script = "for i in 1 2 3 4; do sleep 0.5 & done; wait";
    let id = jobs.start(sh(script).pids_limit(4), me).unwrap();
    finish(&jobs, id, me);
    let stderr = output(&jobs, id, me, Some(Stream::Stderr));
    assert!(stderr.contains("Cannot fork"), "{stderr:?}");
}

#[test]
fn a_cpu_limit_is_set_in_the_jobs_cgroup_which_goes_with_the_job() {
    let _serial = shared();
    let _watchdog = watchdog("a_cpu_limit_is_set_in_the_jobs_cgroup_which_goes_with_the_job");
    let jobs = Jobs::new().unwrap();
    let me = OwnerId::new_v4();
    let id = jobs
        .start(Command::new("sleep", ["30"]).cpu_limit(0.25), me)
        .unwrap();
    let running = jobs.query(id, me).unwrap();
    let quota = running.cgroups.iter().find_map(|dir| {
        std::fs::read_to_string(dir.join("cpu.max"))
            .or_else(|_| std::fs::read_to_string(dir.join("cpu.cfs_quota_us")))
            .ok()
    });
    assert!(
        matches!(quota.as_deref(), Some("25000 100000\n" | "25000\n")),
        "{quota:?} in {:?}",
        running.cgroups
    );
    let pid = running.pid.to_string();
    for dir in &running.cgroups {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
        assert_eq!(procs.lines().collect::<Vec<_>>(), [pid.as_str()], "{dir:?}");
    }
    jobs.stop(id, me, StopType::Kill).unwrap();
    let ended = finish(&jobs, id, me);
    assert_eq!(ended.cgroups, Vec::<PathBuf>::new());
    assert!(
        running.cgroups.iter().all(|dir| !dir.exists()),
        "{:?}",
        running.cgroups
    );
}

#[test]
fn a_zero_limit_is_refused_before_anything_runs() {
    let _serial = shared();
    let jobs = Jobs::new().unwrap();
    let me = OwnerId::new_v4();
    let error = jobs
        .start(
            Command::new("true", Vec::<String>::new()).memory_limit(0),
            me,
        )
        .unwrap_err();
    assert!(
        matches!(
            error,
            JobError::BadLimit {
                limit: "memory",
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "the memory limit is invalid: it must be greater than zero"
    );
    assert_eq!(jobs.list(me), vec![]);
}
