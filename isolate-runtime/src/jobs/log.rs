//! A job's output log: one file of records, plus an in-process broadcast so
//! readers can follow a live log without polling.
//!
//! Each record is a 5-byte header (stream tag, then payload length as a
//! little-endian `u32`) followed by the payload, exactly as read from the
//! pipe. Keeping the tag per chunk is what lets a reader filter one stream
//! while the merged view keeps arrival order.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::info::Stream;

const HEADER_LEN: u64 = 5;
const STDOUT_TAG: u8 = 1;
const STDERR_TAG: u8 = 2;

fn tag_of(stream: Stream) -> u8 {
    match stream {
        Stream::Stdout => STDOUT_TAG,
        Stream::Stderr => STDERR_TAG,
    }
}

/// What live readers wait on: how much of the file holds whole records, and
/// whether more can come.
#[derive(Debug, Default)]
struct Progress {
    /// Bytes of the file that hold complete records.
    committed: u64,
    /// No more appends will come.
    closed: bool,
}

/// The broadcast between a job's log writer and its live readers: signalled
/// on every append and when the log closes.
#[derive(Debug, Default)]
pub(crate) struct LogShared {
    progress: Mutex<Progress>,
    changed: Condvar,
}

impl LogShared {
    fn lock(&self) -> MutexGuard<'_, Progress> {
        // A panic elsewhere cannot leave `Progress` half-updated: keep going.
        self.progress
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Blocks until the log holds bytes past `pos`, at most `timeout`
    /// (`None`: forever); returns where the whole records end, or `None`
    /// once the log is closed and `pos` is its end.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::TimedOut`] when `timeout` passed first.
    fn wait_beyond(&self, pos: u64, timeout: Option<Duration>) -> io::Result<Option<u64>> {
        let deadline = timeout.map(|timeout| Instant::now() + timeout);
        let mut progress = self.lock();
        loop {
            if progress.committed > pos {
                return Ok(Some(progress.committed));
            }
            if progress.closed {
                return Ok(None);
            }
            progress = match deadline {
                None => self
                    .changed
                    .wait(progress)
                    .unwrap_or_else(|poison| poison.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                    self.changed
                        .wait_timeout(progress, left)
                        .unwrap_or_else(|poison| poison.into_inner())
                        .0
                }
            };
        }
    }
}

/// Appends records to a job's log. There is one per job, owned by its drain
/// thread.
#[derive(Debug)]
pub(crate) struct LogWriter {
    file: File,
    shared: Arc<LogShared>,
    /// Set after a failed write: later output is dropped rather than written
    /// after a torn record.
    broken: bool,
}

impl LogWriter {
    /// Creates the log file (it must not exist yet), private to the user.
    pub(crate) fn create(path: &Path) -> io::Result<LogWriter> {
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        Ok(LogWriter {
            file,
            shared: Arc::default(),
            broken: false,
        })
    }

    /// The broadcast that live readers of this log wait on.
    pub(crate) fn shared(&self) -> Arc<LogShared> {
        Arc::clone(&self.shared)
    }

    /// Appends one chunk of `stream` output and wakes every reader. A chunk
    /// longer than a record can hold is split.
    pub(crate) fn append(&mut self, stream: Stream, data: &[u8]) {
        for chunk in data.chunks(u32::MAX as usize) {
            self.append_record(stream, chunk);
        }
    }

    fn append_record(&mut self, stream: Stream, payload: &[u8]) {
        if self.broken || payload.is_empty() {
            return;
        }
        let mut record = Vec::with_capacity(HEADER_LEN as usize + payload.len());
        record.push(tag_of(stream));
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(payload);

        // The one lock around appends: readers see `committed` move only
        // after the whole record is in the file.
        let mut progress = self.shared.lock();
        match self.file.write_all(&record) {
            Ok(()) => progress.committed += record.len() as u64,
            Err(_) => {
                // Disk full or similar: cut the torn record off and stop
                // logging, so readers never see garbage.
                let _ = self.file.set_len(progress.committed);
                self.broken = true;
            }
        }
        drop(progress);
        self.shared.changed.notify_all();
    }
}

/// Marks the log complete: readers get EOF once they have read it all.
pub(crate) fn close(shared: &LogShared) {
    shared.lock().closed = true;
    shared.changed.notify_all();
}

/// Reads a job's output from the start: both streams merged in arrival order,
/// or one stream only. On a live job it follows new output and returns EOF
/// once the job has ended and everything was read.
///
/// Returned by [`Jobs::stream`](super::Jobs::stream) and
/// [`Jobs::stream_only`](super::Jobs::stream_only).
#[derive(Debug)]
pub struct OutputReader {
    file: File,
    /// Offset of the next unread byte in the file.
    pos: u64,
    /// Payload bytes of the current record not read yet.
    record_left: u64,
    only: Option<Stream>,
    /// `None` for a log that is complete on disk (the job ended before this
    /// reader was opened), or one read only up to now; then the file's end
    /// (or `limit`) is the log's end.
    live: Option<Arc<LogShared>>,
    /// Set by [`OutputReader::up_to_now`]: the log's length at that moment.
    limit: Option<u64>,
    /// How long `read` waits for new output of a live job.
    read_timeout: Option<Duration>,
}

impl OutputReader {
    pub(crate) fn open(
        path: &Path,
        only: Option<Stream>,
        live: Option<Arc<LogShared>>,
    ) -> io::Result<OutputReader> {
        Ok(OutputReader {
            file: File::open(path)?,
            pos: 0,
            record_left: 0,
            only,
            live,
            limit: None,
            read_timeout: None,
        })
    }

    /// Bounds how long `read` waits for new output of a running job (`None`,
    /// the default: until output comes or the job ends). A `read` that waited
    /// this long without output fails with [`io::ErrorKind::TimedOut`]; the
    /// reader stays usable, and the next `read` goes on where it was. Lets a
    /// server that forwards output notice that its client went away.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.read_timeout = timeout;
    }

    /// Stops following: the reader ends at what the log holds now, even if
    /// the job is still running (a `logs` that does not wait for more).
    ///
    /// # Errors
    ///
    /// The log file could not be inspected.
    pub fn up_to_now(mut self) -> io::Result<Self> {
        self.limit = Some(self.file.metadata()?.len());
        self.live = None;
        Ok(self)
    }

    /// Where readable data ends, waiting for more on a live log; `None` at
    /// the end of the log.
    fn data_end(&self) -> io::Result<Option<u64>> {
        match &self.live {
            Some(shared) => shared.wait_beyond(self.pos, self.read_timeout),
            None => {
                let len = self
                    .file
                    .metadata()?
                    .len()
                    .min(self.limit.unwrap_or(u64::MAX));
                Ok((len > self.pos).then_some(len))
            }
        }
    }

    /// Moves to the next record of the wanted stream; false at the end of
    /// the log.
    fn next_record(&mut self) -> io::Result<bool> {
        loop {
            let Some(end) = self.data_end()? else {
                return Ok(false);
            };
            if end < self.pos + HEADER_LEN {
                // Only a torn header left, from a supervisor that died mid-write.
                return Ok(false);
            }
            let mut header = [0u8; HEADER_LEN as usize];
            self.file.read_exact_at(&mut header, self.pos)?;
            let len = u64::from(u32::from_le_bytes([
                header[1], header[2], header[3], header[4],
            ]));
            self.pos += HEADER_LEN;
            let wanted = self.only.is_none_or(|stream| tag_of(stream) == header[0]);
            if wanted && len > 0 {
                self.record_left = len;
                return Ok(true);
            }
            self.pos += len;
        }
    }
}

impl Read for OutputReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.record_left == 0 && !self.next_record()? {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.record_left).unwrap_or(usize::MAX));
        let got = self.file.read_at(&mut buf[..want], self.pos)?;
        if got == 0 {
            // A record cut short on disk: the log ends here.
            self.record_left = 0;
            return Ok(0);
        }
        self.pos += got as u64;
        self.record_left -= got as u64;
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(path: &Path, only: Option<Stream>, live: Option<Arc<LogShared>>) -> String {
        let mut text = String::new();
        let mut reader = OutputReader::open(path, only, live).unwrap();
        reader.read_to_string(&mut text).unwrap();
        text
    }

    #[test]
    fn records_keep_order_and_stream() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job.log");
        let mut writer = LogWriter::create(&path).unwrap();
        let shared = writer.shared();
        writer.append(Stream::Stdout, b"one\n");
        writer.append(Stream::Stderr, b"two\n");
        writer.append(Stream::Stdout, b"three\n");
        close(&shared);

        assert_eq!(read_all(&path, None, None), "one\ntwo\nthree\n");
        assert_eq!(read_all(&path, None, Some(shared)), "one\ntwo\nthree\n");
        assert_eq!(read_all(&path, Some(Stream::Stdout), None), "one\nthree\n");
        assert_eq!(read_all(&path, Some(Stream::Stderr), None), "two\n");
    }

    #[test]
    fn a_torn_last_record_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job.log");
        let mut writer = LogWriter::create(&path).unwrap();
        writer.append(Stream::Stdout, b"whole\n");
        drop(writer);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[STDOUT_TAG, 100, 0, 0, 0, b'x']).unwrap();

        assert_eq!(read_all(&path, None, None), "whole\nx");
        assert_eq!(read_all(&path, Some(Stream::Stderr), None), "");
    }
}
