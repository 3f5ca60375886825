//! Integration tests of `bombsquad::jobs`' persistent side: the jobs table
//! across `Jobs` instances, jobs whose supervisor died, retention, and
//! process hygiene (no zombies, no leaked fds).

mod jobs_support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use bombsquad::jobs::{
    Command, JobError, JobId, Jobs, OwnerId, Retention, Status, StopType, Stream,
};

use jobs_support::*;

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
/// Jobs the dying supervisor starts, each a shell with two background sleeps.
const DYING_JOBS: usize = 11;

/// Not a test on its own (it returns at once): `jobs_die_with_their_supervisor`
/// runs this test binary again with the variables above set, to get a
/// supervisor process that really dies while its jobs run.
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
    for _ in 0..DYING_JOBS {
        let job = sh("sleep 30 & sleep 30 & echo started; wait").env(MARK, owner.to_string());
        let id = jobs.start(job, owner).unwrap();
        let mut started = jobs.stream(id, owner).unwrap();
        let mut line = [0u8; 8];
        std::io::Read::read_exact(&mut started, &mut line).unwrap();
    }
    // Die as a crashed supervisor does: no Drop, nothing recorded after the start.
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL).unwrap();
    unreachable!("SIGKILL cannot be caught");
}

fn wait_for_marked(mark: &str, done: impl Fn(&[(u32, String)]) -> bool) -> Vec<(u32, String)> {
    let deadline = Instant::now() + BOUND;
    loop {
        let found = marked_processes(mark);
        if done(&found) || Instant::now() > deadline {
            return found;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn jobs_die_with_their_supervisor() {
    let _serial = shared();
    let _watchdog = watchdog("jobs_die_with_their_supervisor");
    let dir = tempfile::tempdir().unwrap();
    let me = OwnerId::new_v4();
    let mark = me.to_string();
    // A real second process, because a supervisor dying is what we test;
    // `mem::forget` would keep this process's directory lock held instead.
    let helper = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["dying_supervisor_helper", "--exact", "--nocapture"])
        .env(DYING_SUPERVISOR_DIR, dir.path())
        .env(DYING_SUPERVISOR_OWNER, &mark)
        .output()
        .unwrap();
    assert_eq!(helper.status.signal(), Some(9), "{helper:?}");

    // Every leader (the shell) died with its supervisor: parent-death signal.
    let left = wait_for_marked(&mark, |found| found.iter().all(|(_, comm)| comm != "sh"));
    assert!(
        left.iter().all(|(_, comm)| comm != "sh"),
        "leaders alive: {left:?}"
    );

    // The next supervisor over the directory kills the rest through the cgroups.
    let jobs = jobs_in(dir.path());
    let left = wait_for_marked(&mark, <[_]>::is_empty);
    assert_eq!(left, vec![], "job processes survived the reopen");
    let listed = jobs.list(me);
    assert_eq!(listed.len(), DYING_JOBS);
    for lost in &listed {
        assert_eq!((lost.status, lost.ended_at), (Status::Lost, None));
        assert!(!lost.cgroups.is_empty(), "no cgroup recorded: {lost:?}");
        assert!(lost.cgroups.iter().all(|dir| !dir.exists()), "{lost:?}");
        // Stop on a lost job ends what is left (nothing by now) and keeps the status.
        jobs.stop(lost.id, me, StopType::Kill).unwrap();
        assert_eq!(jobs.query(lost.id, me).unwrap().status, Status::Lost);
        assert_eq!(output(&jobs, lost.id, me, None), "started\n");
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
