//! The worker's side: a re-executed child that, instead of one call, serves
//! the requests that come down its request pipe until told to leave or the
//! pipe closes (`PROTOCOL.md` has the frames).

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

/// A worker's descriptors (`pool/process/channel.rs` says why pipes).
pub(crate) struct Ends {
    /// The request pipe's read end.
    pub(crate) requests: OwnedFd,
    /// The answer pipe's write end: answers, progress, fault records.
    pub(crate) answers: OwnedFd,
    /// The shared arena's memfd.
    pub(crate) arena: OwnedFd,
}

/// Serves `name` until a `Shutdown` frame or the end of the request pipe.
/// The registered init hook (a task's) runs first, before `Hello`, so a
/// worker whose init crashes never looks ready.
pub(crate) fn serve_worker(ends: Ends, name: &str, setup: &ChildSetup, depth: u32) -> ! {
    let Ends {
        requests,
        answers,
        arena,
    } = ends;
    sys::close_fds_except(&mut [requests.as_raw_fd(), answers.as_raw_fd(), arena.as_raw_fd()]);
    arena::install(arena);
    // `answers` lives until the worker leaves by `_exit`.
    let fd = answers.as_raw_fd();
    child::become_child(fd, NO_CALL, depth, true);
    // Progress frames go to the same pipe as the answers.
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
    let mut requests = Requests::new(requests.as_fd());
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

/// Requests as they arrive on the request pipe. A request comes whole in
/// one read as a rule, so it costs one `read(2)` rather than one for its
/// header and one for its payload (a warm call's round trip is a few
/// syscalls on each side: each one counts). The worker waits for the next
/// one asleep in that `read`: a pipe's reader is woken only by data.
struct Requests<'a> {
    pipe: BorrowedFd<'a>,
    /// What was read and not yet served: the current request first.
    frames: FrameReader,
}

/// A buffer that held a request larger than this is let go after it,
/// rather than kept for the life of the worker.
const KEEP_BUFFER: usize = 1 << 20;

impl<'a> Requests<'a> {
    fn new(pipe: BorrowedFd<'a>) -> Self {
        Self {
            pipe,
            frames: FrameReader::new(Limit::Each(MAX_FRAME_LEN)),
        }
    }

    /// The next request; `None` on `Shutdown`, at the end of the pipe,
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
            match sys::read_into_spare(self.pipe, self.frames.buffer(), 4 << 10) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    fn payload(&self, request: &FrameAt) -> &[u8] {
        self.frames.payload(request)
    }
}
