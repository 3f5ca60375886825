//! The `bombsquad-jobs` service and client, each invocation a process of its
//! own, as a user runs them. Every wait is bounded, and a watchdog aborts a
//! test that hangs anyway.

mod common;
mod jobs_support;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use jobs_support::{BOUND, MARK, marked_processes, shared, watchdog};

const BIN: &str = env!("CARGO_BIN_EXE_bombsquad-jobs");

/// A `bombsquad-jobs serve` in its own directory; SIGTERMed on drop.
struct Service {
    child: Child,
    dir: PathBuf,
}

impl Service {
    fn start(dir: &Path, extra: &[&str]) -> Service {
        Service::start_with(Command::new(BIN), dir, extra)
    }

    /// Starts the service with `command`, which runs `BIN` (e.g. under `setpriv`).
    fn start_with(mut command: Command, dir: &Path, extra: &[&str]) -> Service {
        let child = command
            .arg("--dir")
            .arg(dir)
            .arg("serve")
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let service = Service {
            child,
            dir: dir.to_owned(),
        };
        // A socket file may be left by a killed service: wait for a listener.
        let deadline = Instant::now() + BOUND;
        while UnixStream::connect(dir.join("jobs.sock")).is_err() {
            assert!(
                Instant::now() < deadline,
                "the service did not start listening"
            );
            thread::sleep(Duration::from_millis(10));
        }
        service
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    /// Waits (bounded) for the service to exit; its exit status and stderr.
    fn wait(&mut self) -> (std::process::ExitStatus, String) {
        let status = wait_bounded(&mut self.child);
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            pipe.read_to_string(&mut stderr).unwrap();
        }
        (status, stderr)
    }

    fn cli(&self, args: &[&str]) -> Output {
        cli(&self.dir, args)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.signal(nix::sys::signal::Signal::SIGTERM);
            let _ = wait_bounded(&mut self.child);
        }
    }
}

fn wait_bounded(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + BOUND;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process {} did not exit within {BOUND:?}", child.id());
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Runs the client with `args` against the service in `dir`, bounded.
fn cli(dir: &Path, args: &[&str]) -> Output {
    cli_with(Command::new(BIN), dir, args)
}

fn cli_with(mut command: Command, dir: &Path, args: &[&str]) -> Output {
    let mut child = command
        .arg("--dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut bytes = Vec::new();
        stdout.read_to_end(&mut bytes).unwrap();
        bytes
    });
    let mut err = String::new();
    stderr.read_to_string(&mut err).unwrap();
    let status = wait_bounded(&mut child);
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.into_bytes(),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The client's exit code, stdout and stderr.
fn ran(output: &Output) -> (Option<i32>, String, String) {
    (
        output.status.code(),
        text(&output.stdout),
        text(&output.stderr),
    )
}

/// `start` and the job id it printed.
fn start(service: &Service, args: &[&str]) -> String {
    let mut all = vec!["start"];
    all.extend_from_slice(args);
    let output = service.cli(&all);
    let (code, stdout, stderr) = ran(&output);
    assert_eq!(code, Some(0), "start failed: {stderr}");
    let id = stdout.trim_end().to_owned();
    assert_eq!(stdout, format!("{id}\n"), "the id alone on stdout");
    assert_eq!(id.len(), 36, "a UUID: {id:?}");
    id
}

fn status(service: &Service, id: &str) -> String {
    let output = service.cli(&["status", id]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    text(&output.stdout).trim_end().to_owned()
}

/// Polls `status` until the job is no longer running.
fn final_status(service: &Service, id: &str) -> String {
    let deadline = Instant::now() + BOUND;
    loop {
        let now = status(service, id);
        if now != "running" || Instant::now() > deadline {
            return now;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Exit 1, nothing on stdout, and exactly `no such job` on stderr.
fn assert_no_such_job(output: &Output, args: &[&str]) {
    let expected = (
        Some(1),
        String::new(),
        "bombsquad-jobs: no such job\n".into(),
    );
    assert_eq!(ran(output), expected, "{args:?}");
}

fn service_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn with_no_service_the_client_exits_2_and_says_how_to_start_one() {
    let _serial = shared();
    let _watchdog = watchdog("with_no_service_the_client_exits_2_and_says_how_to_start_one");
    let dir = service_dir();
    let (code, stdout, stderr) = ran(&cli(dir.path(), &["list"]));
    assert_eq!((code, stdout.as_str()), (Some(2), ""));
    assert!(stderr.contains("the service is not running"), "{stderr}");
    let how = format!("bombsquad-jobs --dir {} serve", dir.path().display());
    assert!(stderr.contains(&how), "{stderr}");
}

#[test]
fn a_job_outlives_its_start_and_is_followed_from_another_invocation() {
    let _serial = shared();
    let _watchdog = watchdog("a_job_outlives_its_start_and_is_followed_from_another_invocation");
    let dir = service_dir();
    let service = Service::start(dir.path(), &[]);
    let id = start(
        &service,
        &[
            "--",
            "sh",
            "-c",
            "echo one; sleep 0.3; echo two >&2; exit 3",
        ],
    );
    assert_eq!(status(&service, &id), "running");
    let followed = service.cli(&["logs", "--follow", &id]);
    assert_eq!(
        ran(&followed),
        (Some(0), "one\ntwo\n".into(), String::new())
    );
    assert_eq!(status(&service, &id), "exited with code 3");
    assert_eq!(text(&service.cli(&["logs", &id]).stdout), "one\ntwo\n");
    let listed = text(&service.cli(&["list"]).stdout);
    assert!(
        listed.starts_with(&format!("{id}  exited with code 3")),
        "{listed}"
    );
    assert_eq!(listed.lines().count(), 1);
}

#[test]
fn an_unknown_id_is_no_such_job_with_exit_1() {
    let _serial = shared();
    let _watchdog = watchdog("an_unknown_id_is_no_such_job_with_exit_1");
    let dir = service_dir();
    let service = Service::start(dir.path(), &[]);
    let unknown = "00000000-0000-4000-8000-000000000000";
    for args in [
        vec!["status", unknown],
        vec!["logs", unknown],
        vec!["logs", "--follow", unknown],
        vec!["stop", unknown],
    ] {
        assert_no_such_job(&service.cli(&args), &args);
    }
}

#[test]
fn stop_term_and_stop_kill() {
    let _serial = shared();
    let _watchdog = watchdog("stop_term_and_stop_kill");
    let dir = service_dir();
    let service = Service::start(dir.path(), &[]);
    let term = start(&service, &["--", "sleep", "30"]);
    let kill = start(
        &service,
        &["--", "sh", "-c", "trap '' TERM; sleep 30 & wait"],
    );
    assert_eq!(ran(&service.cli(&["stop", &term])).1, "stopped (term)\n");
    assert_eq!(status(&service, &term), "stopped (term)");
    assert_eq!(
        ran(&service.cli(&["stop", "--kill", &kill])).1,
        "stopped (kill)\n"
    );
    assert_eq!(status(&service, &kill), "stopped (kill)");
}

#[test]
fn five_followers_each_get_every_byte_in_order() {
    let _serial = shared();
    let _watchdog = watchdog("five_followers_each_get_every_byte_in_order");
    let dir = service_dir();
    let service = Service::start(dir.path(), &[]);
    // Binary output: every byte value, in a pattern that shows reordering.
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let file = dir.path().join("data.bin");
    std::fs::write(&file, &data).unwrap();
    let script = format!("sleep 0.3; cat {0}; sleep 0.2; cat {0}", file.display());
    let id = start(&service, &["--", "sh", "-c", &script]);
    let followers: Vec<_> = (0..5)
        .map(|_| {
            let (dir, id) = (dir.path().to_owned(), id.clone());
            thread::spawn(move || cli(&dir, &["logs", "--follow", &id]))
        })
        .collect();
    let expected = [data.as_slice(), data.as_slice()].concat();
    for follower in followers {
        let output = follower.join().unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
        assert!(
            output.stdout == expected,
            "a follower got {} bytes",
            output.stdout.len()
        );
    }
    assert_eq!(status(&service, &id), "exited with code 0");
}

#[test]
fn a_job_over_its_memory_limit_is_out_of_memory() {
    let _serial = shared();
    let _watchdog = watchdog("a_job_over_its_memory_limit_is_out_of_memory");
    let dir = service_dir();
    let service = Service::start(dir.path(), &[]);
    // The shell holds 200 MB in a variable: a real allocation over 32 MiB.
    let hog = "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived";
    let id = start(&service, &["--memory", "32M", "--", "sh", "-c", hog]);
    assert_eq!(final_status(&service, &id), "out of memory");
    assert_eq!(text(&service.cli(&["logs", &id]).stdout), "");
    let json = text(&service.cli(&["status", "--json", &id]).stdout);
    let job: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(job["state"], "out_of_memory");
    assert_eq!(job["memory_bytes"], 32 << 20);
}

#[test]
fn json_output_parses() {
    let _serial = shared();
    let _watchdog = watchdog("json_output_parses");
    let dir = service_dir();
    let service = Service::start(dir.path(), &[]);
    let id = start(
        &service,
        &["--pids", "64", "--cpus", "0.5", "--", "sh", "-c", "exit 7"],
    );
    assert_eq!(final_status(&service, &id), "exited with code 7");
    let job: serde_json::Value =
        serde_json::from_slice(&service.cli(&["status", "--json", &id]).stdout).unwrap();
    assert_eq!(job["id"], id.as_str());
    assert_eq!(job["state"], "exited");
    assert_eq!(job["status"], "exited with code 7");
    assert_eq!(job["exit_code"], 7);
    assert_eq!(job["program"], "sh");
    assert_eq!(job["args"], serde_json::json!(["-c", "exit 7"]));
    assert_eq!(
        (job["pids_limit"].as_u64(), job["millicpus"].as_u64()),
        (Some(64), Some(500))
    );
    let list: serde_json::Value =
        serde_json::from_slice(&service.cli(&["list", "--json"]).stdout).unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(list[0], job);
}

#[test]
fn merged_output_keeps_the_order_of_writes_to_both_streams() {
    let _serial = shared();
    let _watchdog = watchdog("merged_output_keeps_the_order_of_writes_to_both_streams");
    let dir = service_dir();
    let service = Service::start(dir.path(), &[]);
    let script = "i=0; while [ $i -lt 300 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done";
    let id = start(&service, &["--merge-output", "--", "sh", "-c", script]);
    let followed = text(&service.cli(&["logs", "--follow", &id]).stdout);
    let expected: String = (0..300).map(|i| format!("out{i}\nerr{i}\n")).collect();
    assert_eq!(followed, expected);
}

#[test]
fn sigterm_to_the_service_stops_its_jobs() {
    let _serial = shared();
    let _watchdog = watchdog("sigterm_to_the_service_stops_its_jobs");
    let dir = service_dir();
    let mut service = Service::start(dir.path(), &[]);
    let ids = [
        start(&service, &["--", "sleep", "30"]),
        start(&service, &["--", "sh", "-c", "sleep 30 & wait"]),
    ];
    service.signal(nix::sys::signal::Signal::SIGTERM);
    let (exit, stderr) = service.wait();
    assert_eq!(exit.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("SIGTERM, stopping the running jobs"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("jobs.sock").exists(),
        "the socket is removed"
    );

    let again = Service::start(dir.path(), &[]);
    for id in &ids {
        assert_eq!(status(&again, id), "stopped (term)");
    }
}

#[test]
fn sigkill_of_the_service_leaves_no_job_process() {
    let _serial = shared();
    let _watchdog = watchdog("sigkill_of_the_service_leaves_no_job_process");
    let dir = service_dir();
    let mut service = Service::start(dir.path(), &[]);
    let mark = uuid_like();
    let script = "sleep 30 & sleep 30 & echo started; wait";
    let mut ids = Vec::new();
    for _ in 0..5 {
        let mut command = Command::new(BIN);
        command.env(MARK, &mark);
        let output = cli_with(command, dir.path(), &["start", "--", "sh", "-c", script]);
        assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
        ids.push(text(&output.stdout).trim_end().to_owned());
    }
    let deadline = Instant::now() + BOUND;
    while marked_processes(&mark).len() < 15 {
        assert!(Instant::now() < deadline, "the jobs did not all start");
        thread::sleep(Duration::from_millis(10));
    }

    service.signal(nix::sys::signal::Signal::SIGKILL);
    assert_eq!(service.wait().0.signal(), Some(9));
    let deadline = Instant::now() + BOUND;
    while !marked_processes(&mark).is_empty() {
        assert!(
            Instant::now() < deadline,
            "job processes survived the service: {:?}",
            marked_processes(&mark)
        );
        thread::sleep(Duration::from_millis(10));
    }

    let again = Service::start(dir.path(), &[]);
    for id in &ids {
        assert_eq!(status(&again, id), "lost");
        // Stop on a lost job ends what is left (nothing by now) and says so.
        assert_eq!(
            ran(&again.cli(&["stop", "--kill", id])),
            (Some(0), "lost\n".into(), String::new())
        );
    }
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}-{nanos}", std::process::id())
}

#[test]
fn a_second_service_on_the_same_dir_is_refused() {
    let _serial = shared();
    let _watchdog = watchdog("a_second_service_on_the_same_dir_is_refused");
    let dir = service_dir();
    let _first = Service::start(dir.path(), &[]);
    let mut second = Command::new(BIN)
        .arg("--dir")
        .arg(dir.path())
        .arg("serve")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_bounded(&mut second);
    let mut stderr = String::new();
    second
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(1));
    assert!(
        stderr.contains("another bombsquad-jobs service already uses"),
        "{stderr}"
    );
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn raw_request(dir: &Path, bytes: &[u8]) -> Vec<u8> {
    let mut stream = UnixStream::connect(dir.join("jobs.sock")).unwrap();
    stream.set_read_timeout(Some(BOUND)).unwrap();
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    reply
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut bytes = (payload.len() as u32).to_le_bytes().to_vec();
    bytes.extend_from_slice(payload);
    bytes
}

#[test]
fn bad_requests_get_an_error_and_leak_nothing() {
    let _serial = shared();
    let _watchdog = watchdog("bad_requests_get_an_error_and_leak_nothing");
    let dir = service_dir();
    let service = Service::start(dir.path(), &[]);
    let id = start(&service, &["--", "sh", "-c", "echo hi; sleep 30"]);
    // Warm up once so that lazily opened descriptors are counted in the baseline.
    assert_eq!(service.cli(&["list"]).status.code(), Some(0));
    let baseline = open_fds(service.pid());

    let garbage = raw_request(dir.path(), &frame(b"\xc1\xc1 not msgpack"));
    assert!(text(&garbage).contains("bad request"), "{garbage:?}");
    // A newer client's request, with an operation this service does not know.
    #[derive(serde::Serialize)]
    struct Versioned {
        version: u32,
        op: &'static str,
    }
    let future = rmp_serde::to_vec_named(&Versioned {
        version: 99,
        op: "Teleport",
    })
    .unwrap();
    let refused = text(&raw_request(dir.path(), &frame(&future)));
    assert!(
        refused.contains("protocol version 99 is not supported"),
        "{refused}"
    );
    let huge = text(&raw_request(dir.path(), &u32::MAX.to_le_bytes()));
    assert!(huge.contains("over the limit"), "{huge}");
    let truncated = text(&raw_request(dir.path(), &[10, 0, 0, 0, 1, 2]));
    assert!(truncated.contains("bad request"), "{truncated}");
    // Clients that leave mid-stream: followers of a job that outputs nothing more.
    for _ in 0..5 {
        let mut follower = Command::new(BIN)
            .arg("--dir")
            .arg(dir.path())
            .args(["logs", "--follow", &id])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        thread::sleep(Duration::from_millis(50));
        follower.kill().unwrap();
        follower.wait().unwrap();
    }
    // A silent client does not block the others.
    let _silent = UnixStream::connect(dir.path().join("jobs.sock")).unwrap();
    assert_eq!(status(&service, &id), "running");

    drop(_silent);
    let deadline = Instant::now() + BOUND;
    while open_fds(service.pid()) > baseline {
        assert!(
            Instant::now() < deadline,
            "the service holds {} descriptors, {baseline} before",
            open_fds(service.pid())
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        ran(&service.cli(&["stop", "--kill", &id])).1,
        "stopped (kill)\n"
    );
}

/// `BIN` run as `nobody` with `setpriv`, from `/` (which nobody can read).
fn nobody() -> Command {
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", BIN])
        .current_dir("/");
    command
}

fn as_nobody(dir: &Path, args: &[&str]) -> Output {
    cli_with(nobody(), dir, args)
}

/// A temp dir that other users may pass through (0711), and the service
/// directory to use in it; `None` (the test is skipped, with the reason
/// printed) without root and `setpriv` (util-linux) to act as another uid.
fn other_uid_setup() -> Option<(tempfile::TempDir, PathBuf)> {
    if !common::can_run_as_another_uid() {
        return None;
    }
    let parent = service_dir();
    std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let dir = parent.path().join("service");
    Some((parent, dir))
}

#[test]
fn another_uid_sees_none_of_this_uids_jobs() {
    let _serial = shared();
    let _watchdog = watchdog("another_uid_sees_none_of_this_uids_jobs");
    let Some((parent, dir)) = other_uid_setup() else {
        return;
    };
    let service = Service::start(&dir, &["--shared"]);
    let mine = start(&service, &["--", "sh", "-c", "echo secret; sleep 30"]);

    for args in [
        vec!["status", &mine],
        vec!["logs", &mine],
        vec!["stop", "--kill", &mine],
    ] {
        assert_no_such_job(&as_nobody(&dir, &args), &args);
    }
    assert_eq!(
        ran(&as_nobody(&dir, &["list"])),
        (Some(0), String::new(), String::new())
    );
    assert_eq!(status(&service, &mine), "running");

    // nobody's own job runs as nobody, and root does not see it.
    let theirs = as_nobody(&dir, &["start", "--", "id", "-u"]);
    assert_eq!(theirs.status.code(), Some(0), "{}", text(&theirs.stderr));
    let theirs = text(&theirs.stdout).trim_end().to_owned();
    let followed = as_nobody(&dir, &["logs", "--follow", &theirs]);
    assert_eq!(text(&followed.stdout), "65534\n");
    assert_eq!(ran(&service.cli(&["status", &theirs])).0, Some(1));

    // A private service's socket is closed to other users altogether.
    let private_dir = parent.path().join("private");
    let _private = Service::start(&private_dir, &[]);
    let (code, _, stderr) = ran(&as_nobody(&private_dir, &["list"]));
    assert_eq!(code, Some(1));
    assert!(stderr.contains("permission denied"), "{stderr}");
}

#[test]
fn an_unprivileged_service_refuses_limits_it_cannot_enforce() {
    let _serial = shared();
    let _watchdog = watchdog("an_unprivileged_service_refuses_limits_it_cannot_enforce");
    let Some((_parent, dir)) = other_uid_setup() else {
        return;
    };
    std::fs::create_dir(&dir).unwrap();
    let nobody_uid = Some(nix::unistd::Uid::from_raw(65534));
    nix::unistd::chown(&dir, nobody_uid, None).unwrap();
    let mut service = Service::start_with(nobody(), &dir, &[]);

    // nobody may create no cgroup here: every limit is refused, with the reason.
    for (flag, value, limit) in [
        ("--memory", "32M", "memory"),
        ("--cpus", "0.5", "cpu"),
        ("--pids", "8", "pids"),
    ] {
        let (code, stdout, stderr) = ran(&as_nobody(&dir, &["start", flag, value, "--", "true"]));
        assert_eq!((code, stdout.as_str()), (Some(1), ""), "{stderr}");
        let said = format!("bombsquad-jobs: the {limit} limit cannot be enforced here (");
        assert!(stderr.starts_with(&said), "{stderr}");
    }
    assert_eq!(
        ran(&as_nobody(&dir, &["list"])),
        (Some(0), String::new(), String::new())
    );

    // Without limits a job runs, but without a cgroup: once lost, what is
    // left of it cannot be found safely, and stop says so.
    let mark = uuid_like();
    let mut start = nobody();
    start.env(MARK, &mark);
    let started = cli_with(
        start,
        &dir,
        &["start", "--", "sh", "-c", "sleep 30 & echo started; wait"],
    );
    assert_eq!(started.status.code(), Some(0), "{}", text(&started.stderr));
    let id = text(&started.stdout).trim_end().to_owned();
    let deadline = Instant::now() + BOUND;
    while marked_processes(&mark).len() < 2 {
        assert!(Instant::now() < deadline, "the job did not start");
        thread::sleep(Duration::from_millis(10));
    }
    service.signal(nix::sys::signal::Signal::SIGKILL);
    service.wait();
    let again = Service::start_with(nobody(), &dir, &[]);
    assert_eq!(text(&as_nobody(&dir, &["status", &id]).stdout), "lost\n");
    let (code, _, stderr) = ran(&as_nobody(&dir, &["stop", "--kill", &id]));
    assert_eq!(code, Some(1));
    assert!(
        stderr.starts_with("bombsquad-jobs: the job was lost without a cgroup"),
        "{stderr}"
    );
    // Its leader died with the service; the sleep it started is left (ours to end).
    let left = marked_processes(&mark);
    assert_eq!(
        left.iter()
            .map(|(_, comm)| comm.as_str())
            .collect::<Vec<_>>(),
        ["sleep"]
    );
    for (pid, _) in left {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    drop(again);
}

#[test]
fn two_hundred_jobs_at_once_and_ten_followers_are_all_exact() {
    let _serial = shared();
    let _watchdog = watchdog("two_hundred_jobs_at_once_and_ten_followers_are_all_exact");
    let dir = service_dir();
    let service = Service::start(dir.path(), &[]);
    let script = |n: usize| format!("sleep 1; echo job {n}; echo err {n} >&2; exit {}", n % 100);
    let starters: Vec<_> = (0..200)
        .map(|n| {
            let dir = dir.path().to_owned();
            thread::spawn(move || {
                let output = cli(&dir, &["start", "--", "sh", "-c", &script(n)]);
                assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
                text(&output.stdout).trim_end().to_owned()
            })
        })
        .collect();
    let ids: Vec<String> = starters.into_iter().map(|t| t.join().unwrap()).collect();
    let followers: Vec<_> = ids[..10]
        .iter()
        .map(|id| {
            let (dir, id) = (dir.path().to_owned(), id.clone());
            thread::spawn(move || cli(&dir, &["logs", "--follow", &id]))
        })
        .collect();
    for (n, follower) in followers.into_iter().enumerate() {
        let output = follower.join().unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
        let log = text(&output.stdout);
        assert!(
            log == format!("job {n}\nerr {n}\n") || log == format!("err {n}\njob {n}\n"),
            "{log:?}"
        );
    }
    for (n, id) in ids.iter().enumerate() {
        assert_eq!(
            final_status(&service, id),
            format!("exited with code {}", n % 100)
        );
        let log = text(&service.cli(&["logs", id]).stdout);
        let mut lines: Vec<&str> = log.lines().collect();
        lines.sort_unstable();
        assert_eq!(lines, [format!("err {n}"), format!("job {n}")], "job {n}");
    }
}
