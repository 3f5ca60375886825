//! What the client and the service say to each other over the Unix socket.
//!
//! One request per connection. Every message is a frame: a little-endian
//! `u32` length, then that many bytes. The client sends one [`Request`]
//! (MessagePack); the service answers with one [`Reply`]; after a
//! `Reply::Logs`, frames of raw output follow, ended by an empty frame.

use std::io::{self, Read, Write};
use std::path::PathBuf;

use bombsquad::jobs::{JobId, JobInfo};
use serde::{Deserialize, Serialize};

/// Bumped on any change to the messages; the service refuses other versions.
pub const VERSION: u32 = 1;

/// The largest request the service reads (a command line with its
/// environment); anything longer is refused unread.
pub const MAX_REQUEST: u32 = 1 << 20;

/// The largest reply the client reads (a long `list`).
pub const MAX_REPLY: u32 = 64 << 20;

/// The socket's name inside the service's directory.
pub const SOCKET: &str = "jobs.sock";

#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub version: u32,
    pub op: Op,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Op {
    Start(StartJob),
    Status { id: JobId },
    Logs { id: JobId, follow: bool },
    Stop { id: JobId, kill: bool },
    List,
}

/// A job as the client asks for it; it runs in the client's working
/// directory, with the client's environment on top of the service's.
#[derive(Debug, Serialize, Deserialize)]
pub struct StartJob {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub memory_bytes: Option<u64>,
    pub cpus: Option<f64>,
    pub pids: Option<u64>,
    pub merged_output: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    Started(JobId),
    Info(Box<JobInfo>),
    List(Vec<JobInfo>),
    /// Output frames follow.
    Logs,
    Failed(Failure),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Failure {
    /// No such job for this caller (also another owner's job).
    NoSuchJob,
    /// Anything else, with the message to show.
    Other(String),
}

/// The one message for an unknown id and for another owner's job.
pub const NO_SUCH_JOB: &str = "no such job";

pub fn write_frame(to: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too long"))?;
    let mut frame = Vec::with_capacity(4 + bytes.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(bytes);
    to.write_all(&frame)
}

/// Reads one frame of at most `max` bytes; `Ok(None)` on a clean EOF before it.
///
/// # Errors
///
/// `InvalidData` for a frame longer than `max` (not read), or the reader's error.
pub fn read_frame(from: &mut impl Read, max: u32) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match from.read_exact(&mut len) {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        other => other?,
    }
    let len = u32::from_le_bytes(len);
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes is over the limit of {max}"),
        ));
    }
    let mut bytes = vec![0u8; len as usize];
    from.read_exact(&mut bytes)?;
    Ok(Some(bytes))
}

pub fn send<T: Serialize>(to: &mut impl Write, message: &T) -> io::Result<()> {
    let bytes = rmp_serde::to_vec_named(message).map_err(io::Error::other)?;
    write_frame(to, &bytes)
}

/// Reads one message; `InvalidData` if it is missing or does not decode.
pub fn receive<T: for<'de> Deserialize<'de>>(from: &mut impl Read, max: u32) -> io::Result<T> {
    let bytes = read_frame(from, max)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no message"))?;
    rmp_serde::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
