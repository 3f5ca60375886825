//! One request and its answer on a worker's channel: the [`Exchange`]
//! state machine, its blocking driver ([`WorkerProcess::exchange`]) and
//! the reading of the frames that arrive. The awaiting driver is
//! `pool/awaited.rs`.

use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, poll};

use super::WorkerProcess;
use crate::parent::supervise::remaining;
use crate::pool::readiness::Found;
use crate::sys;
use crate::vocabulary::error::Error;
use crate::wire::{CallId, FrameError, FrameKind, FrameReader};

/// Read from the channel per wake-up, so a flooding worker cannot starve
/// the deadline check.
const READ_BUDGET: usize = 16 << 20;

/// How long a worker that closed its channel without answering may take to
/// exit before it is killed: it can never answer, but its exit status (a
/// crash closes the channel a moment before the process is reaped) says why.
const EXIT_AFTER_EOF: Duration = Duration::from_secs(1);

impl WorkerProcess {
    /// Sends `request`, then reads until a frame for the call `call_id`
    /// that ends the exchange (`Hello` or an answer) has arrived whole in
    /// `frames`. The blocking driver of [`Exchange`].
    pub(super) fn exchange(
        &mut self,
        request: &[u8],
        call_id: CallId,
        frames: &mut FrameReader,
        deadline: Option<Instant>,
        progress: &mut dyn FnMut(&[u8]) -> Result<(), Error>,
    ) -> Result<(), Loss> {
        if let Some(readiness) = &mut self.readiness {
            readiness.reclaim(); // its events must not wake a runtime's thread
        }
        let mut exchange = self.begin(request, call_id, deadline)?;
        loop {
            let (channel, wake) = exchange.next_wait(Instant::now())?;
            let ready = self.wait(channel, wake)?;
            if self.on_ready(&mut exchange, ready, frames, progress)? {
                return Ok(());
            }
        }
    }

    /// Starts an exchange: sends what the channel takes of `request`.
    pub(crate) fn begin<'r>(
        &mut self,
        request: &'r [u8],
        call_id: CallId,
        deadline: Option<Instant>,
    ) -> Result<Exchange<'r>, Loss> {
        self.output.clear_tail();
        let mut outgoing = request;
        if !outgoing.is_empty() {
            match self.channel.send_some(outgoing) {
                Ok(n) => outgoing = &outgoing[n..],
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                // Nothing was received: the request never ran (docs/FAULTS.md F11).
                Err(_) => return Err(Loss::Undelivered),
            }
        }
        Ok(Exchange {
            outgoing,
            sent: request.len() - outgoing.len(),
            call_id,
            deadline,
            exit_by: None,
        })
    }

    /// Acts on what a wait found: relays output, sends more of the
    /// request, takes the frames that arrived. `true` once the answer is
    /// whole.
    pub(crate) fn on_ready(
        &mut self,
        exchange: &mut Exchange<'_>,
        ready: Ready,
        frames: &mut FrameReader,
        progress: &mut dyn FnMut(&[u8]) -> Result<(), Error>,
    ) -> Result<bool, Loss> {
        if ready.output {
            self.output.relay_available();
        }
        if ready.writable {
            match self.channel.send_some(exchange.outgoing) {
                Ok(n) => {
                    exchange.outgoing = &exchange.outgoing[n..];
                    exchange.sent += n;
                }
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                Err(_) => exchange.outgoing = &[], // it died; its exit will say why
            }
        }
        if ready.readable || ready.exited {
            let budget = if ready.exited {
                usize::MAX
            } else {
                READ_BUDGET
            };
            let ended = read_available(self.channel.incoming(), frames.buffer(), budget);
            if take_frames(frames, exchange.call_id, progress)? {
                return Ok(true);
            }
            if ended && exchange.exit_by.is_none() {
                exchange.exit_by = Some(Instant::now() + EXIT_AFTER_EOF);
            }
        }
        if ready.exited {
            // A worker that died before it read any of the request never
            // ran it (docs/FAULTS.md F11): the pool sends it to another.
            if self.channel.untaken(exchange.sent) {
                return Err(Loss::Undelivered);
            }
            return Err(Loss::Died);
        }
        Ok(false)
    }

    /// Polls the process, the channel (for `channel`, unless `None`) and
    /// the output pipes.
    fn wait(&self, channel: Option<PollFlags>, deadline: Option<Instant>) -> Result<Ready, Loss> {
        let Some(pidfd) = self.child.pidfd() else {
            return Err(Loss::Died);
        };
        // The common case, waiting for an answer: the epoll set made once.
        if channel == Some(PollFlags::POLLIN)
            && let Some(readiness) = &self.readiness
        {
            let found = readiness
                .wait(remaining(deadline))
                .map_err(|_| Loss::Died)?;
            return Ok(found.into());
        }
        let mut fds = vec![PollFd::new(pidfd, PollFlags::POLLIN)];
        if let Some(flags) = channel {
            fds.push(PollFd::new(self.channel.incoming(), PollFlags::POLLIN));
            if flags.contains(PollFlags::POLLOUT) {
                fds.push(PollFd::new(self.channel.outgoing(), PollFlags::POLLOUT));
            }
        }
        let outputs = fds.len();
        fds.extend(
            self.output
                .poll_fds()
                .map(|fd| PollFd::new(fd, PollFlags::POLLIN)),
        );
        match poll(&mut fds, remaining(deadline)) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return Err(Loss::Died),
        }
        let events = |fd: &PollFd<'_>| fd.revents().unwrap_or(PollFlags::POLLERR);
        let (incoming, outgoing) = match outputs {
            1 => (PollFlags::empty(), PollFlags::empty()),
            2 => (events(&fds[1]), PollFlags::empty()),
            _ => (events(&fds[1]), events(&fds[2])),
        };
        Ok(Ready {
            exited: !events(&fds[0]).is_empty(),
            readable: incoming
                .intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR),
            // An error says the worker is gone: the send that follows tells.
            writable: !outgoing.is_empty(),
            output: fds[outputs..].iter().any(|fd| !events(fd).is_empty()),
        })
    }
}

/// One request and its answer on a worker's channel, as a state machine
/// that a blocking driver ([`WorkerProcess::exchange`]) or an awaiting one
/// (`awaited.rs`) runs: [`next_wait`](Self::next_wait) says what to wait
/// for, [`WorkerProcess::on_ready`] acts on what the wait found.
#[derive(Debug)]
pub(crate) struct Exchange<'r> {
    /// What the channel has not taken yet of the request.
    outgoing: &'r [u8],
    /// How much of it the channel has taken.
    sent: usize,
    call_id: CallId,
    deadline: Option<Instant>,
    /// Once the channel has ended without an answer: when the worker
    /// must have exited. The channel is not polled any more (it would
    /// stay readable, and the loop would spin).
    exit_by: Option<Instant>,
}

impl Exchange<'_> {
    /// What to wait for at `now`: the channel (`None`: not the channel)
    /// and the time to wake up at; or the loss, once a time is up.
    pub(crate) fn next_wait(
        &self,
        now: Instant,
    ) -> Result<(Option<PollFlags>, Option<Instant>), Loss> {
        if self.deadline.is_some_and(|deadline| now >= deadline) {
            return Err(Loss::TimedOut);
        }
        if self.exit_by.is_some_and(|by| now >= by) {
            return Err(Loss::BadFrame(FrameError::Malformed(format!(
                "the worker closed its channel without answering and did not exit within {EXIT_AFTER_EOF:?}"
            ))));
        }
        let channel = self.exit_by.is_none().then(|| {
            if self.outgoing.is_empty() {
                PollFlags::POLLIN
            } else {
                PollFlags::POLLIN | PollFlags::POLLOUT
            }
        });
        Ok((channel, self.deadline.into_iter().chain(self.exit_by).min()))
    }
}

/// What a wait found.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Ready {
    pub(crate) exited: bool,
    pub(crate) readable: bool,
    pub(crate) writable: bool,
    pub(crate) output: bool,
}

impl From<Found> for Ready {
    fn from(found: Found) -> Self {
        Self {
            exited: found.exited,
            readable: found.readable,
            writable: false,
            output: found.output,
        }
    }
}

/// Why an exchange did not end with an answer.
#[derive(Debug)]
pub(crate) enum Loss {
    Undelivered,
    Died,
    TimedOut,
    BadFrame(FrameError),
    /// A progress message did not decode.
    BadProgress(Error),
}

impl Loss {
    /// Whether the worker is killed for it (it may still be running):
    /// its deadline passed, or it sent what it must not.
    pub(crate) fn kills_the_worker(&self) -> bool {
        matches!(
            self,
            Self::TimedOut | Self::BadFrame(_) | Self::BadProgress(_)
        )
    }
}

/// Takes the frames that arrived whole: progress messages are handed over
/// (and dropped), and a frame that ends the exchange (`Hello` or an
/// answer) stops the walk, `true`. Every frame must belong to the call
/// `call_id`, and nothing may follow the one that ends it.
fn take_frames(
    frames: &mut FrameReader,
    call_id: CallId,
    progress: &mut dyn FnMut(&[u8]) -> Result<(), Error>,
) -> Result<bool, Loss> {
    while let Some(frame) = frames.next_frame().map_err(Loss::BadFrame)? {
        let malformed = |message| Err(Loss::BadFrame(FrameError::Malformed(message)));
        if frame.call_id != call_id {
            return malformed(format!(
                "a {:?} frame for call {}, during call {call_id}",
                frame.kind, frame.call_id
            ));
        }
        match frame.kind {
            FrameKind::Progress => {
                progress(frames.payload(&frame)).map_err(Loss::BadProgress)?;
                frames.consume();
            }
            FrameKind::Fault => {}
            FrameKind::Hello
            | FrameKind::Return
            | FrameKind::ArenaReturn
            | FrameKind::Panic
            | FrameKind::Failure => {
                let extra = frames.pending();
                if extra != 0 {
                    return malformed(format!("{extra} bytes after the {:?} frame", frame.kind));
                }
                return Ok(true);
            }
            other => return malformed(format!("unexpected {other:?} frame from the worker")),
        }
    }
    Ok(false)
}

/// Reads what the channel holds, up to `budget` bytes; `true` once the
/// channel has ended (the worker closed it, or died). A read that left
/// room in the buffer drained the channel: stop there rather than pay a
/// read that fails with `EAGAIN` (a warm call's answer comes in one read;
/// anything later makes the next wait ready).
///
/// The first read makes room for a small answer only
/// ([`sys::SMALL_READ`]).
fn read_available(channel: BorrowedFd<'_>, reply: &mut Vec<u8>, budget: usize) -> bool {
    let mut taken = 0;
    let mut room = sys::SMALL_READ;
    while taken < budget {
        match sys::read_into_spare(channel, reply, room) {
            Ok(0) => return true,
            Ok(_) if reply.len() < reply.capacity() => return false, // a short read
            Ok(n) => taken += n,
            Err(e) => return e.kind() != std::io::ErrorKind::WouldBlock,
        }
        room = 64 << 10;
    }
    false
}
