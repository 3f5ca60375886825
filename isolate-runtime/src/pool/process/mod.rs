//! The parent's side of one worker process: starting it (on the keeper
//! thread), the handshake, and one call at a time over its channel (the
//! exchange itself is `exchange.rs`).

mod channel;
mod exchange;

pub(crate) use channel::Channel;
pub(crate) use exchange::Loss;
#[cfg(feature = "tokio")]
pub(crate) use exchange::Ready;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use nix::sys::socket::{MsgFlags, SockType, send};

use crate::child::limits::ChildSetup;
use crate::child::registry::Entry;
use crate::child::worker::{Hello, PROTOCOL_VERSION};
use crate::options::isolate::Isolate;
use crate::parent::backend::Reply;
use crate::parent::classify::OomWatch;
use crate::parent::keeper;
use crate::parent::outcome;
use crate::parent::stdio::OutputRelay;
use crate::parent::supervise::{Child, Exit, KILL_GRACE};
use crate::pool::readiness::Readiness;
use crate::start::spawn::{self, Start, unix_socketpair};
use crate::sys;
use crate::vocabulary::error::Error;
use crate::vocabulary::report::Usage;
use crate::vocabulary::termination::Termination;
use crate::wire::arena::Arena;
use crate::wire::codec;
use crate::wire::marker::Marker;
use crate::wire::{self, CallId, FrameError, FrameKind, FrameReader, Frames, Limit, NO_CALL};

/// How long a worker may take to say it is ready (DESIGN.md: `WorkerStartup`
/// after 10 s).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a worker process runs.
#[derive(Clone)]
pub(crate) enum Launch {
    /// This binary, re-executed, serving a registered function or task.
    Registered(&'static Entry),
    /// Another program speaking `PROTOCOL.md` on its stdin.
    Command(Arc<dyn Fn() -> Command + Send + Sync>),
}

impl std::fmt::Debug for Launch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Registered(entry) => f.debug_tuple("Registered").field(&entry.name).finish(),
            Self::Command(make) => f.debug_tuple("Command").field(&make()).finish(),
        }
    }
}

/// One live worker process and its channel.
#[derive(Debug)]
pub(crate) struct WorkerProcess {
    child: Child,
    channel: Channel,
    output: OutputRelay,
    /// `None` for a worker that is not this binary.
    arena: Option<Arena>,
    /// Its pidfd, channel and output pipes in an epoll set (`readiness.rs`);
    /// `None` if that failed: `poll` then, as for sending.
    readiness: Option<Readiness>,
    /// The cgroup's OOM-kill count when the worker started.
    oom: OomWatch,
    /// Calls it has answered.
    pub(crate) calls: u64,
    /// Its resident size after its first call, for `max_rss_growth`.
    pub(crate) rss_baseline: Option<u64>,
}

/// How a call on a worker ended.
#[derive(Debug)]
pub(crate) enum CallEnd {
    /// The worker answered and lives on. `reply` holds the answer's frames;
    /// a large result's bytes are in the arena.
    Answered { reply: Vec<u8> },
    /// The worker was gone before it could receive the request: nothing ran.
    Undelivered,
    /// The worker died, timed out or broke the protocol during the call; it
    /// has been killed and reaped. `reply` is what it sent before.
    Lost {
        exit: Box<Exit>,
        oom: OomWatch,
        reply: Vec<u8>,
    },
}

impl WorkerProcess {
    /// Starts a worker and waits for its `Hello`.
    ///
    /// # Errors
    ///
    /// `Spawn` when it cannot be started; the judged failure (a crash,
    /// `Timeout`, `Protocol`, a panic in its init) when it dies or
    /// misbehaves before it is ready.
    pub(crate) fn start(launch: &Launch, options: &Isolate, depth: u32) -> Result<Self, Error> {
        let (mut worker, mut frames, started) = Self::launch(launch, options, depth)?;
        let deadline = Self::hello_deadline(started);
        let greeted = worker.exchange(&[], NO_CALL, &mut frames, deadline, &mut |_| Ok(()));
        worker.greeted(greeted, frames, options, started)
    }

    /// Starts a worker; its `Hello` is still to come (in `frames`, from
    /// the start `Instant` returned, within [`HANDSHAKE_TIMEOUT`]).
    pub(crate) fn launch(
        launch: &Launch,
        options: &Isolate,
        depth: u32,
    ) -> Result<(Self, FrameReader, Instant), Error> {
        if options.sandbox.is_some() && !matches!(launch, Launch::Registered(_)) {
            return Err(Error::Sandbox {
                reason: "a RemoteWorker's program is not sandboxed by bombsquad; it must \
                         sandbox itself"
                    .to_owned(),
            });
        }
        crate::options::sandbox::check(options.sandbox.as_ref())?;
        let oom = OomWatch::start();
        let (output, stdio) = OutputRelay::create(&options.stderr)?;
        let started_at = Instant::now();
        let (socket, child_socket) = unix_socketpair(
            SockType::Stream,
            "create the channel to the worker (socketpair)",
        )?;
        let configure = |e| Error::spawn("create the channel to the worker", e);
        let (child, channel, arena) = match launch {
            Launch::Registered(entry) => {
                let (channel, ends) = Channel::pipes().map_err(configure)?;
                let marker = Marker::for_new_child(depth)
                    .map_err(|e| Error::spawn("draw a random token", e))?;
                let token = marker.token;
                let start = Start {
                    channel: child_socket,
                    stdio,
                    marker,
                    started_at,
                };
                let child = keeper::run(move || spawn::re_execute(start))?;
                let arena = Arena::create()
                    .map_err(|e| Error::spawn("create the worker's arena (memfd_create)", e))?;
                // A worker that died early cannot take these; its exit says
                // why. The socket closes here: the pipes are the channel.
                let fds = [arena.fd(), ends.requests.as_fd(), ends.answers.as_fd()];
                let _ = spawn::send_token_and_fds(socket.as_fd(), &token, &fds);
                let _ = send_setup(socket.as_fd(), entry.name, options);
                (child, channel, Some(arena))
            }
            Launch::Command(make) => {
                let mut command = make();
                command
                    .stdin(Stdio::from(child_socket))
                    .stdout(Stdio::from(stdio.stdout))
                    .stderr(Stdio::from(stdio.stderr))
                    .process_group(0);
                let child = keeper::run(move || start_command(command, started_at))?;
                let channel = Channel::socket(socket).map_err(configure)?;
                (child, channel, None)
            }
        };
        let readiness = child
            .pidfd()
            .and_then(|pidfd| Readiness::new(pidfd, channel.incoming(), output.poll_fds()).ok());
        let worker = Self {
            child,
            channel,
            output,
            arena,
            readiness,
            oom,
            calls: 0,
            rss_baseline: None,
        };
        let frames = FrameReader::new(Limit::Results(options.result_limit()));
        Ok((worker, frames, Instant::now()))
    }

    /// The deadline of a launched worker's `Hello`.
    pub(crate) fn hello_deadline(started: Instant) -> Option<Instant> {
        Some(started + HANDSHAKE_TIMEOUT)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// What a wait watches: the pidfd (`None` once the process is gone),
    /// the channel, the output pipes.
    #[cfg(feature = "tokio")]
    pub(crate) fn descriptors(
        &self,
    ) -> (
        Option<BorrowedFd<'_>>,
        &Channel,
        impl Iterator<Item = BorrowedFd<'_>>,
    ) {
        (self.child.pidfd(), &self.channel, self.output.poll_fds())
    }

    /// The epoll set of the pidfd, the channel and the output pipes, if
    /// it was made, and the process is not reaped yet.
    #[cfg(feature = "tokio")]
    pub(crate) fn readiness(&mut self) -> Option<&mut Readiness> {
        self.child.pidfd()?;
        self.readiness.as_mut()
    }

    /// A second descriptor for the process, for a shutdown that must kill
    /// it while another thread runs a call on it.
    pub(crate) fn kill_handle(&self) -> Option<OwnedFd> {
        self.child.pidfd()?.try_clone_to_owned().ok()
    }

    /// Checks the `Hello` that the exchange `greeted` brought, or judges
    /// why it did not come.
    pub(crate) fn greeted(
        self,
        greeted: Result<(), Loss>,
        frames: FrameReader,
        options: &Isolate,
        started: Instant,
    ) -> Result<Self, Error> {
        if let Err(loss) = greeted {
            let options = options.clone().timeout(HANDSHAKE_TIMEOUT);
            let (exit, oom) = self.take_exit(loss, started, KILL_GRACE);
            let reply = Reply::checked(frames.into_bytes(), NO_CALL);
            return Err(
                outcome::judge(exit, || Ok(reply), codec_unit(), &options, &oom)
                    .err()
                    .unwrap_or_else(|| Error::protocol(0, "the worker left before it said hello")),
            );
        }
        let pid = self.pid();
        let protocol = |message: String| Error::protocol(pid, message);
        let reply = frames.into_bytes();
        let hello = match Frames::checked(&reply).last() {
            Some(Ok(frame)) if frame.kind == FrameKind::Hello => Some(frame.payload),
            _ => None,
        };
        let Some(hello) = hello else {
            // A panic in a task's init, an unknown function: the frames say.
            let reply = Reply::checked(reply, NO_CALL);
            return Err(outcome::judge_frames(pid, reply, codec_unit())
                .err()
                .unwrap_or_else(|| protocol("the worker's first frame was not Hello".to_owned())));
        };
        let hello: Hello = codec::from_msgpack(hello).map_err(protocol)?;
        if hello.protocol != PROTOCOL_VERSION {
            return Err(protocol(format!(
                "the worker speaks protocol {}, this library speaks {PROTOCOL_VERSION}",
                hello.protocol
            )));
        }
        Ok(self)
    }

    /// Runs one call: sends `request` (a whole `Request` frame for the call
    /// `call_id`) and waits for the answer (a result of at most `limit`
    /// bytes), handing each progress message to `progress` on the way,
    /// until `deadline`. Bytes already waiting
    /// in the channel (a reply that belongs to no call) fail the call with
    /// [`Error::Protocol`] before the request is sent, and the worker with it
    /// (docs/FAULTS.md E10).
    pub(crate) fn call(
        mut self,
        request: &[u8],
        call_id: CallId,
        limit: u64,
        deadline: Option<Instant>,
        progress: &mut dyn FnMut(&[u8]) -> Result<(), Error>,
    ) -> (Option<Self>, CallEnd) {
        let started = Instant::now();
        let mut frames = FrameReader::new(Limit::Results(limit));
        let exchanged = self
            .check_silent()
            .and_then(|()| self.exchange(request, call_id, &mut frames, deadline, progress));
        self.called(exchanged, frames, started, KILL_GRACE)
    }

    /// Refuses a worker whose channel holds bytes before a request: a reply
    /// that belongs to no call (docs/FAULTS.md E10).
    pub(crate) fn check_silent(&self) -> Result<(), Loss> {
        match sys::bytes_waiting(self.channel.incoming()) {
            Ok(waiting) if waiting > 0 => Err(Loss::BadFrame(FrameError::Malformed(format!(
                "{waiting} bytes were waiting in the worker's channel before the request: \
                 a reply that belongs to no call"
            )))),
            _ => Ok(()),
        }
    }

    /// How a call that `exchanged` (its reply in `frames`, sent at
    /// `started`) ended; a lost worker is killed and reaped, waiting at
    /// most `grace` for it to die (docs/FAULTS.md D7).
    pub(crate) fn called(
        mut self,
        exchanged: Result<(), Loss>,
        frames: FrameReader,
        started: Instant,
        grace: Duration,
    ) -> (Option<Self>, CallEnd) {
        match exchanged {
            Ok(()) => {
                self.calls += 1;
                let reply = frames.into_bytes();
                (Some(self), CallEnd::Answered { reply })
            }
            Err(Loss::Undelivered) => {
                let _ = self.take_exit(Loss::Undelivered, started, grace);
                (None, CallEnd::Undelivered)
            }
            Err(loss) => {
                let (exit, oom) = self.take_exit(loss, started, grace);
                let exit = Box::new(exit);
                let reply = frames.into_bytes();
                (None, CallEnd::Lost { exit, oom, reply })
            }
        }
    }

    /// A large result's bytes, from the arena.
    ///
    /// # Errors
    ///
    /// A result over `limit`, or an arena that does not hold it.
    pub(crate) fn arena_bytes(&mut self, len: u64, limit: u64) -> Result<&[u8], FrameError> {
        if len > limit {
            return Err(FrameError::TooLarge { size: len, limit });
        }
        let len = usize::try_from(len).map_err(|e| FrameError::Malformed(e.to_string()))?;
        match &mut self.arena {
            Some(arena) => arena.read(len).map_err(FrameError::Malformed),
            None => Err(FrameError::Malformed(
                "an arena result from a worker that has no arena".to_owned(),
            )),
        }
    }

    /// Asks the worker to leave and lets the keeper reap it (killing its
    /// group after `grace`).
    pub(crate) fn retire(self, grace: Duration) {
        self.ask_to_leave();
        keeper::retire(self.child, grace);
    }

    /// Sends `Shutdown`: the worker leaves once it reads it. Dropping a
    /// `WorkerProcess` kills and reaps it.
    pub(crate) fn ask_to_leave(&self) {
        let _ = self
            .channel
            .send_some(&wire::header(FrameKind::Shutdown, NO_CALL, &[]));
    }

    /// The worker's resident set size, from `/proc/<pid>/statm`.
    pub(crate) fn rss(&self) -> Option<u64> {
        let statm = std::fs::read_to_string(format!("/proc/{}/statm", self.pid())).ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        Some(pages * page_size())
    }

    /// Kills the worker when `exchanged` is a loss it must die for (its
    /// deadline, a bad frame or progress message), and returns its pidfd
    /// if it has not died yet, to wait on (docs/FAULTS.md D7).
    #[cfg(feature = "tokio")]
    pub(crate) fn kill_for(&mut self, exchanged: &Result<(), Loss>) -> Option<BorrowedFd<'_>> {
        if let Err(loss) = exchanged
            && loss.kills_the_worker()
        {
            self.child.kill_group();
        }
        self.child.killed_and_alive()
    }

    /// Kills and reaps the worker after a loss, waiting at most `grace`
    /// for it to die, and says how it ended.
    fn take_exit(mut self, loss: Loss, started: Instant, grace: Duration) -> (Exit, OomWatch) {
        if loss.kills_the_worker() {
            self.child.kill_group();
        }
        let (timed_out, bad_reply, bad_progress) = match loss {
            Loss::TimedOut => (true, None, None),
            Loss::BadFrame(message) => (false, Some(message), None),
            Loss::BadProgress(error) => (false, None, Some(error)),
            Loss::Undelivered | Loss::Died => (false, None, None),
        };
        let status = self.child.reap_within(grace).unwrap_or(None);
        let exit = Exit {
            pid: self.child.pid(),
            termination: status.map(|(status, _)| Termination::from_wait_status(status)),
            timed_out,
            bad_reply,
            bad_progress,
            wall_time: started.elapsed(),
            usage: status.map(|(_, usage)| Usage::from_rusage(&usage)),
            stderr: self.output.finish(),
        };
        (exit, self.oom)
    }
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|size| u64::try_from(size).ok())
        .unwrap_or(4096)
}

/// Starts an external worker program.
fn start_command(mut command: Command, started_at: Instant) -> Result<Child, Error> {
    let program = command.get_program().to_string_lossy().into_owned();
    let started = command
        .spawn()
        .map_err(|e| Error::spawn(format!("start the worker program {program:?}"), e))?;
    let child = Child::adopt(started.id().cast_signed(), started_at)?;
    drop(started); // std's handle neither waits nor kills; `child` owns the process now
    Ok(child)
}

/// The `Worker` and `Setup` frames, after the token and the arena.
fn send_setup(socket: BorrowedFd<'_>, name: &str, options: &Isolate) -> Result<(), String> {
    let mut frames = wire::frame(FrameKind::Worker, NO_CALL, name.as_bytes());
    frames.extend(ChildSetup::new(options).frame()?);
    send_all(socket, &frames).map_err(|e| e.to_string())
}

/// Sends all of `bytes` on a blocking socket, never raising SIGPIPE
/// (docs/FAULTS.md F11: the host may not ignore it).
fn send_all(socket: BorrowedFd<'_>, mut bytes: &[u8]) -> nix::Result<()> {
    while !bytes.is_empty() {
        match send(socket.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn codec_unit() -> codec::Codec<()> {
    codec::Codec::serde()
}
