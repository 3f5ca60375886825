//! `bombsquad-jobs serve`: the service that owns the jobs.
//!
//! One thread accepts connections on the Unix socket; each connection gets a
//! thread of its own for its one request, so a slow or silent client (or a
//! `logs --follow`) never blocks another. The caller's owner id comes from
//! the kernel (`SO_PEERCRED`): a client cannot choose or forge it.

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use bombsquad::jobs::{Command, JobError, JobId, Jobs, OwnerId, Retention, StopType};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::unistd::Uid;

use crate::protocol::{self, Failure, MAX_REQUEST, Op, Reply, Request, StartJob, VERSION};

/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a reply may wait for the client to read it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a follower checks that its client is still there.
const FOLLOW_TICK: Duration = Duration::from_millis(200);
/// Connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 1024;
/// How long `serve` waits for a directory in use (see `open_jobs`).
const GUARD_PATIENCE: Duration = Duration::from_secs(3);
/// SIGTERM to SIGKILL, for `stop` and for the service's own shutdown.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Who may connect: only this user (directory 0700, socket 0600), or every
/// user of the host (directory 0711, socket 0666), each seeing only its own jobs.
#[derive(Debug, Clone, Copy)]
pub enum Access {
    Private,
    Shared,
}

/// The state every connection thread shares.
struct Service {
    jobs: Jobs,
    /// Jobs started by this service, to stop on SIGTERM/SIGINT.
    started: Mutex<Vec<(JobId, OwnerId)>>,
    connections: AtomicUsize,
}

/// Runs the service in the foreground until SIGTERM or SIGINT.
pub fn serve(dir: &Path, access: Access) -> Result<ExitCode, String> {
    // Blocked here, before any thread starts, so that every thread inherits
    // the mask and only `wait_for_shutdown` receives them (jobs get a clean
    // mask: std resets it before exec).
    let shutdown = SigSet::from_iter([Signal::SIGTERM, Signal::SIGINT]);
    shutdown
        .thread_block()
        .map_err(|e| format!("cannot block SIGTERM and SIGINT ({e})"))?;

    prepare_dir(dir, access)?;
    let jobs = match open_jobs(dir) {
        Err(JobError::DirInUse { .. }) => {
            return Err(format!(
                "another bombsquad-jobs service already uses {}: stop it first, or use another --dir",
                dir.display()
            ));
        }
        built => built.map_err(|e| e.to_string())?,
    };
    let listener = bind(dir, access)?;
    let mut guard = start_guard(dir)?;
    let service = Arc::new(Service {
        jobs,
        started: Mutex::default(),
        connections: AtomicUsize::new(0),
    });

    let accepting = Arc::clone(&service);
    thread::Builder::new()
        .name("accept".into())
        .spawn(move || accept_loop(&listener, &accepting))
        .map_err(|e| format!("cannot start the accept thread ({e})"))?;
    say!(
        "bombsquad-jobs: serving {}",
        dir.join(protocol::SOCKET).display()
    );

    let signal = shutdown
        .wait()
        .map_err(|e| format!("waiting for signals failed ({e})"))?;
    say!("bombsquad-jobs: {signal}, stopping the running jobs");
    service.stop_all();
    let _ = std::fs::remove_file(dir.join(protocol::SOCKET));
    // Every job is stopped and recorded: nothing is left for the guard.
    let _ = guard.kill();
    let _ = guard.wait();
    Ok(ExitCode::SUCCESS)
}

/// Opens the jobs table and logs in `dir`. "In use" is retried for a
/// while: the guard of a service that just died holds the directory while
/// it kills what is left of its jobs.
fn open_jobs(dir: &Path) -> Result<Jobs, JobError> {
    let deadline = std::time::Instant::now() + GUARD_PATIENCE;
    loop {
        let opened = Jobs::builder()
            .log_dir(dir)
            .retention(Retention::default())
            .stop_grace(STOP_GRACE)
            .build();
        match opened {
            Err(JobError::DirInUse { .. }) if std::time::Instant::now() < deadline => {}
            other => return other,
        }
    }
}

/// Creates `dir` with the access's mode if it is missing. An existing
/// directory keeps its mode (it may be shared, like `/tmp`): the socket's
/// own mode is the guard either way.
fn prepare_dir(dir: &Path, access: Access) -> Result<(), String> {
    if dir.is_dir() {
        return Ok(());
    }
    let mode = match access {
        Access::Private => 0o700,
        Access::Shared => 0o711,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(|e| format!("cannot create {} ({e})", dir.display()))?;
    // The umask may have taken bits off.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot set the mode of {} ({e})", dir.display()))
}

fn bind(dir: &Path, access: Access) -> Result<UnixListener, String> {
    let path = dir.join(protocol::SOCKET);
    // We hold the directory's lock, so a socket file left here is stale.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .map_err(|e| format!("cannot listen on {} ({e})", path.display()))?;
    let mode = match access {
        Access::Private => 0o600,
        Access::Shared => 0o666,
    };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot set the mode of {} ({e})", path.display()))?;
    Ok(listener)
}

/// Starts `bombsquad-jobs __guard`: a process in its own group that waits
/// for its stdin, a pipe from this service, to close (this service dying,
/// however it dies; the returned `Child` holds the pipe open), and then
/// opens the directory like a restarted service would, which records the
/// jobs left running as lost and kills what is left of them through their
/// cgroups. The job leaders die with the service anyway (parent-death
/// signal); the guard ends the processes they started.
fn start_guard(dir: &Path) -> Result<std::process::Child, String> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program ({e})"))?;
    std::process::Command::new(exe)
        .arg("--dir")
        .arg(dir)
        .arg("__guard")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start the guard process ({e})"))
}

/// `__guard`: see [`start_guard`].
pub fn guard(dir: &Path) -> ExitCode {
    let mut rest = Vec::new();
    let _ = io::stdin().read_to_end(&mut rest);
    for _ in 0..40 {
        match Jobs::builder().log_dir(dir).build() {
            Err(JobError::DirInUse { .. }) => {}
            Ok(_) => return ExitCode::SUCCESS,
            Err(error) => {
                say!("bombsquad-jobs guard: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    // Still in use: a new service took over, and it has done the same.
    ExitCode::SUCCESS
}

fn accept_loop(listener: &UnixListener, service: &Arc<Service>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if service.connections.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            service.connections.fetch_sub(1, Ordering::SeqCst);
            continue; // dropped: the client sees the connection closed
        }
        let serving = Arc::clone(service);
        let spawned = thread::Builder::new().name("client".into()).spawn(move || {
            serving.handle(stream);
            serving.connections.fetch_sub(1, Ordering::SeqCst);
        });
        if spawned.is_err() {
            service.connections.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// The owner id of a user: the same for a uid across restarts, so a
/// restarted service finds each user's jobs again.
pub fn owner_of(uid: u32) -> OwnerId {
    const NAMESPACE: u64 = u64::from_be_bytes(*b"bombsqua");
    OwnerId::from_u64_pair(NAMESPACE, u64::from(uid))
}

/// Who is on the other end of a connection, as the kernel says.
struct Peer {
    uid: u32,
    gid: u32,
}

impl Service {
    fn handle(&self, mut stream: UnixStream) {
        let _ = stream.set_read_timeout(Some(REQUEST_TIMEOUT));
        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
        let Ok(credentials) = getsockopt(&stream, PeerCredentials) else {
            return;
        };
        let peer = Peer {
            uid: credentials.uid(),
            gid: credentials.gid(),
        };
        let request = match read_request(&mut stream) {
            Ok(request) => request,
            Err(message) => {
                let _ = protocol::send(&mut stream, &Reply::Failed(Failure::Other(message)));
                return;
            }
        };
        let owner = owner_of(peer.uid);
        let reply = match request.op {
            Op::Start(job) => self.start(job, &peer, owner),
            Op::Status { id } => self
                .jobs
                .query(id, owner)
                .map(|info| Reply::Info(Box::new(info))),
            Op::List => self.jobs.try_list(owner).map(Reply::List),
            Op::Stop { id, kill } => self.stop(id, owner, kill),
            Op::Logs { id, follow } => return self.logs(stream, id, owner, follow),
        };
        let _ = protocol::send(&mut stream, &reply.unwrap_or_else(failure));
    }

    fn start(&self, job: StartJob, peer: &Peer, owner: OwnerId) -> Result<Reply, JobError> {
        let mut command = Command::new(job.program, job.args).current_dir(job.cwd);
        for (key, value) in job.env {
            command = command.env(key, value);
        }
        if let Some(bytes) = job.memory_bytes {
            command = command.memory_limit(bytes);
        }
        if let Some(cpus) = job.cpus {
            command = command.cpu_limit(cpus);
        }
        if let Some(pids) = job.pids {
            command = command.pids_limit(pids);
        }
        command = command.merged_output(job.merged_output);
        let me = Uid::effective().as_raw();
        if peer.uid != me {
            if me != 0 {
                return Ok(Reply::Failed(Failure::Other(format!(
                    "this service runs as uid {me} and cannot start jobs as uid {}: \
                     run your own (bombsquad-jobs serve)",
                    peer.uid
                ))));
            }
            // A shared service run by root runs each job as its client.
            command = command.run_as(peer.uid, peer.gid);
        }
        let id = self.jobs.start(command, owner)?;
        self.started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((id, owner));
        Ok(Reply::Started(id))
    }

    /// Stops the job and waits for its end (at most the grace period and a
    /// little more), so the reply holds the final status.
    fn stop(&self, id: JobId, owner: OwnerId, kill: bool) -> Result<Reply, JobError> {
        let how = if kill { StopType::Kill } else { StopType::Term };
        self.jobs.stop(id, owner, how)?;
        let info = match self.jobs.wait_timeout(id, owner, STOP_GRACE * 2)? {
            Some(info) => info,
            None => self.jobs.query(id, owner)?,
        };
        Ok(Reply::Info(Box::new(info)))
    }

    /// Sends the job's output as frames, following it if asked, ended by an
    /// empty frame; gives up as soon as the client goes away.
    fn logs(&self, mut stream: UnixStream, id: JobId, owner: OwnerId, follow: bool) {
        let reader = self.jobs.stream(id, owner).and_then(|reader| {
            if follow {
                Ok(reader)
            } else {
                reader.up_to_now().map_err(|source| JobError::Io {
                    path: self.jobs.log_dir().to_owned(),
                    source,
                })
            }
        });
        let mut reader = match reader {
            Ok(reader) => reader,
            Err(error) => {
                let _ = protocol::send(&mut stream, &failure(error));
                return;
            }
        };
        reader.set_read_timeout(Some(FOLLOW_TICK));
        if protocol::send(&mut stream, &Reply::Logs).is_err() {
            return;
        }
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if protocol::write_frame(&mut stream, &buf[..n]).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    if client_gone(&stream) {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return, // no end frame: the client reports a cut stream
            }
        }
        let _ = protocol::write_frame(&mut stream, &[]);
        let _ = stream.flush();
    }

    /// SIGTERM to every running job, SIGKILL after the grace period; returns
    /// once their ends are recorded.
    fn stop_all(&self) {
        let started = std::mem::take(&mut *self.started.lock().unwrap_or_else(|p| p.into_inner()));
        let running: Vec<(JobId, OwnerId)> = started
            .into_iter()
            .filter(|(id, owner)| {
                self.jobs
                    .query(*id, *owner)
                    .is_ok_and(|info| info.status.is_running())
            })
            .collect();
        for (id, owner) in &running {
            let _ = self.jobs.stop(*id, *owner, StopType::Term);
        }
        for (id, owner) in &running {
            let _ = self.jobs.wait_timeout(*id, *owner, STOP_GRACE * 2);
        }
    }
}

/// Reads the one request of a connection; the message to answer with if it
/// is malformed, too large, or of another protocol version. The version is
/// checked first, so a newer client's request gets the version message.
fn read_request(stream: &mut UnixStream) -> Result<Request, String> {
    #[derive(serde::Deserialize)]
    struct Versioned {
        version: u32,
    }
    let bad = |error: &dyn std::fmt::Display| format!("bad request: {error}");
    let bytes = protocol::read_frame(stream, MAX_REQUEST)
        .map_err(|e| bad(&e))?
        .ok_or_else(|| bad(&"no request before the end of the connection"))?;
    let versioned: Versioned = rmp_serde::from_slice(&bytes).map_err(|e| bad(&e))?;
    if versioned.version != VERSION {
        return Err(format!(
            "protocol version {} is not supported (this service speaks {VERSION}): \
             use the bombsquad-jobs that matches the service",
            versioned.version
        ));
    }
    rmp_serde::from_slice(&bytes).map_err(|e| bad(&e))
}

/// True if the client closed its end: it sends nothing after its request,
/// so the socket becoming readable means EOF (or a protocol breach).
fn client_gone(stream: &UnixStream) -> bool {
    let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

fn failure(error: JobError) -> Reply {
    Reply::Failed(match error {
        JobError::NotFound { .. } => Failure::NoSuchJob,
        other => Failure::Other(other.to_string()),
    })
}

/// The default directory: `$BOMBSQUAD_JOBS_DIR`, else
/// `$XDG_RUNTIME_DIR/bombsquad-jobs`, else `bombsquad-jobs-<uid>` in the
/// temp dir.
pub fn default_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BOMBSQUAD_JOBS_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(runtime).join("bombsquad-jobs");
    }
    let uid = nix::unistd::getuid().as_raw();
    std::env::temp_dir().join(format!("bombsquad-jobs-{uid}"))
}
