//! Fork mode: the caller forks itself (`sys::fork`). The child runs the closure
//! directly and leaves by `_exit`; until the closure runs it makes raw
//! syscalls only (docs/FAULTS.md L16).

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Instant;

use crate::child;
use crate::child::limits::{self, ForkSetup};
use crate::child::progress::{self, ProgressSink};
use crate::options::isolate::Isolate;
use crate::options::{sandbox, throttle};
use crate::parent::backend::ReplyChannel;
use crate::parent::classify::OomWatch;
use crate::parent::outcome;
use crate::parent::progress::ProgressStream;
use crate::parent::stdio::OutputRelay;
use crate::parent::supervise::{Child, Outgoing, supervise};
use crate::start::fork_warning;
use crate::sys::{self, fork_gate};
use crate::vocabulary::error::Error;
use crate::wire::codec::Codec;

/// Runs `function` in a forked child with `options`, delivering the
/// messages it sends to `progress`, if any (the function builds its own
/// child-side `Progress`).
#[track_caller]
pub fn call<R>(
    options: &Isolate,
    codec: Codec<R>,
    progress: Option<&mut dyn ProgressSink>,
    function: impl FnOnce() -> R,
) -> Result<R, Error> {
    let depth = child::next_depth()?;
    sandbox::check(options.sandbox.as_ref())?;
    // Held until the child is reaped.
    let _permit = throttle::acquire();
    let call_id = crate::wire::next_call_id();
    let mut reply = ReplyChannel::create(options, call_id)?;
    let mut progress = ProgressStream::create(progress, call_id, options.result_limit())?;
    let null = File::open("/dev/null")
        .map_err(|e| Error::spawn("open /dev/null for the child's stdin", e))?;
    let (output, stdio) = OutputRelay::create(&options.stderr)?;
    crate::child::panic::install_hook();
    let parent = std::process::id().cast_signed();
    let deadline = options.deadline();
    let setup = ForkSetup::new(options);
    let oom = OomWatch::start();
    // Worked out before the fork: every page of code the child runs first
    // is a page fault of its own.
    let fds = ChildFds {
        reply: reply.child_end().as_raw_fd(),
        progress: progress.as_ref().map(|p| p.child_end().as_raw_fd()),
        stdio: [null.as_fd(), stdio.stdout.as_fd(), stdio.stderr.as_fd()],
    };
    let started = Instant::now();
    let gate = fork_gate::exclusive();
    // The child branch runs `run_child`, which never returns: it makes raw
    // syscalls, runs the closure and leaves with `_exit` (`sys::fork`'s rule).
    let forked = sys::fork();
    // Both processes: the child before it runs anything that could wait on
    // the gate (a nested call).
    drop(gate);
    match forked {
        Err(e) => Err(Error::spawn("fork the child process", e)),
        Ok(nix::unistd::ForkResult::Child) => {
            run_child(fds, parent, call_id, depth, &setup, codec, function)
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            sys::put_in_own_group(child.as_raw());
            if let Some(progress) = &mut progress {
                progress.close_child_end();
            }
            drop(null);
            // The output pipes' write ends stay open here until the call
            // is over, as the reply pipe's does (`PipeReply` says why).
            let child = Child::adopt(child.as_raw(), started)?;
            // While the child sets itself up: the threads were the same at
            // the fork.
            fork_warning::check(options.timeout.is_some());
            let exit = supervise(
                child,
                deadline,
                &mut reply,
                Outgoing::none(),
                output,
                progress.as_mut(),
            )?;
            drop(stdio);
            outcome::conclude(exit, reply, codec, options, &oom)
        }
    }
}

/// The descriptors a forked child keeps: its reply channel, when the
/// function takes a `Progress` its progress pipe, and what becomes its
/// stdin, stdout and stderr.
#[derive(Debug, Clone, Copy)]
struct ChildFds<'a> {
    reply: RawFd,
    progress: Option<RawFd>,
    stdio: [BorrowedFd<'a>; 3],
}

/// The forked child: hygiene first (own process group, only its reply fd,
/// progress fd and stdio, stdin from /dev/null, exec-like signal state,
/// death with the parent, no core files), then the fault handler and the
/// limits, then the closure.
fn run_child<R>(
    fds: ChildFds<'_>,
    parent: i32,
    call_id: crate::wire::CallId,
    depth: u32,
    setup: &ForkSetup,
    codec: Codec<R>,
    function: impl FnOnce() -> R,
) -> ! {
    sys::lead_own_process_group();
    for (fd, target) in fds.stdio.into_iter().zip(0..) {
        let _ = sys::dup_onto(fd, target);
    }
    let reply_fd = fds.reply;
    let progress_fd = fds.progress.unwrap_or(-1);
    sys::close_fds_except(&mut [reply_fd, progress_fd]);
    sys::drop_inherited_c_stdio();
    sys::reset_signal_state();
    if !sys::die_with_parent(parent) {
        sys::exit_now(2);
    }
    sys::disable_core_dumps();
    limits::enter_forked_child(setup, reply_fd);
    child::become_child(reply_fd, call_id, depth, false);
    progress::set_fd(progress_fd);
    child::enter_sandbox(setup.sandbox());
    child::serve(codec, function)
}
