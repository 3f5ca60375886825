//! The child's stdout and stderr: pipes the parent drains while the child
//! runs (so a child that floods them never blocks, docs/FAULTS.md C9), replayed
//! through `print!`/`eprint!` so that libtest's capture sees them (H1, H2),
//! with the last 64 KiB of stderr kept for the crash report.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt as _;

use nix::errno::Errno;
use nix::fcntl::OFlag;

use crate::sys::{self, fork_gate};
use crate::vocabulary::error::Error;
use crate::vocabulary::output_tail::OutputTail;

/// How much of the child's stderr a report keeps: the end of it.
pub(crate) const STDERR_TAIL_LEN: usize = 64 * 1024;

/// Read per stream per wake-up, so a flooding child cannot starve the
/// deadline check.
const READ_BUDGET: usize = 1 << 20;

/// Read after the child has exited, at most: what it wrote before dying is
/// already in the pipe; anything beyond comes from an escaped grandchild.
const AFTER_EXIT_BUDGET: usize = 4 << 20;

pub(crate) use crate::options::stderr::Stderr;

/// Which of the child's streams a relay carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

/// The parent's end of one of the child's output streams.
#[derive(Debug)]
struct Relay {
    stream: Stream,
    /// `None` once the pipe reached EOF.
    pipe: Option<OwnedFd>,
    sink: Sink,
    /// The end of a UTF-8 character split across reads.
    partial: Vec<u8>,
    tail: Tail,
}

/// Where a relay sends what it reads.
#[derive(Debug)]
enum Sink {
    Replay,
    Discard,
    Append(File),
}

/// The last [`STDERR_TAIL_LEN`] bytes of a stream, and how many came before.
#[derive(Debug, Default)]
struct Tail {
    /// Whether to keep anything at all.
    keep: bool,
    bytes: Vec<u8>,
    total: u64,
}

impl Tail {
    fn push(&mut self, chunk: &[u8]) {
        self.total += chunk.len() as u64;
        if !self.keep {
            return;
        }
        self.bytes.extend_from_slice(chunk);
        // Trim in batches: the copy happens once per tail length, not per read.
        if self.bytes.len() > 2 * STDERR_TAIL_LEN {
            self.bytes.drain(..self.bytes.len() - STDERR_TAIL_LEN);
        }
    }

    fn finish(mut self) -> OutputTail {
        if self.bytes.len() > STDERR_TAIL_LEN {
            self.bytes.drain(..self.bytes.len() - STDERR_TAIL_LEN);
        }
        let kept = self.bytes.len() as u64;
        OutputTail {
            bytes: self.bytes,
            dropped: self.total - kept,
        }
    }
}

/// The child's ends, to install as its fds 1 and 2.
#[derive(Debug)]
pub(crate) struct ChildStdio {
    pub(crate) stdout: OwnedFd,
    pub(crate) stderr: OwnedFd,
}

/// The parent's ends of the child's stdout and stderr.
#[derive(Debug)]
pub(crate) struct OutputRelay {
    stdout: Relay,
    stderr: Relay,
}

impl OutputRelay {
    /// Creates the pipes (and opens the stderr file), returning the child's
    /// ends separately so the caller can hand them over and drop them.
    ///
    /// # Errors
    ///
    /// `Spawn` when a pipe or `/dev/null` or the stderr file cannot be opened.
    pub(crate) fn create(stderr: &Stderr) -> Result<(Self, ChildStdio), Error> {
        let (stdout_pipe, child_stdout) = pipe_from_child("pipe for the child's stdout")?;
        let stdout = Relay::new(Stream::Stdout, Some(stdout_pipe), Sink::Replay, false);
        let (stderr, child_stderr) = match stderr {
            Stderr::Null => {
                let null = File::options()
                    .write(true)
                    .open("/dev/null")
                    .map_err(|e| Error::spawn("open /dev/null for the child's stderr", e))?;
                let relay = Relay::new(Stream::Stderr, None, Sink::Discard, false);
                (relay, OwnedFd::from(null))
            }
            other => {
                let sink = match other {
                    Stderr::Capture => Sink::Discard,
                    Stderr::File(path) => Sink::Append(open_stderr_file(path)?),
                    _ => Sink::Replay,
                };
                let (pipe, child_end) = pipe_from_child("pipe for the child's stderr")?;
                (
                    Relay::new(Stream::Stderr, Some(pipe), sink, true),
                    child_end,
                )
            }
        };
        let child = ChildStdio {
            stdout: child_stdout,
            stderr: child_stderr,
        };
        Ok((Self { stdout, stderr }, child))
    }

    /// The pipes still open, to poll for readability.
    pub(crate) fn poll_fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        [&self.stdout, &self.stderr]
            .into_iter()
            .filter_map(|relay| relay.pipe.as_ref().map(AsFd::as_fd))
    }

    /// Relays what the child has written so far, up to a budget per stream.
    pub(crate) fn relay_available(&mut self) {
        self.stdout.relay(READ_BUDGET);
        self.stderr.relay(READ_BUDGET);
    }

    /// Forgets the stderr tail kept so far: a worker's next call starts a
    /// report of its own.
    pub(crate) fn clear_tail(&mut self) {
        self.stderr.tail.bytes.clear();
        self.stderr.tail.total = 0;
    }

    /// Relays what the exited child left in the pipes, and returns the kept
    /// stderr tail.
    pub(crate) fn finish(mut self) -> OutputTail {
        self.stdout.relay(AFTER_EXIT_BUDGET);
        self.stderr.relay(AFTER_EXIT_BUDGET);
        self.stdout.flush_partial();
        self.stderr.flush_partial();
        self.stderr.tail.finish()
    }
}

impl Relay {
    fn new(stream: Stream, pipe: Option<OwnedFd>, sink: Sink, keep_tail: bool) -> Self {
        Self {
            stream,
            pipe,
            sink,
            partial: Vec::new(),
            tail: Tail {
                keep: keep_tail,
                ..Tail::default()
            },
        }
    }

    /// Reads until the pipe is empty, at EOF, or `budget` bytes were read.
    fn relay(&mut self, budget: usize) {
        // Small first: most calls print nothing, and a 64 KiB stack buffer
        // would take 16 copy-on-write faults on pages a forked child shares.
        let mut small = [0u8; 512];
        let mut large = Vec::new();
        let mut read = 0;
        while read < budget {
            let Some(pipe) = &self.pipe else { return };
            let buf: &mut [u8] = if large.is_empty() {
                &mut small
            } else {
                &mut large
            };
            match nix::unistd::read(pipe, buf) {
                Ok(0) => self.pipe = None,
                Ok(n) => {
                    read += n;
                    let full = n == buf.len();
                    self.tail.push(&buf[..n]);
                    self.emit(&buf[..n]);
                    if full && large.is_empty() {
                        large = vec![0; 64 * 1024];
                    }
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return,
                Err(_) => self.pipe = None,
            }
        }
    }

    fn emit(&mut self, chunk: &[u8]) {
        match &mut self.sink {
            Sink::Discard => {}
            Sink::Append(file) => {
                let _ = file.write_all(chunk);
            }
            Sink::Replay => {
                let _gate = fork_gate::shared();
                let mut pending = std::mem::take(&mut self.partial);
                pending.extend_from_slice(chunk);
                self.partial = replay_utf8(self.stream, &pending).to_vec();
            }
        }
    }

    /// Sends an incomplete character left at the very end, as it is.
    fn flush_partial(&mut self) {
        if !self.partial.is_empty() {
            let _gate = fork_gate::shared();
            write_raw(self.stream, &std::mem::take(&mut self.partial));
        }
    }
}

/// Replays `bytes` and returns an incomplete character at their end.
///
/// Text goes through `print!`/`eprint!`, which libtest captures; bytes that
/// are not UTF-8 go to the real stream unchanged, since the capture only
/// takes text.
fn replay_utf8(stream: Stream, mut bytes: &[u8]) -> &[u8] {
    loop {
        match std::str::from_utf8(bytes) {
            Ok(text) => {
                write_text(stream, text);
                return &[];
            }
            Err(e) => {
                let (valid, rest) = bytes.split_at(e.valid_up_to());
                write_text(stream, std::str::from_utf8(valid).unwrap_or_default());
                let Some(invalid) = e.error_len() else {
                    return rest;
                };
                write_raw(stream, &rest[..invalid]);
                bytes = &rest[invalid..];
            }
        }
    }
}

fn write_text(stream: Stream, text: &str) {
    if text.is_empty() {
        return;
    }
    match stream {
        Stream::Stdout => print!("{text}"),
        Stream::Stderr => eprint!("{text}"),
    }
}

fn write_raw(stream: Stream, bytes: &[u8]) {
    let _ = match stream {
        Stream::Stdout => io::stdout().write_all(bytes),
        Stream::Stderr => io::stderr().write_all(bytes),
    };
}

/// A close-on-exec pipe the parent reads from a child: `(read, write)`,
/// the read end non-blocking (the parent polls it), the write end blocking
/// (a child that outpaces the parent waits). `name` names it in errors:
/// "could not create the {name}".
pub(crate) fn pipe_from_child(name: &str) -> Result<(OwnedFd, OwnedFd), Error> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| Error::spawn(format!("create the {name}"), e))?;
    sys::set_nonblocking(&read).map_err(|e| Error::spawn(format!("configure the {name}"), e))?;
    Ok((read, write))
}

fn open_stderr_file(path: &std::path::Path) -> Result<File, Error> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::spawn(format!("open {} for the child's stderr", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_last_bytes_and_counts_the_rest() {
        let mut tail = Tail {
            keep: true,
            ..Tail::default()
        };
        for _ in 0..5 {
            tail.push(&[b'a'; STDERR_TAIL_LEN]);
        }
        tail.push(b"end");
        let tail = tail.finish();
        assert_eq!(tail.bytes.len(), STDERR_TAIL_LEN);
        assert!(tail.bytes.ends_with(b"aaend"));
        assert_eq!(tail.dropped, 4 * STDERR_TAIL_LEN as u64 + 3);
    }

    #[test]
    fn the_tail_debugs_as_its_last_text() {
        let short = OutputTail {
            bytes: b"oops\n".to_vec(),
            dropped: 0,
        };
        assert_eq!(format!("{short:?}"), r#""oops\n""#);
        let long = OutputTail {
            bytes: [b'a'; 2000].iter().chain(b"end").copied().collect(),
            dropped: 5,
        };
        let shown = format!("{long:?}");
        assert!(shown.starts_with(r#""[984 bytes before]...aaa"#), "{shown}");
        assert!(shown.ends_with(r#"aend""#), "{shown}");
    }

    #[test]
    fn a_split_character_waits_for_its_end() {
        let euro = "€".as_bytes();
        assert_eq!(replay_utf8(Stream::Stdout, &euro[..2]), &euro[..2]);
        assert_eq!(replay_utf8(Stream::Stdout, euro), b"");
    }
}
