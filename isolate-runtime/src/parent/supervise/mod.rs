//! Watching a running child: completion comes from the process (its pidfd),
//! never from EOF alone, because a grandchild can hold the channel open
//! (DESIGN.md, mechanism 4). The reply pipe is drained, the request sent
//! and progress messages delivered while waiting, and the deadline is
//! enforced with a process-group kill.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{MsgFlags, send};
use smallvec::SmallVec;

use crate::child::progress::ProgressSink;
use crate::parent::backend::ReplyChannel;
use crate::parent::progress::ProgressStream;
use crate::parent::stdio::OutputRelay;
use crate::vocabulary::error::Error;
use crate::vocabulary::output_tail::OutputTail;
use crate::vocabulary::report::Usage;
use crate::vocabulary::termination::Termination;
use crate::wire::FrameError;

mod child;

pub(crate) use child::{Child, KILL_GRACE};

/// Bytes still to send to the child on its socket.
#[derive(Debug)]
pub(crate) struct Outgoing<'a> {
    socket: Option<BorrowedFd<'a>>,
    data: &'a [u8],
}

impl<'a> Outgoing<'a> {
    pub(crate) fn none() -> Self {
        Self {
            socket: None,
            data: &[],
        }
    }

    /// `socket` must be non-blocking.
    pub(crate) fn new(socket: BorrowedFd<'a>, data: &'a [u8]) -> Self {
        Self {
            socket: Some(socket),
            data,
        }
    }

    fn pending(&self) -> Option<BorrowedFd<'a>> {
        self.socket.filter(|_| !self.data.is_empty())
    }

    /// Sends what the socket takes now. A child that stopped reading (it
    /// died) gets nothing more; its exit status will say why.
    fn send_some(&mut self) {
        let Some(socket) = self.socket else { return };
        while !self.data.is_empty() {
            match send(
                socket.as_raw_fd(),
                self.data,
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            ) {
                Ok(n) => self.data = &self.data[n..],
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return,
                Err(_) => self.data = &[],
            }
        }
    }
}

/// How the child ended, as the parent saw it.
#[derive(Debug)]
pub(crate) struct Exit {
    pub(crate) pid: u32,
    /// `None` when someone else took the exit status (docs/FAULTS.md F6, F7).
    pub(crate) termination: Option<Termination>,
    /// The deadline passed and the parent killed the child.
    pub(crate) timed_out: bool,
    /// The reply was malformed, or over the limit, while it streamed in;
    /// the parent killed the child.
    pub(crate) bad_reply: Option<FrameError>,
    /// A progress message was malformed or did not decode; the parent
    /// killed the child (or it had exited).
    pub(crate) bad_progress: Option<Error>,
    /// From just before the start to the reaping.
    pub(crate) wall_time: Duration,
    pub(crate) usage: Option<Usage>,
    /// The end of the child's stderr.
    pub(crate) stderr: OutputTail,
}

/// What a descriptor the engine watches is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The child's pidfd: readable once it has exited.
    Exit,
    /// The reply pipe.
    Reply,
    /// The child's socket, while a request is still being sent: writable.
    Outgoing,
    /// The progress pipe.
    Progress,
    /// The child's stdout or stderr pipe.
    Output,
}

impl Source {
    /// Whether the engine waits for this source to be writable (else
    /// readable).
    pub(crate) fn wants_write(self) -> bool {
        self == Self::Outgoing
    }
}

/// One descriptor to wait on, and what it is for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Watch<'a> {
    pub(crate) fd: BorrowedFd<'a>,
    pub(crate) source: Source,
}

/// The parent's side of a running call, as a state machine fed with
/// readiness: [`watches`](Self::watches) says what to wait for and
/// [`deadline`](Self::deadline) until when; [`on_ready`](Self::on_ready)
/// and [`on_deadline`](Self::on_deadline) do the non-blocking work that
/// follows and say whether the call is over; [`finish`](Self::finish)
/// reaps the child. The blocking API drives it with one `poll` loop
/// ([`supervise`]); any other driver (a reactor) only has to wait for the
/// same things.
///
/// Dropping an unfinished engine kills the child's group and reaps it
/// (through [`Child`]'s `Drop`).
#[derive(Debug)]
pub(crate) struct CallEngine<'a, 'p, S: ?Sized + ProgressSink = dyn ProgressSink + 'p> {
    child: Child,
    deadline: Option<Instant>,
    reply: &'a mut ReplyChannel,
    outgoing: Outgoing<'a>,
    output: OutputRelay,
    progress: Option<&'a mut ProgressStream<'p, S>>,
    timed_out: bool,
    bad_reply: Option<FrameError>,
    bad_progress: Option<Error>,
    callback_panic: Option<Box<dyn std::any::Any + Send>>,
    /// The child has exited, or was killed and need not be waited for.
    over: bool,
}

/// Where the engine stands after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Wait for [`CallEngine::watches`] or the deadline again.
    Wait,
    /// The call is over: [`CallEngine::finish`] it.
    Finished,
}

impl<'a, 'p, S: ?Sized + ProgressSink> CallEngine<'a, 'p, S> {
    /// An engine for `child`, killed at `deadline`, that sends `outgoing`
    /// and drains `reply`, `output` and `progress` while it runs.
    pub(crate) fn new(
        child: Child,
        deadline: Option<Instant>,
        reply: &'a mut ReplyChannel,
        mut outgoing: Outgoing<'a>,
        output: OutputRelay,
        progress: Option<&'a mut ProgressStream<'p, S>>,
    ) -> Self {
        // A fresh socket takes a small request whole: sent now, not after a
        // wait that would only say the socket is writable.
        outgoing.send_some();
        // A child gone before it could be watched has nothing to wait for.
        let over = child.pidfd().is_none();
        Self {
            child,
            deadline,
            reply,
            outgoing,
            output,
            progress,
            timed_out: false,
            bad_reply: None,
            bad_progress: None,
            callback_panic: None,
            over,
        }
    }

    /// Whether the call is over (the child exited, was killed at the
    /// deadline, or could not be watched).
    pub(crate) fn is_over(&self) -> bool {
        self.over
    }

    /// When the child is to be killed, if ever.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// What to wait for now; the pidfd always comes first.
    pub(crate) fn watches(&self) -> SmallVec<[Watch<'_>; 6]> {
        let mut watches = SmallVec::new();
        let Some(pidfd) = self.child.pidfd() else {
            return watches;
        };
        let watch = |fd, source| Watch { fd, source };
        watches.push(watch(pidfd, Source::Exit));
        let reply = self.reply.poll_fd().filter(|_| self.bad_reply.is_none());
        watches.extend(reply.map(|fd| watch(fd, Source::Reply)));
        watches.extend(
            self.outgoing
                .pending()
                .map(|fd| watch(fd, Source::Outgoing)),
        );
        let progress = self
            .progress
            .as_deref()
            .and_then(ProgressStream::poll_fd)
            .filter(|_| self.bad_progress.is_none());
        watches.extend(progress.map(|fd| watch(fd, Source::Progress)));
        watches.extend(self.output.poll_fds().map(|fd| watch(fd, Source::Output)));
        watches
    }

    /// The deadline passed: kills the child's group. Checked before every
    /// wait, not only when a wait times out: a child that keeps a pipe
    /// readable would otherwise outlive its deadline.
    pub(crate) fn on_deadline(&mut self) -> Step {
        self.timed_out = true;
        self.child.kill_group();
        self.over = true;
        Step::Finished
    }

    /// Whether the deadline has passed at `now`.
    pub(crate) fn is_past_deadline(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|deadline| now >= deadline)
    }

    /// Does what the sources that became ready allow (never blocking):
    /// relays output, sends more of the request, reads the reply and
    /// delivers progress. The call is over once the child has exited.
    pub(crate) fn on_ready(&mut self, ready: impl IntoIterator<Item = Source>) -> Step {
        let mut exited = false;
        let (mut output, mut outgoing, mut reply, mut progress) = (false, false, false, false);
        for source in ready {
            match source {
                Source::Exit => exited = true,
                Source::Output => output = true,
                Source::Outgoing => outgoing = true,
                Source::Reply => reply = true,
                Source::Progress => progress = true,
            }
        }
        if output {
            self.output.relay_available();
        }
        if outgoing {
            self.outgoing.send_some();
        }
        if reply && let Err(refusal) = self.reply.read_available() {
            self.bad_reply = Some(refusal);
            self.child.kill_group();
        }
        if progress {
            self.deliver_progress();
        }
        if exited || self.callback_panic.is_some() {
            self.over = true;
        }
        if self.over {
            Step::Finished
        } else {
            Step::Wait
        }
    }

    fn deliver_progress(&mut self) {
        let Some(stream) = self.progress.as_deref_mut() else {
            return;
        };
        let pid = self.child.pid();
        match catch_unwind(AssertUnwindSafe(|| stream.read_available(pid))) {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                self.bad_progress = Some(error);
                self.child.kill_group();
            }
            Err(payload) => {
                self.callback_panic = Some(payload);
                self.child.kill_group();
            }
        }
    }

    /// Reaps the child (killing what is left of its group), delivers the
    /// progress messages still in the pipe and says how the child ended.
    ///
    /// # Panics
    ///
    /// A panic of the caller's progress callback continues once the
    /// child's group is killed and the child reaped.
    pub(crate) fn finish(self) -> Result<Exit, Error> {
        self.finish_within(KILL_GRACE)
    }

    /// The pidfd of the child, when the engine killed it and it has not
    /// died yet: an awaited call waits for it on the reactor before it
    /// finishes (docs/FAULTS.md D7).
    #[cfg(feature = "tokio")]
    pub(crate) fn killed_child_alive(&self) -> Option<BorrowedFd<'_>> {
        self.child.killed_and_alive()
    }

    /// [`finish`](Self::finish), waiting at most `grace` for a child it
    /// killed to die.
    ///
    /// # Panics
    ///
    /// As [`finish`](Self::finish).
    pub(crate) fn finish_within(mut self, grace: Duration) -> Result<Exit, Error> {
        let status = self.child.reap_within(grace);
        if let Some(payload) = self.callback_panic.take() {
            resume_unwind(payload); // the child is dead and reaped (or left to its reaper)
        }
        let status = status?;
        // The child is gone: what is left in the pipe is all it sent.
        if self.bad_progress.is_none()
            && let Some(stream) = self.progress
            && let Err(error) = stream.drain(self.child.pid())
        {
            self.bad_progress = Some(error);
        }
        Ok(Exit {
            pid: self.child.pid(),
            termination: status.map(|(status, _)| Termination::from_wait_status(status)),
            timed_out: self.timed_out,
            bad_reply: self.bad_reply,
            bad_progress: self.bad_progress,
            wall_time: self.child.started().elapsed(),
            usage: status.map(|(_, usage)| Usage::from_rusage(&usage)),
            stderr: self.output.finish(),
        })
    }
}

/// Waits for `child` to exit (or kills it at `deadline`), sending `outgoing`,
/// draining `reply` and `output` and delivering `progress` meanwhile, then
/// reaps it and delivers the progress messages still in the pipe: the
/// blocking driver of [`CallEngine`], one `poll` per wake-up.
///
/// # Panics
///
/// A panic of the caller's progress callback continues once the child's
/// group is killed and the child reaped.
pub(crate) fn supervise(
    child: Child,
    deadline: Option<Instant>,
    reply: &mut ReplyChannel,
    outgoing: Outgoing<'_>,
    output: OutputRelay,
    progress: Option<&mut ProgressStream<'_>>,
) -> Result<Exit, Error> {
    let mut engine = CallEngine::new(child, deadline, reply, outgoing, output, progress);
    while !engine.is_over() {
        if engine.is_past_deadline(Instant::now()) {
            engine.on_deadline();
            break;
        }
        let watches = engine.watches();
        // On the stack: in the parent, a heap page written while the child
        // lives is a copy-on-write fault.
        let mut fds: SmallVec<[PollFd<'_>; 6]> = watches
            .iter()
            .map(|watch| PollFd::new(watch.fd, poll_flags(watch.source)))
            .collect();
        match poll(&mut fds, remaining(engine.deadline())) {
            Ok(0) | Err(Errno::EINTR) => continue, // the deadline: checked at the top
            Ok(_) => {}
            Err(e) => return Err(Error::spawn("wait for the child process", e)),
        }
        let ready: SmallVec<[Source; 6]> = fds
            .iter()
            .zip(&watches)
            .filter(|(fd, _)| fd.any().unwrap_or(true))
            .map(|(_, watch)| watch.source)
            .collect();
        drop((fds, watches));
        if engine.on_ready(ready) == Step::Finished {
            break;
        }
    }
    engine.finish()
}

fn poll_flags(source: Source) -> PollFlags {
    if source.wants_write() {
        PollFlags::POLLOUT
    } else {
        PollFlags::POLLIN
    }
}

/// What is left until `deadline`, for `poll`.
pub(crate) fn remaining(deadline: Option<Instant>) -> PollTimeout {
    let Some(deadline) = deadline else {
        return PollTimeout::NONE;
    };
    let left = deadline.saturating_duration_since(Instant::now());
    // Round up so the poll never wakes a hair early and spins.
    let millis = left.as_nanos().div_ceil(1_000_000);
    PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::isolate::Isolate;
    use crate::parent::backend::Backend;
    use crate::parent::stdio::Stderr;
    use std::os::fd::AsFd as _;
    use std::os::unix::process::CommandExt as _;

    /// An engine over `sh -c script`, started in its own group.
    fn engine_for<'a>(
        script: &str,
        reply: &'a mut ReplyChannel,
        deadline: Option<Instant>,
    ) -> CallEngine<'a, 'static> {
        let (output, stdio) = OutputRelay::create(&Stderr::Capture).unwrap();
        let started = Instant::now();
        let process = std::process::Command::new("sh")
            .args(["-c", script])
            .stdout(stdio.stdout)
            .stderr(stdio.stderr)
            .process_group(0)
            .spawn()
            .unwrap();
        let child = Child::adopt(process.id().cast_signed(), started).unwrap();
        // The engine's `Child` reaps it; std's handle neither waits nor kills.
        #[allow(clippy::zombie_processes)]
        drop(process);
        CallEngine::new(child, deadline, reply, Outgoing::none(), output, None)
    }

    #[test]
    fn the_engine_watches_the_exit_first_and_finishes_on_it() {
        let mut reply = ReplyChannel::create(&Isolate::new().backend(Backend::Pipe), 1).unwrap();
        let mut engine = engine_for("echo oops >&2; exit 3", &mut reply, None);
        let sources: Vec<Source> = engine.watches().iter().map(|w| w.source).collect();
        assert_eq!(
            sources,
            [Source::Exit, Source::Reply, Source::Output, Source::Output]
        );
        // Output alone does not end the call.
        assert_eq!(engine.on_ready([Source::Output]), Step::Wait);
        let pidfd = engine.watches()[0].fd.try_clone_to_owned().unwrap();
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(10_000u16)).unwrap();
        assert_eq!(engine.on_ready([Source::Exit]), Step::Finished);
        assert!(engine.is_over());
        let exit = engine.finish().unwrap();
        assert_eq!(exit.termination, Some(Termination::Exited(3)));
        assert!(!exit.timed_out);
        assert_eq!(exit.stderr.bytes, b"oops\n");
    }

    #[test]
    fn a_passed_deadline_kills_the_group_and_the_exit_says_so() {
        let mut reply = ReplyChannel::create(&Isolate::new().backend(Backend::Pipe), 1).unwrap();
        let now = Instant::now();
        let mut engine = engine_for("sleep 30", &mut reply, Some(now));
        assert!(engine.is_past_deadline(now));
        assert_eq!(engine.on_deadline(), Step::Finished);
        let exit = engine.finish().unwrap();
        assert!(exit.timed_out);
        assert_eq!(
            exit.termination,
            Some(Termination::Signaled {
                signal: libc::SIGKILL,
                core_dumped: false
            })
        );
    }
}
