//! What the kernel allows: the raw operations each bombsquad call is
//! measured against, a warm call's included (one 64-byte round trip to a
//! child forked once). libc and std only, so the peers crate
//! (`benches/peers`) shares this file and measures against the same floors.

#![allow(dead_code, reason = "the peers crate uses a subset")]

use std::io;
use std::process::{Command, Stdio};

/// Set in the environment of the raw re-exec floor: exit at once.
pub const FLOOR_CHILD: &str = "COMPARE_FLOOR_CHILD";

/// Exits at once when this process is the raw re-exec floor's child. Call
/// it first thing in `main`.
pub fn exit_if_floor_child() {
    if std::env::var_os(FLOOR_CHILD).is_some() {
        std::process::exit(0);
    }
}

/// The result every payload case produces: `len` bytes, each page touched,
/// first and last byte marked so a lost end would show.
#[must_use]
pub fn payload(len: usize) -> Vec<u8> {
    let mut bytes = vec![7u8; len];
    if let Some(first) = bytes.first_mut() {
        *first = 1;
    }
    if let Some(last) = bytes.last_mut() {
        *last = 2;
    }
    bytes
}

/// Checks what a payload case returned.
pub fn check_payload(bytes: &[u8], len: usize) {
    assert_eq!(bytes.len(), len);
    if len > 2 {
        assert_eq!((bytes[0], bytes[len / 2], bytes[len - 1]), (1, 7, 2));
    }
}

/// fork, the child writes 8 bytes to a pipe and `_exit`s, the parent reads
/// them and reaps it.
pub fn raw_fork() -> u64 {
    let (read, write) = pipe();
    let pid = fork(|| write_all(write, &42u64.to_le_bytes()));
    close(write);
    let mut value = [0u8; 8];
    // SAFETY: `value` is valid for writes of 8 bytes.
    let n = unsafe { libc::read(read, value.as_mut_ptr().cast(), 8) };
    assert_eq!(n, 8);
    close(read);
    reap(pid);
    u64::from_le_bytes(value)
}

/// The size of one message of the warm round-trip floor.
pub const WARM_MESSAGE: usize = 64;

/// A child forked once that echoes [`WARM_MESSAGE`]-byte messages until the
/// parent closes its end: one [`WarmEcho::round_trip`] is the floor of a
/// call to a warm worker. Over a Unix stream socket pair (what a
/// `RemoteWorker`'s channel is), or over two pipes (issue 18's floor, and
/// a registered worker's channel), with or without a wait in `epoll` first.
#[derive(Debug)]
pub struct WarmEcho {
    /// The parent writes here...
    to_child: i32,
    /// ...and reads the echo here (the same socket, or the other pipe).
    from_child: i32,
    pid: i32,
    /// What the parent waits in before each read, when watched.
    watch: Option<Watch>,
    /// Whether the parent asks the answer pipe for stray bytes before
    /// each message (`FIONREAD`), as a warm call does (docs/FAULTS.md E10).
    stray_check: bool,
}

/// An epoll set of what a warm call must watch to keep its guarantees: the
/// child's pidfd (its death, whoever holds its pipes), its answer pipe, and
/// two output pipes it holds open (its stdout and stderr, relayed as they
/// come).
#[derive(Debug)]
struct Watch {
    epoll: i32,
    /// The pidfd and both ends of the two output pipes.
    fds: [i32; 5],
    /// The set, registered with a tokio runtime's reactor at the first
    /// awaited round trip and kept, as an awaited pool worker's set is.
    registered: Option<tokio::io::unix::AsyncFd<i32>>,
}

impl WarmEcho {
    /// Forks a child echoing on a socket pair. Its loop neither allocates
    /// nor locks, so the parent may have threads.
    #[must_use]
    pub fn start() -> Self {
        let [parent, child] = socket_pair();
        Self::fork_echo([parent, parent], [child, child], false)
    }

    /// Forks a child echoing over two pipes, one each way.
    #[must_use]
    pub fn start_pipes() -> Self {
        Self::start_pipes_flushing(false)
    }

    /// [`Self::start_pipes`], the child flushing C stdio before each echo
    /// when `flush`.
    fn start_pipes_flushing(flush: bool) -> Self {
        let [from_child, child_writes] = pipe_pair();
        let [child_reads, to_child] = pipe_pair();
        Self::fork_echo([to_child, from_child], [child_reads, child_writes], flush)
    }

    /// Forks a child echoing over two pipes, and waits in an epoll set of
    /// its pidfd, the answer pipe and two idle output pipes before each
    /// read: the floor of a warm call that keeps its guarantees.
    #[must_use]
    pub fn start_watched() -> Self {
        Self::watch(Self::start_pipes())
    }

    /// [`Self::start_watched`], plus what a warm call does around each
    /// round trip for its guarantees, raw: the parent asks the answer pipe
    /// for stray bytes before it writes (`FIONREAD`), and the child flushes
    /// every C stream before it answers (`fflush(NULL)`), so that what the
    /// call wrote is out when it returns. The floor of a warm call.
    #[must_use]
    pub fn start_hygienic() -> Self {
        let mut echo = Self::watch(Self::start_pipes_flushing(true));
        echo.stray_check = true;
        echo
    }

    /// Adds the epoll set of [`Self::start_watched`] to a pipe echo.
    fn watch(mut echo: Self) -> Self {
        let [stdout, child_stdout] = pipe_pair();
        let [stderr, child_stderr] = pipe_pair();
        // The parent holds the write ends (the child never writes to them):
        // an idle pipe in the set costs the same whoever holds it open.
        // SAFETY: plain syscall with integer arguments.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, echo.pid, 0) };
        let pidfd = i32::try_from(pidfd).expect("pidfd_open");
        assert!(pidfd >= 0, "{}", io::Error::last_os_error());
        // SAFETY: plain syscall.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        assert!(epoll >= 0, "{}", io::Error::last_os_error());
        for fd in [pidfd, echo.from_child, stdout, stderr] {
            let mut event = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: u64::try_from(fd).unwrap_or(0),
            };
            // SAFETY: `event` is valid for reads.
            let added = unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &raw mut event) };
            assert_eq!(added, 0, "{}", io::Error::last_os_error());
        }
        echo.watch = Some(Watch {
            epoll,
            fds: [pidfd, stdout, stderr, child_stdout, child_stderr],
            registered: None,
        });
        echo
    }

    /// Forks the echo; `parent` is (write, read) for the parent, `child`
    /// (read, write) for the child, which flushes C stdio before each echo
    /// when `flush`.
    fn fork_echo(parent: [i32; 2], child: [i32; 2], flush: bool) -> Self {
        // SAFETY: the child only closes, reads, writes, flushes C streams
        // (glibc resets their locks in a forked child) and `_exit`s.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "{}", io::Error::last_os_error());
        if pid == 0 {
            close_once(parent);
            let mut message = [0u8; WARM_MESSAGE];
            while read_exact(child[0], &mut message) {
                if flush {
                    // SAFETY: flushes every open C stream; nothing is buffered.
                    unsafe { libc::fflush(std::ptr::null_mut()) };
                }
                if !write_all(child[1], &message) {
                    break;
                }
            }
            // SAFETY: always safe; never returns.
            unsafe { libc::_exit(0) };
        }
        close_once(child);
        Self {
            to_child: parent[0],
            from_child: parent[1],
            pid,
            watch: None,
            stray_check: false,
        }
    }

    /// One round trip: [`WARM_MESSAGE`] bytes there and back.
    pub fn round_trip(&mut self, message: &mut [u8; WARM_MESSAGE]) {
        if self.stray_check {
            let mut stray: libc::c_int = 0;
            // SAFETY: FIONREAD writes one int.
            let asked = unsafe { libc::ioctl(self.from_child, libc::FIONREAD, &raw mut stray) };
            assert!(asked == 0 && stray == 0, "stray bytes before a message");
        }
        assert!(write_all(self.to_child, message));
        if let Some(watch) = &self.watch {
            let mut events = [libc::epoll_event { events: 0, u64: 0 }; 4];
            // SAFETY: `events` is valid for writes of 4 events.
            let n = unsafe { libc::epoll_wait(watch.epoll, events.as_mut_ptr(), 4, -1) };
            assert!(n >= 1, "{}", io::Error::last_os_error());
        }
        assert!(read_exact(self.from_child, message));
    }

    /// [`Self::round_trip`] of a watched echo, awaited on the current tokio
    /// runtime: the wait is on the reactor (the set stays registered across
    /// round trips), then a non-blocking look into the set, as an awaited
    /// pool call does. The floor of an awaited warm call.
    pub async fn round_trip_awaited(&mut self, message: &mut [u8; WARM_MESSAGE]) {
        let watch = self.watch.as_mut().expect("a watched echo");
        if watch.registered.is_none() {
            // SAFETY: the set stays open until `Drop`, which drops the
            // registration first.
            let registered = unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(
                    watch.epoll,
                    tokio::io::Interest::READABLE,
                )
            };
            watch.registered = Some(registered.expect("register the set with tokio"));
        }
        assert!(write_all(self.to_child, message));
        let registered = watch.registered.as_ref().expect("registered above");
        loop {
            let mut guard = registered.readable().await.expect("tokio's reactor");
            let mut events = [libc::epoll_event { events: 0, u64: 0 }; 4];
            // SAFETY: `events` is valid for writes of 4 events.
            let n = unsafe { libc::epoll_wait(watch.epoll, events.as_mut_ptr(), 4, 0) };
            if n > 0 {
                break;
            }
            guard.clear_ready();
        }
        assert!(read_exact(self.from_child, message));
    }
}

impl Drop for WarmEcho {
    fn drop(&mut self) {
        // The child reads end of file and leaves.
        close_once([self.to_child, self.from_child]);
        if let Some(mut watch) = self.watch.take() {
            drop(watch.registered.take()); // before its descriptor closes
            close(watch.epoll);
            watch.fds.into_iter().for_each(close);
        }
        reap(self.pid);
    }
}

/// A Unix stream socket pair, close-on-exec.
fn socket_pair() -> [i32; 2] {
    let mut fds = [0; 2];
    // SAFETY: `fds` is valid for writes of two ints.
    let made = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(made, 0, "{}", io::Error::last_os_error());
    fds
}

/// A pipe, close-on-exec: (read end, write end).
fn pipe_pair() -> [i32; 2] {
    let mut fds = [0; 2];
    // SAFETY: `fds` is valid for writes of two ints.
    let made = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(made, 0, "{}", io::Error::last_os_error());
    fds
}

/// Closes both descriptors, or the one when they are the same.
fn close_once([a, b]: [i32; 2]) {
    close(a);
    if b != a {
        close(b);
    }
}

/// A CPU affinity mask.
pub type CpuSet = libc::cpu_set_t;

/// The affinity of thread or process `tid` (0: the calling thread).
#[must_use]
pub fn affinity(tid: i32) -> Option<CpuSet> {
    // SAFETY: all-zero is a valid (empty) `cpu_set_t`.
    let mut set: CpuSet = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is valid for writes of its size.
    let got = unsafe { libc::sched_getaffinity(tid, size_of::<CpuSet>(), &raw mut set) };
    (got == 0).then_some(set)
}

/// Sets the affinity of `tid` (0: the calling thread); `false` if refused.
pub fn set_affinity(tid: i32, set: &CpuSet) -> bool {
    // SAFETY: `set` is valid for reads of its size.
    unsafe { libc::sched_setaffinity(tid, size_of::<CpuSet>(), set) == 0 }
}

/// The CPUs in `set`.
#[must_use]
pub fn cpus(set: &CpuSet) -> Vec<usize> {
    // SAFETY: `CPU_ISSET` only reads `set`, for indices below its size.
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, set) })
        .collect()
}

/// A mask of `cpu` alone.
#[must_use]
pub fn only(cpu: usize) -> CpuSet {
    // SAFETY: all-zero is a valid (empty) `cpu_set_t`; `CPU_SET` writes in it.
    unsafe {
        let mut set: CpuSet = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        set
    }
}

/// The children of every thread of this process (a pool's workers are the
/// children of its keeper thread), from `/proc/self/task/*/children`.
#[must_use]
pub fn children() -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// `Command` re-executing this binary, which exits at once
/// ([`exit_if_floor_child`]), and waiting for it.
pub fn raw_reexec() {
    let status = Command::new("/proc/self/exe")
        .env(FLOOR_CHILD, "1")
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
}

/// A forked child makes `len` bytes and writes them to a pipe (1 MiB
/// capacity); the parent reads them into fresh memory of the exact size.
#[must_use]
pub fn raw_pipe(len: usize) -> Vec<u8> {
    let (read, write) = pipe();
    // SAFETY: fcntl on a pipe we own; failure only leaves the default size.
    unsafe { libc::fcntl(write, libc::F_SETPIPE_SZ, 1 << 20) };
    let pid = fork(|| write_all(write, &payload(len)));
    close(write);
    let mut bytes = Vec::with_capacity(len);
    loop {
        let spare = bytes.spare_capacity_mut();
        if spare.is_empty() {
            break;
        }
        // SAFETY: `spare` is valid for writes of `spare.len()` bytes.
        let n = unsafe { libc::read(read, spare.as_mut_ptr().cast(), spare.len()) };
        assert!(n >= 0, "{}", io::Error::last_os_error());
        if n == 0 {
            break;
        }
        // SAFETY: the kernel initialised the first `n` spare bytes.
        unsafe { bytes.set_len(bytes.len() + n.cast_unsigned()) };
    }
    close(read);
    reap(pid);
    bytes
}

/// A forked child makes `len` bytes and writes them to an unnamed temp file
/// (`O_TMPFILE` in the temp dir); after it exits the parent reads the file
/// into fresh memory of the file's size.
#[must_use]
pub fn raw_file(len: usize) -> Vec<u8> {
    let dir =
        std::ffi::CString::new(std::env::temp_dir().into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: a valid C string; the returned fd is ours.
    let fd = unsafe {
        libc::open(
            dir.as_ptr(),
            libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC,
            0o600,
        )
    };
    assert!(fd >= 0, "{}", io::Error::last_os_error());
    read_after_child(fd, len)
}

/// A forked child makes `len` bytes and writes them to a memfd the parent
/// created; after it exits the parent reads it into fresh memory.
#[must_use]
pub fn raw_memfd(len: usize) -> Vec<u8> {
    // SAFETY: a valid C string; the returned fd is ours.
    let fd = unsafe { libc::memfd_create(c"compare".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "{}", io::Error::last_os_error());
    read_after_child(fd, len)
}

fn read_after_child(fd: i32, len: usize) -> Vec<u8> {
    let pid = fork(|| write_all(fd, &payload(len)));
    reap(pid);
    // SAFETY: all-zero is a valid `stat`; fstat fills it.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `stat` is valid for writes.
    assert_eq!(unsafe { libc::fstat(fd, &raw mut stat) }, 0);
    let size = usize::try_from(stat.st_size).unwrap();
    let mut bytes = Vec::with_capacity(size);
    while bytes.len() < size {
        let offset = libc::off_t::try_from(bytes.len()).unwrap();
        let spare = bytes.spare_capacity_mut();
        // SAFETY: `spare` is valid for writes of `spare.len()` bytes.
        let n = unsafe { libc::pread(fd, spare.as_mut_ptr().cast(), spare.len(), offset) };
        assert!(n > 0, "{}", io::Error::last_os_error());
        // SAFETY: the kernel initialised the first `n` spare bytes.
        unsafe { bytes.set_len(bytes.len() + n.cast_unsigned()) };
    }
    close(fd);
    bytes
}

/// In-process: copy `source` into fresh memory (the lower bound of any
/// transport that ends in a fresh `Vec`).
#[must_use]
pub fn memcpy(source: &[u8]) -> Vec<u8> {
    source.to_vec()
}

fn pipe() -> (i32, i32) {
    let mut fds = [0; 2];
    // SAFETY: `fds` is valid for writes of two ints.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    (fds[0], fds[1])
}

/// Forks; the child runs `child` and `_exit`s, 0 when it returned `true`.
/// Only for a single-threaded parent (the child allocates).
pub fn fork(child: impl FnOnce() -> bool) -> i32 {
    // SAFETY: the caller is single-threaded, so the child may allocate; it
    // never returns past this point.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "{}", io::Error::last_os_error());
    if pid == 0 {
        let code = i32::from(!child());
        // SAFETY: always safe; never returns.
        unsafe { libc::_exit(code) };
    }
    pid
}

/// Writes all of `bytes`; `false` on an error (the child then exits 1).
pub fn write_all(fd: i32, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is valid for reads of its length.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n <= 0 {
            return false;
        }
        bytes = &bytes[n.cast_unsigned()..];
    }
    true
}

/// Reads exactly `buf.len()` bytes; `false` at end of file or on an error.
pub fn read_exact(fd: i32, mut buf: &mut [u8]) -> bool {
    while !buf.is_empty() {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return false;
        }
        buf = &mut buf[n.cast_unsigned()..];
    }
    true
}

pub fn close(fd: i32) {
    // SAFETY: the caller owns `fd` and does not use it again.
    unsafe { libc::close(fd) };
}

fn reap(pid: i32) {
    let mut status = 0;
    // SAFETY: `status` is valid for writes.
    assert_eq!(unsafe { libc::waitpid(pid, &raw mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
}

/// This process's peak and current resident set (`VmHWM`, `VmRSS`), bytes.
#[must_use]
pub fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches(" kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap()
            * 1024
    };
    (field("VmHWM:"), field("VmRSS:"))
}
