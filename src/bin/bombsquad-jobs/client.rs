//! The client commands: each sends one request to the service and prints
//! the answer.

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bombsquad::jobs::{JobInfo, Status, StopType};
use serde_json::json;

use crate::protocol::{self, Failure, MAX_REPLY, NO_SUCH_JOB, Op, Reply, Request, VERSION};

/// How long a reply may take (a `stop` waits for the job's end); `logs
/// --follow` waits for output without a limit.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// What went wrong, and the exit code it maps to.
#[derive(Debug)]
pub enum Fail {
    /// Exit 1: the service refused or failed, or no such job.
    Refused(String),
    /// Exit 2: no service is listening.
    NotRunning(String),
}

impl Fail {
    pub fn exit(self) -> ExitCode {
        let (code, message) = match self {
            Fail::Refused(message) => (1, message),
            Fail::NotRunning(message) => (2, message),
        };
        say!("bombsquad-jobs: {message}");
        ExitCode::from(code)
    }
}

/// One request to the service in `dir`.
pub struct Client<'a> {
    pub dir: &'a Path,
}

impl Client<'_> {
    fn connect(&self) -> Result<UnixStream, Fail> {
        let socket = self.dir.join(protocol::SOCKET);
        UnixStream::connect(&socket).map_err(|error| match error.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                Fail::NotRunning(format!(
                    "the service is not running (nothing listens on {}): start it with \
                     `bombsquad-jobs --dir {} serve &`, or under systemd (see the README)",
                    socket.display(),
                    self.dir.display()
                ))
            }
            io::ErrorKind::PermissionDenied => Fail::Refused(format!(
                "permission denied on {}: that service is private to the user who runs it \
                 (start your own, or ask for one started with `serve --shared`)",
                socket.display()
            )),
            _ => Fail::Refused(format!("cannot connect to {} ({error})", socket.display())),
        })
    }

    /// Sends `op` and reads the reply; a refusal becomes a [`Fail`].
    pub fn ask(&self, op: Op) -> Result<(Reply, UnixStream), Fail> {
        let mut stream = self.connect()?;
        let lost = |error: io::Error| {
            Fail::Refused(format!("the service did not answer properly ({error})"))
        };
        stream.set_read_timeout(Some(REPLY_TIMEOUT)).map_err(lost)?;
        protocol::send(
            &mut stream,
            &Request {
                version: VERSION,
                op,
            },
        )
        .map_err(lost)?;
        match protocol::receive(&mut stream, MAX_REPLY).map_err(lost)? {
            Reply::Failed(Failure::NoSuchJob) => Err(Fail::Refused(NO_SUCH_JOB.into())),
            Reply::Failed(Failure::Other(message)) => Err(Fail::Refused(message)),
            reply => Ok((reply, stream)),
        }
    }

    /// Copies the output frames that follow a `Reply::Logs` to stdout, raw.
    pub fn copy_logs(&self, mut stream: UnixStream, follow: bool) -> Result<(), Fail> {
        let timeout = (!follow).then_some(REPLY_TIMEOUT);
        let cut = |why: String| Fail::Refused(format!("the output stream was cut: {why}"));
        stream
            .set_read_timeout(timeout)
            .map_err(|e| cut(e.to_string()))?;
        let mut stdout = io::stdout().lock();
        loop {
            let frame =
                protocol::read_frame(&mut stream, MAX_REPLY).map_err(|e| cut(e.to_string()))?;
            match frame {
                None => return Err(cut("the service closed the connection".into())),
                Some(bytes) if bytes.is_empty() => return Ok(()),
                Some(bytes) => {
                    let written = stdout.write_all(&bytes).and_then(|()| stdout.flush());
                    // stdout closed (e.g. `| head`): stop quietly.
                    if written.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
}

pub fn print_status(info: &JobInfo, as_json: bool) {
    if as_json {
        println!("{}", to_json(info));
    } else {
        println!("{}", info.status);
    }
}

pub fn print_list(jobs: &[JobInfo], as_json: bool) {
    if as_json {
        let rows: Vec<serde_json::Value> = jobs.iter().map(to_json).collect();
        println!("{}", serde_json::Value::Array(rows));
        return;
    }
    for info in jobs {
        println!(
            "{}  {:<20}  {}",
            info.id,
            info.status.to_string(),
            info.command
        );
    }
}

/// A job for scripts: `state` is one word, `status` the words `status` prints.
fn to_json(info: &JobInfo) -> serde_json::Value {
    let (state, exit_code, signal) = match info.status {
        Status::Running => ("running", None, None),
        Status::Exited(code) => ("exited", Some(code), None),
        Status::Signaled(signal) => ("signaled", None, Some(signal)),
        Status::OutOfMemory => ("out_of_memory", None, None),
        Status::Stopped(StopType::Term) => ("stopped_term", None, None),
        Status::Stopped(StopType::Kill) => ("stopped_kill", None, None),
        Status::Lost => ("lost", None, None),
    };
    let limits = info.command.limits();
    json!({
        "id": info.id.to_string(),
        "state": state,
        "status": info.status.to_string(),
        "exit_code": exit_code,
        "signal": signal,
        "program": info.command.program(),
        "args": info.command.args(),
        "pid": info.pid,
        "started_at": unix_seconds(info.started_at),
        "ended_at": info.ended_at.map(unix_seconds),
        "memory_bytes": limits.memory_bytes(),
        "millicpus": limits.millicpus(),
        "pids_limit": limits.pids(),
    })
}

fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

/// Parses `512K`, `64M`, `1.5G`, `2GiB`, or plain bytes (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(digits_end);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("unknown size unit in {text:?}: use K, M, G or T")),
    };
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size: write e.g. 64M or 1G"))?;
    let bytes = number * (1u64 << shift) as f64;
    if !(bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!("{text:?} is not a usable size"));
    }
    Ok(bytes as u64)
}

pub fn parse_cpus(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(cpus) if cpus >= 0.001 && cpus.is_finite() => Ok(cpus),
        _ => Err(format!("{text:?} is not a CPU count: write e.g. 0.5 or 2")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_powers_of_1024() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12X").unwrap_err().contains("unknown size unit"));
        assert!(parse_size("0").is_err());
    }
}
