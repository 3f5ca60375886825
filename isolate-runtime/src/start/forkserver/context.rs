//! What a fork-server call inherits from its caller *at the call*, as a
//! spawned child would: the environment, the working directory and the
//! umask (docs/FAULTS.md H9). The server was started with the caller's
//! state of that moment; whenever the caller's state differs from what it
//! last sent this server, the request carries the new state and the server
//! adopts it before it forks, so every later child inherits it. A call
//! whose caller changed nothing sends nothing more. The caller's standing
//! (credentials, seccomp, affinity) cannot be adopted: a caller whose
//! standing differs from the server's is spawned (docs/FAULTS.md H10).

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write as _};
use std::os::fd::{AsFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::PathBuf;

use nix::fcntl::{OFlag, open};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::stat::Mode;

use crate::vocabulary::error::Error;

/// The caller's environment, working directory and umask, which the
/// server adopts, and its standing, which it cannot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CallContext {
    env: Vec<(OsString, OsString)>,
    /// `None` when the directory has no path any more (it was removed):
    /// such a context never equals another, so it is always sent.
    cwd: Option<PathBuf>,
    umask: u32,
    pub(super) standing: Standing,
}

/// What the calling thread is allowed and where it may run, which a
/// server cannot take on once started (it would have to gain privileges a
/// caller dropped): credentials, capabilities, `no_new_privs`, seccomp
/// filters, CPU and memory-node affinity, as `/proc/thread-self/status`
/// lists them. A call whose caller's standing differs from the server's is
/// spawned instead, so that no child ever has more than its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Standing(Vec<u8>);

/// The lines of `/proc/thread-self/status` that make up a [`Standing`].
const STANDING_LINES: [&[u8]; 13] = [
    b"Uid:",
    b"Gid:",
    b"Groups:",
    b"CapInh:",
    b"CapPrm:",
    b"CapEff:",
    b"CapBnd:",
    b"CapAmb:",
    b"NoNewPrivs:",
    b"Seccomp:",
    b"Seccomp_filters:",
    b"Cpus_allowed_list:",
    b"Mems_allowed_list:",
];

impl Standing {
    /// The calling thread's standing now.
    ///
    /// # Errors
    ///
    /// `Spawn` when `/proc/thread-self/status` cannot be read.
    pub(super) fn now() -> Result<Self, Error> {
        Ok(Self::parse(&read_status()?))
    }

    fn parse(status: &[u8]) -> Self {
        let mut standing = Vec::with_capacity(status.len());
        for line in status
            .split_inclusive(|&b| b == b'\n')
            .filter(|line| STANDING_LINES.iter().any(|name| line.starts_with(name)))
        {
            standing.extend_from_slice(line);
        }
        Self(standing)
    }
}

impl CallContext {
    /// The calling thread's state now.
    ///
    /// # Errors
    ///
    /// `Spawn` when `/proc/thread-self/status` cannot be read, or lacks
    /// the umask.
    pub(super) fn current() -> Result<Self, Error> {
        let status = read_status()?;
        let umask = parse_umask(&status).ok_or_else(|| {
            Error::spawn(
                "read the umask from /proc/thread-self/status",
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "no Umask line (Linux before 4.7?)",
                ),
            )
        })?;
        Ok(Self {
            env: std::env::vars_os().collect(),
            cwd: std::env::current_dir().ok(),
            umask,
            standing: Standing::parse(&status),
        })
    }

    /// Whether the server, which last adopted `sent`, must be sent this one.
    pub(super) fn differs_from(&self, sent: Option<&Self>) -> bool {
        self.cwd.is_none() || sent != Some(self)
    }

    /// The descriptors that carry it to the server: a memfd holding the
    /// umask and the environment, and the working directory (`O_PATH`).
    ///
    /// # Errors
    ///
    /// `Spawn` when the memfd or the directory cannot be opened.
    pub(super) fn to_fds(&self) -> Result<[OwnedFd; 2], Error> {
        let fd = memfd_create("bombsquad-call-context", MFdFlags::MFD_CLOEXEC)
            .map_err(|e| Error::spawn("create the memfd for the fork server's call context", e))?;
        let mut file = File::from(fd);
        file.write_all(&self.encode())
            .map_err(|e| Error::spawn("write the fork server's call context", e))?;
        let cwd = open(
            ".",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::spawn("open the working directory for the fork server", e))?;
        Ok([OwnedFd::from(file), cwd])
    }

    /// The umask (u32, little endian), then each variable as `KEY=VALUE\0`.
    fn encode(&self) -> Vec<u8> {
        let mut bytes = self.umask.to_le_bytes().to_vec();
        for (key, value) in &self.env {
            bytes.extend_from_slice(key.as_bytes());
            bytes.push(b'=');
            bytes.extend_from_slice(value.as_bytes());
            bytes.push(0);
        }
        bytes
    }
}

/// The calling thread's `/proc/thread-self/status`, which holds the umask
/// (Linux 4.7+; the `umask` call that reads it also sets it, which would
/// race with other threads creating files) and the [`Standing`]. One
/// `read`: every `read` of a procfs file makes all of it again (~10 µs
/// each), and the whole file fits.
fn read_status() -> Result<Vec<u8>, Error> {
    let read = || -> io::Result<Vec<u8>> {
        let mut status = Vec::new();
        let file = File::open("/proc/thread-self/status")?;
        crate::sys::read_into_spare(file.as_fd(), &mut status, 16 * 1024)?;
        Ok(status)
    };
    read().map_err(|e| Error::spawn("read /proc/thread-self/status", e))
}

fn parse_umask(status: &[u8]) -> Option<u32> {
    let line = status
        .split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(b"Umask:"))?;
    let digits = std::str::from_utf8(line).ok()?.trim();
    u32::from_str_radix(digits, 8).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_umask_line_is_octal() {
        let status = b"Name:\tx\nUmask:\t0027\nState:\tR (running)\n";
        assert_eq!(parse_umask(status), Some(0o027));
        assert_eq!(parse_umask(b"Name:\tx\n"), None);
    }

    #[test]
    fn the_standing_is_the_lines_of_privilege_and_placement() {
        let status = b"Name:\tx\nUmask:\t0022\nUid:\t0\t0\t0\t0\nVmRSS:\t1 kB\n\
            NoNewPrivs:\t1\nCpus_allowed_list:\t0-1\nvoluntary_ctxt_switches:\t3\n";
        assert_eq!(
            Standing::parse(status).0,
            b"Uid:\t0\t0\t0\t0\nNoNewPrivs:\t1\nCpus_allowed_list:\t0-1\n"
        );
        // The real file has every line (a kernel with seccomp).
        let now = Standing::now().unwrap();
        let text = String::from_utf8(now.0).unwrap();
        for name in STANDING_LINES {
            assert!(text.contains(std::str::from_utf8(name).unwrap()), "{text}");
        }
    }

    #[test]
    fn a_removed_working_directory_is_always_sent() {
        let mut context = CallContext::current().unwrap();
        assert!(!context.differs_from(Some(&context.clone())));
        assert!(context.differs_from(None));
        context.cwd = None;
        assert!(context.differs_from(Some(&context.clone())));
    }

    #[test]
    fn the_encoding_is_umask_then_nul_terminated_pairs() {
        let context = CallContext {
            env: vec![("A".into(), "1".into()), ("B".into(), "x=y".into())],
            cwd: Some("/".into()),
            umask: 0o22,
            standing: Standing(Vec::new()),
        };
        assert_eq!(context.encode(), b"\x12\0\0\0A=1\0B=x=y\0");
    }
}
