//! The drain thread: moves a job's stdout and stderr from their pipes into
//! its log, in arrival order.
//!
//! One thread polls both pipes, so one thread appends and the order in the
//! log is the order the chunks were read. It also polls a "leader gone" pipe:
//! once the job's leader is reaped (and its group killed), the pipes normally
//! reach EOF at once; a process that escaped the group (`setsid`) could keep
//! them open forever, so after the leader is gone the drain only lingers
//! while output keeps coming, and never longer than [`LINGER_MAX`].

use std::fs::File;
use std::io::{self, PipeReader, PipeWriter, Read};
use std::os::fd::AsFd;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::info::Stream;
use super::log::LogWriter;

/// After the leader is gone, stop once the pipes were quiet this long...
const LINGER_IDLE: Duration = Duration::from_millis(100);
/// ...or this long after the leader was gone, whichever comes first.
const LINGER_MAX: Duration = Duration::from_secs(1);

const CHUNK: usize = 64 * 1024;

/// Starts draining the job's pipes into `log` (`stderr` is `None` when both
/// streams share the `stdout` pipe). Drop (or write to) the
/// returned [`PipeWriter`] once the leader has been reaped; join the handle to
/// know all output is in the log (the log is left open for the caller to
/// close).
pub(crate) fn spawn(
    stdout: File,
    stderr: Option<File>,
    log: LogWriter,
) -> io::Result<(JoinHandle<()>, PipeWriter)> {
    let (leader_gone, leader_gone_tx) = io::pipe()?;
    let drain = Drain {
        stdout: Some(stdout),
        stderr,
        leader_gone: Some(leader_gone),
        log,
    };
    let handle = thread::Builder::new()
        .name("bombsquad-job-drain".into())
        .spawn(move || drain.run())?;
    Ok((handle, leader_gone_tx))
}

struct Drain {
    stdout: Option<File>,
    stderr: Option<File>,
    /// `None` once the leader is known to be gone.
    leader_gone: Option<PipeReader>,
    log: LogWriter,
}

/// Which of the polled descriptors have something (data, EOF or error).
#[derive(Default)]
struct Ready {
    stdout: bool,
    stderr: bool,
    leader_gone: bool,
}

impl Drain {
    fn run(mut self) {
        let mut buf = vec![0u8; CHUNK];
        let mut gone_since: Option<Instant> = None;
        while self.stdout.is_some() || self.stderr.is_some() {
            let Some(timeout) = poll_timeout(gone_since) else {
                break;
            };
            let ready = match self.poll(timeout) {
                Ok(Some(ready)) => ready,
                Ok(None) => break, // quiet for LINGER_IDLE after the leader left
                Err(Errno::EINTR) => continue,
                Err(_) => break,
            };
            if ready.stdout
                && !drain_once(&mut self.stdout, &mut buf, &mut self.log, Stream::Stdout)
            {
                self.stdout = None;
            }
            if ready.stderr
                && !drain_once(&mut self.stderr, &mut buf, &mut self.log, Stream::Stderr)
            {
                self.stderr = None;
            }
            if ready.leader_gone {
                self.leader_gone = None;
                gone_since = Some(Instant::now());
            }
        }
        // The waiter closes the log once the job's status is final, so that
        // a reader's EOF means the job has ended.
    }

    /// Waits for any descriptor to be ready; `Ok(None)` on timeout.
    fn poll(&self, timeout: PollTimeout) -> nix::Result<Option<Ready>> {
        let watched = [
            self.stdout.as_ref().map(AsFd::as_fd),
            self.stderr.as_ref().map(AsFd::as_fd),
            self.leader_gone.as_ref().map(AsFd::as_fd),
        ];
        let mut fds: Vec<PollFd<'_>> = watched
            .iter()
            .flatten()
            .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
            .collect();
        if poll(&mut fds, timeout)? == 0 {
            return Ok(None);
        }
        let mut results = fds
            .iter()
            .map(|fd| fd.revents().is_some_and(|events| !events.is_empty()));
        let mut next_if = |present: bool| present && results.next().unwrap_or(false);
        Ok(Some(Ready {
            stdout: next_if(watched[0].is_some()),
            stderr: next_if(watched[1].is_some()),
            leader_gone: next_if(watched[2].is_some()),
        }))
    }
}

/// How long the next poll may block: forever while the leader lives, then
/// bounded by the linger limits; `None` once lingering is over.
fn poll_timeout(gone_since: Option<Instant>) -> Option<PollTimeout> {
    let Some(since) = gone_since else {
        return Some(PollTimeout::NONE);
    };
    let left = LINGER_MAX.checked_sub(since.elapsed())?.min(LINGER_IDLE);
    let millis = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
    (millis > 0).then(|| PollTimeout::from(millis))
}

/// Reads one chunk from a ready pipe into the log; false at EOF or error.
fn drain_once<R: Read>(
    pipe: &mut Option<R>,
    buf: &mut [u8],
    log: &mut LogWriter,
    stream: Stream,
) -> bool {
    let Some(reader) = pipe else {
        return false;
    };
    loop {
        match reader.read(buf) {
            Ok(0) => return false,
            Ok(n) => {
                log.append(stream, &buf[..n]);
                return true;
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
}
