//! The worker's side: a re-executed child that, instead of one call, serves
//! requests on its channel until told to leave or the channel closes
//! (`PROTOCOL.md`).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};

use serde::{Deserialize, Serialize};

use crate::child::limits::{self, ChildSetup};
use crate::child::registry::{self, Entry};
use crate::wire::arena;
use crate::wire::codec;
use crate::wire::{FrameAt, FrameKind, FrameReader, Limit, MAX_FRAME_LEN, NO_CALL};
use crate::{child, sys};

/// The protocol version a worker speaks in its `Hello`: 2 since frames
/// carry a call id and a checksum.
pub(crate) const PROTOCOL_VERSION: u32 = 2;

/// The worker's first frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Hello {
    pub(crate) protocol: u32,
    pub(crate) pid: u32,
}

/// Serves `name` on `channel` until a `Shutdown` frame or the end of the
/// channel. The registered init hook (a task's) runs first, before `Hello`,
/// so a worker whose init crashes never looks ready.
pub(crate) fn serve_worker(
    channel: OwnedFd,
    arena_fd: OwnedFd,
    name: &str,
    setup: &ChildSetup,
    depth: u32,
) -> ! {
    sys::close_fds_except(&mut [channel.as_raw_fd(), arena_fd.as_raw_fd()]);
    arena::install(arena_fd);
    // `channel` lives until the worker leaves by `_exit`.
    let fd = channel.as_raw_fd();
    child::become_child(fd, NO_CALL, depth, true);
    // Progress frames go to the same socket as the answers.
    crate::child::progress::set_fd(fd);
    limits::enter_worker(setup, fd);
    let entry = match registry::find(name) {
        Ok(entry) => entry,
        Err(message) => child::fail(&child::ChildFailure::UnknownFunction { message }),
    };
    // The program's own set-up, then the sandbox for the rest of the
    // worker's life (its task's init included), as in a one-shot child.
    registry::run_child_inits();
    child::enter_sandbox(setup.sandbox());
    initialize(entry);
    let hello = Hello {
        protocol: PROTOCOL_VERSION,
        pid: std::process::id(),
    };
    let sent = codec::to_msgpack(&hello)
        .is_ok_and(|payload| child::send(FrameKind::Hello, &payload).is_ok());
    if !sent {
        child::leave();
    }
    let mut requests = Requests::new(channel.as_fd());
    while let Some(request) = requests.next() {
        // Every frame sent for this request echoes its id.
        child::set_call_id(request.call_id);
        limits::arm_cpu_for_call(setup);
        (entry.run)(requests.payload(&request));
        child::flush_output();
    }
    child::leave()
}

/// Runs the entry's init hook; a panic there is reported (the panic hook
/// sends it) and ends the worker before it says hello.
fn initialize(entry: &Entry) {
    if let Some(init) = entry.init
        && catch_unwind(AssertUnwindSafe(init)).is_err()
    {
        child::leave();
    }
}

/// Requests as they arrive on the channel. A request comes whole in one
/// read as a rule, so it costs one `read(2)` rather than one for its header
/// and one for its payload (a warm call's round trip is a few syscalls on
/// each side: each one counts).
struct Requests<'a> {
    channel: BorrowedFd<'a>,
    /// What was read and not yet served: the current request first.
    frames: FrameReader,
}

/// A buffer that held a request larger than this is let go after it,
/// rather than kept for the life of the worker.
const KEEP_BUFFER: usize = 1 << 20;

impl<'a> Requests<'a> {
    fn new(channel: BorrowedFd<'a>) -> Self {
        Self {
            channel,
            frames: FrameReader::new(Limit::Each(MAX_FRAME_LEN)),
        }
    }

    /// The next request; `None` on `Shutdown`, at the end of the channel,
    /// or on anything the parent would never send (a frame that does not
    /// match its checksum included).
    fn next(&mut self) -> Option<FrameAt> {
        self.frames.consume();
        let buffer = self.frames.buffer();
        if buffer.capacity() > KEEP_BUFFER {
            buffer.shrink_to(KEEP_BUFFER);
        }
        loop {
            match self.frames.next_frame() {
                Ok(Some(frame)) if frame.kind == FrameKind::Request => return Some(frame),
                Ok(Some(_)) | Err(_) => return None,
                Ok(None) => {}
            }
            wait_readable(self.channel);
            match sys::read_into_spare(self.channel, self.frames.buffer(), 4 << 10) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    fn payload(&self, request: &FrameAt) -> &[u8] {
        self.frames.payload(request)
    }
}

/// Sleeps until the channel has data (or an error, or its end), in `poll`
/// rather than in `read`.
///
/// Why: a reader asleep in `read` on a Unix socket is woken by every
/// write-space event on it as well, and the parent makes one each time it
/// reads a reply this worker sent (the reply's buffer is freed). A worker
/// already back asleep by then wakes for nothing, and with a sync wake-up,
/// onto the parent's CPU. On the project's VM that happened on most calls
/// of about half the runs (1.6-1.7 context switches per call instead of
/// 1.0): a warm call took ~20 µs in those runs and ~14.5 µs in the others
/// (1.58x or 1.15x its floor, by where the processes happened to run).
/// `poll` wakes only for what it asked for: 1.0 switch per call, ~17.5 µs
/// (1.38-1.45x) in every run, for one more syscall (BENCHMARKS.md "Warm
/// workers").
fn wait_readable(channel: BorrowedFd<'_>) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(channel, PollFlags::POLLIN)];
    // EINTR or an error: the read that follows tells.
    let _ = poll(&mut fds, PollTimeout::NONE);
}
