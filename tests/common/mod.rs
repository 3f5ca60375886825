//! Helpers shared by the integration tests: leak snapshots, a watchdog, and
//! access to the reply channel from inside a child (to fake a broken child).

#![allow(dead_code)]

pub mod awaiting;
pub mod pool_guard;
pub mod scenario;

use std::collections::BTreeMap;
use std::os::fd::RawFd;
use std::sync::Once;
use std::time::Duration;

/// Aborts the whole test binary if it runs longer than `limit`: a hang must
/// fail CI loudly instead of eating its time budget.
pub fn watchdog() {
    static START: Once = Once::new();
    START.call_once(|| {
        std::thread::spawn(|| {
            std::thread::sleep(Duration::from_secs(300));
            eprintln!("watchdog: the test binary ran for 300 s; aborting");
            std::process::abort();
        });
    });
}

/// This process's open descriptors and what they point to.
pub fn open_fds() -> BTreeMap<RawFd, String> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let fd = entry.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(entry.path()).ok()?;
            Some((fd, target.display().to_string()))
        })
        .collect()
}

/// Pids of this process's children that are zombies (exited, not reaped).
pub fn zombie_children() -> Vec<i32> {
    children_of(std::process::id())
        .into_iter()
        .filter(|(_, state)| *state == 'Z')
        .map(|(pid, _)| pid)
        .collect()
}

/// Every live process whose parent is `parent`, with its state letter.
pub fn children_of(parent: u32) -> Vec<(i32, char)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // "pid (comm) S ppid ...": comm may hold spaces, so split after ')'.
            let rest = &stat[stat.rfind(')')? + 2..];
            let mut fields = rest.split(' ');
            let state = fields.next()?.chars().next()?;
            let ppid: u32 = fields.next()?.parse().ok()?;
            (ppid == parent).then_some((pid, state))
        })
        .collect()
}

/// Waits until `pid` has exited: it is a zombie or gone. Fails the test
/// after 10 s.
pub fn wait_until_dead(pid: u32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rfind(')').and_then(|at| stat[at + 2..].chars().next());
        if state.is_none_or(|state| state == 'Z' || state == 'X') {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "process {pid} did not die"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether a process with this pid exists (a zombie counts).
pub fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// A size line of `/proc/self/status` (`VmHWM`, `VmSize`), in bytes.
pub fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    kib * 1024
}

/// Inside a child: the descriptor the library replies on (the only pipe or
/// deleted file above stdio). Used to fake a child that sends bad data.
pub fn reply_fd_in_child() -> RawFd {
    open_fds()
        .into_iter()
        .find(|(fd, target)| {
            *fd > 2 && (target.starts_with("pipe:") || target.ends_with("(deleted)"))
        })
        .map(|(fd, _)| fd)
        .expect("no reply descriptor in this child")
}

/// Writes raw bytes to a descriptor, as a misbehaving child would.
pub fn write_raw(fd: RawFd, bytes: &[u8]) {
    // SAFETY: `bytes` is valid for reads of its length; a bad fd only fails.
    let written = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    assert_eq!(written, bytes.len() as isize);
}

/// Inside a child: the header of a frame for the call in flight that
/// announces `len` bytes, with a checksum of 0: for a frame that is cut
/// short or lies about its length (both found before any checksum is).
pub fn frame_header(kind: u8, len: u64) -> Vec<u8> {
    let mut header = b"BSQ\x02".to_vec();
    header.extend_from_slice(&[kind, 0, 0, 0]);
    header.extend_from_slice(&bombsquad::__private::current_call_id().to_le_bytes());
    header.extend_from_slice(&[0; 4]);
    header.extend_from_slice(&len.to_le_bytes());
    header
}

/// Inside a child: a whole, valid frame for the call in flight.
pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    bombsquad::__private::wire_frame(kind, bombsquad::__private::current_call_id(), payload)
}

/// The length of a frame header (PROTOCOL.md section 2).
pub const HEADER_LEN: usize = 24;

/// The frame kind of a returned value.
pub const RETURN_FRAME: u8 = 16;

/// The payload length of [`write_then_truncate`]'s frame.
pub const TRUNCATED_FRAME_LEN: usize = 8 << 20;

/// Inside a child: writes a whole 8 MiB `Return` frame to the reply file
/// (or memfd), then cuts it to `keep` bytes and leaves.
pub fn write_then_truncate(keep: i64) -> ! {
    let fd = reply_fd_in_child();
    write_raw(fd, &frame_header(RETURN_FRAME, TRUNCATED_FRAME_LEN as u64));
    write_raw(fd, &vec![0xc0; TRUNCATED_FRAME_LEN]);
    // SAFETY: plain syscalls on our own descriptor; `_exit` never returns.
    unsafe {
        assert_eq!(libc::ftruncate(fd, keep), 0);
        libc::_exit(0)
    }
}

/// The message of an `Error::Protocol`; panics on anything else.
pub fn protocol_error<T: std::fmt::Debug>(result: Result<T, bombsquad::Error>) -> String {
    match result {
        Err(bombsquad::Error::Protocol { message, .. }) => message,
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

/// Serializes to an error.
#[derive(Debug, serde::Deserialize)]
pub struct RefusesToSerialize;
impl serde::Serialize for RefusesToSerialize {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("refuses to serialize"))
    }
}

/// Panics in `Serialize`.
#[derive(Debug, serde::Deserialize)]
pub struct PanicsInSerialize;
impl serde::Serialize for PanicsInSerialize {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        panic!("serialize panicked")
    }
}

/// Serializes fine, panics in `Deserialize`.
#[derive(Debug, serde::Serialize)]
pub struct PanicsInDeserialize(pub u8);
impl<'de> serde::Deserialize<'de> for PanicsInDeserialize {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        panic!("deserialize panicked")
    }
}

/// The fork server among `parent`'s children, if it started one (its
/// environment names it).
pub fn fork_server_of(parent: u32) -> Option<i32> {
    children_of(parent).into_iter().find_map(|(pid, _)| {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        environ
            .split(|&b| b == 0)
            .any(|entry| entry.starts_with(b"BOMBSQUAD_FORKSERVER="))
            .then_some(pid)
    })
}

/// The children of `parent`'s calls: its own children but its fork
/// server, and the fork server's children.
pub fn call_children(parent: u32) -> Vec<(i32, char)> {
    let server = fork_server_of(parent);
    let mut children: Vec<_> = children_of(parent)
        .into_iter()
        .filter(|&(pid, _)| Some(pid) != server)
        .collect();
    if let Some(server) = server {
        children.extend(children_of(server.cast_unsigned()));
    }
    children
}

/// How many of `parent`'s calls' children ([`call_children`]) existed at
/// one instant: those a scan of `/proc` found that still exist when it is
/// over. A scan is not atomic: a child that ended early in it and one that
/// started later would both be listed; each one kept existed from its
/// listing to its re-check, so all of them at the instant between the two.
pub fn call_children_at_once(parent: u32) -> usize {
    call_children(parent)
        .into_iter()
        .filter(|&(pid, _)| process_exists(pid.cast_unsigned()))
        .count()
}

/// Whether this test can run a program as another user (`nobody`, through
/// util-linux's `setpriv`): it needs root and `setpriv`. When it cannot,
/// says why the test is skipped.
pub fn can_run_as_another_uid() -> bool {
    if std::process::Command::new("setpriv")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: setpriv (util-linux) is not installed, so no other uid to test with");
        return false;
    }
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root to act as another uid with setpriv");
        return false;
    }
    true
}
