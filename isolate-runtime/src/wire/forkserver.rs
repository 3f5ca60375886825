//! The fork server's protocol, both halves (`start::forkserver` is the
//! caller's, `child::forkserver` the server's): the marker variable, the
//! request, and the status report.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::sys::socket::{MsgFlags, send};

use crate::sys;
use crate::wire::marker::TOKEN_LEN;

/// The environment variable that makes a re-executed binary a fork server.
pub(crate) const SERVER_VAR: &str = "BOMBSQUAD_FORKSERVER";

/// A request: depth (u32, little endian), the call's token, then
/// [`WITH_CONTEXT`] or 0.
pub(crate) const REQUEST_LEN: usize = 4 + TOKEN_LEN + 1;

/// The request's last byte when two more descriptors follow the usual
/// four: the caller's context (`context.rs`).
pub(crate) const WITH_CONTEXT: u8 = 1;

/// A reaped child's report: wait status (i32), user and system CPU time in
/// microseconds and peak RSS in KiB (u64 each), little endian.
pub(crate) const STATUS_LEN: usize = 4 + 3 * 8;

/// Asks the server to reap a child whose group the caller has killed, and
/// returns its wait status and resource usage.
pub(crate) fn collect_status(status: BorrowedFd<'_>) -> io::Result<(i32, libc::rusage)> {
    send(status.as_raw_fd(), b"r", MsgFlags::MSG_NOSIGNAL)?;
    let mut report = [0u8; STATUS_LEN];
    sys::read_exact(status, &mut report)?;
    let field = |at: usize| u64::from_le_bytes(report[at..at + 8].try_into().unwrap_or_default());
    let usage = sys::rusage_of(field(4), field(12), field(20));
    let wait_status = i32::from_le_bytes(report[..4].try_into().unwrap_or_default());
    Ok((wait_status, usage))
}

/// A reaped child's report, as the server sends it.
pub(crate) fn status_report(status: i32, usage: &libc::rusage) -> [u8; STATUS_LEN] {
    let micros = |t: libc::timeval| {
        u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000 + u64::try_from(t.tv_usec).unwrap_or(0)
    };
    let mut report = [0u8; STATUS_LEN];
    report[..4].copy_from_slice(&status.to_le_bytes());
    report[4..12].copy_from_slice(&micros(usage.ru_utime).to_le_bytes());
    report[12..20].copy_from_slice(&micros(usage.ru_stime).to_le_bytes());
    report[20..].copy_from_slice(&u64::try_from(usage.ru_maxrss).unwrap_or(0).to_le_bytes());
    report
}
