//! The fork server's ladder: what the guarantees of a fork-server call
//! (`isolate-runtime/src/start/forkserver/`) cost the kernel, measured raw
//! against a bare fork and against the library's own fork-server call in
//! the same interleaved run.
//!
//! The raw server is this binary re-executed (so it is small, as the
//! library's is), set up once as the library's server is (no core files,
//! the fault handler), serving one call at a time over a socket. Rung 1 is
//! the floor the issue names, a fork and one hop of IPC; each rung after it
//! adds one guarantee, with only the system calls it needs, in the order
//! the library makes them (`strace -f` of both, side by side). Rung 7 is
//! the floor of a hygienic fork-server call: what the library's call costs
//! beyond it is the library's own.

use std::ffi::{CStr, OsStr};
use std::fs::File;
use std::io::Read as _;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use nix::fcntl::OFlag;

use super::child::{
    close_fds_except, die_with_parent, disable_core_files, install_fault_handler, install_stdio,
    prefer_as_oom_victim, purge_and_flush_c_stdio,
};
use super::{Inbound, kill_group, oom_counter_file, pidfd_open, pipe_from_child, read_oom_kills};
use super::{print_table, wait_for_exit};
use crate::bench::{Case, Plan, interleave};
use crate::{Config, calls, floors};

/// Set in the raw server's environment: the number of its socket.
const RAW_SERVER: &str = "COMPARE_RAW_FORK_SERVER";

/// Where each guarantee joins: rung `N` is rung `N - 1` plus it.
const OWN_GROUP_PIDFD: usize = 2;
const STDIO_RELAY: usize = 3;
const CALL_CHANNEL: usize = 4;
const DIE_WITH_SERVER: usize = 5;
const CALLER_CONTEXT: usize = 6;
const C_STDIO_FLUSH: usize = 7;

pub(super) const RUNGS: [&str; 8] = [
    "0 raw fork + pipe + waitpid",
    "1 raw fork server: fds over a socket",
    "2 + own group, pidfd wait, kill, reap asked",
    "3 + stdio pipes held by server, close_range",
    "4 + per-call channel: token, request",
    "5 + death with server, oom_score_adj 1000",
    "6 + caller: OOM counter, umask, cwd, env",
    "7 + C stdio purge, flush: fork-server floor",
];

/// The library's fork-server call is held to the last rung.
const FLOOR: usize = C_STDIO_FLUSH;

/// What the caller sends its child on the call's channel: a token and a
/// request of the size of the library's trivial one.
const REQUEST_LEN: usize = 128;

/// The ladder and the library's fork-server trivial call, interleaved.
pub fn hygiene(config: &Config) {
    let plan = config.scale(Plan {
        rounds: 40,
        block: 25,
    });
    println!(
        "\n== fork-server ladder: a fork-server call's guarantees, raw, rung by rung \
         (8-byte result), {} rounds x {} calls, medians",
        plan.rounds, plan.block
    );
    let oom_counter = oom_counter_file();
    let oom_counter = oom_counter.as_deref();
    bombsquad::start_forkserver().expect("start the fork server");
    let server = std::cell::RefCell::new(RawServer::start());
    let mut cases = vec![Case::new(RUNGS[0], || assert_eq!(floors::raw_fork(), 42))];
    for (rung, name) in RUNGS.iter().enumerate().skip(1) {
        let server = &server;
        cases.push(Case::new(*name, move || {
            let value = server.borrow_mut().call(rung, oom_counter);
            assert_eq!(value, 42);
        }));
    }
    cases.push(Case::new("forkserver-mode call, pipe backend", || {
        assert_eq!(calls::forkserver_pipe().unwrap(), 42);
    }));
    interleave(&mut cases, plan);
    print_table(&RUNGS, &cases, &[FLOOR]);
    drop(cases);
    server.into_inner().stop();
}

// ---- The caller's side ----------------------------------------------------

/// The raw server, a re-executed copy of this binary, the caller's end of
/// its socket, and what the caller last told it of its context.
struct RawServer {
    socket: OwnedFd,
    process: Child,
    context: CallerContext,
}

impl RawServer {
    fn start() -> Self {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        // The server's end must survive its exec.
        nix::fcntl::fcntl(
            &theirs,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        )
        .expect("F_SETFD");
        let process = Command::new("/proc/self/exe")
            .env(RAW_SERVER, theirs.as_raw_fd().to_string())
            .stdin(Stdio::null())
            .spawn()
            .expect("start the raw fork server");
        drop(theirs);
        Self {
            socket: ours.into(),
            process,
            context: CallerContext::default(),
        }
    }

    /// Closes the socket, which ends the server, and reaps it.
    fn stop(mut self) {
        drop(self.socket);
        let status = self.process.wait().expect("wait for the raw fork server");
        assert!(status.success(), "the raw fork server: {status}");
    }

    /// One call on `rung` (1 and up): the server forks a child that sends
    /// 42 on its reply pipe under the rung's guarantees.
    fn call(&mut self, rung: usize, oom_counter: Option<&Path>) -> u64 {
        if rung == 1 {
            return self.bare_call();
        }
        let socket = self.socket.as_raw_fd();
        if rung >= CALLER_CONTEXT {
            if let Some(path) = oom_counter {
                read_oom_kills(path);
            }
            self.context.read();
        }
        let mut pipes: [Inbound; 3] = Default::default();
        let (reply, reply_end) = pipe_from_child();
        pipes[0] = reply;
        let mut sent = vec![reply_end];
        let mut channel = None;
        if rung >= CALL_CHANNEL {
            let (ours, theirs) = UnixStream::pair().expect("socketpair");
            channel = Some(ours);
            sent.push(theirs.into());
        }
        if rung >= STDIO_RELAY {
            for pipe in &mut pipes[1..] {
                let (read, write) = pipe_from_child();
                *pipe = read;
                sent.push(write);
            }
        }
        let raw: Vec<RawFd> = sent.iter().map(AsRawFd::as_raw_fd).collect();
        send_with_fds(socket, &request(rung), &raw);
        // The caller keeps the reply pipe's write end until the call is
        // over (the child's exit then wakes it once, for the pidfd).
        let reply_end = sent.swap_remove(0);
        drop(sent);
        let pid = i32::from_le_bytes(read_word(socket));
        let pidfd = pidfd_open(pid);
        if let Some(channel) = &channel {
            let mut request = [0u8; REQUEST_LEN];
            getrandom(&mut request[..16]);
            assert!(floors::write_all(channel.as_raw_fd(), &request));
        }
        wait_for_exit(&pidfd, &mut pipes);
        kill_group(&pidfd, pid);
        assert!(floors::write_all(socket, b"r"));
        assert_eq!(
            i32::from_le_bytes(read_word(socket)),
            0,
            "the child's status"
        );
        drop(reply_end);
        // The child is gone and the server let go of its ends.
        for pipe in &mut pipes {
            pipe.read_available();
        }
        let value: [u8; 8] = pipes[0].bytes().try_into().expect("an 8-byte reply");
        u64::from_le_bytes(value)
    }

    /// Rung 1: the reply pipe's write end to the server, which forks,
    /// reaps the child and sends its status.
    fn bare_call(&mut self) -> u64 {
        let socket = self.socket.as_raw_fd();
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe2");
        send_with_fds(socket, &request(1), &[write.as_raw_fd()]);
        drop(write);
        let mut value = [0u8; 8];
        assert!(floors::read_exact(read.as_raw_fd(), &mut value));
        assert_eq!(
            i32::from_le_bytes(read_word(socket)),
            0,
            "the child's status"
        );
        u64::from_le_bytes(value)
    }
}

/// The request for a call on `rung`.
fn request(rung: usize) -> [u8; 4] {
    u32::try_from(rung).expect("a rung").to_le_bytes()
}

fn read_word(fd: RawFd) -> [u8; 4] {
    let mut word = [0u8; 4];
    assert!(
        floors::read_exact(fd, &mut word),
        "the raw fork server hung up"
    );
    word
}

fn getrandom(bytes: &mut [u8]) {
    // SAFETY: `bytes` is valid for writes of its length.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    assert_eq!(usize::try_from(n).ok(), Some(bytes.len()), "getrandom");
}

/// What a fork-server call learns of its caller at each call, so that the
/// child runs with the caller's environment, working directory and umask
/// (and the call is spawned when the caller's credentials differ): the
/// thread's status (umask and standing) in one read, the working
/// directory, and the environment compared with the one sent before,
/// walked without a copy per variable.
#[derive(Debug, Default)]
struct CallerContext {
    status: Vec<u8>,
    env: Vec<u8>,
    last_env: Vec<u8>,
}

impl CallerContext {
    fn read(&mut self) {
        let mut file = File::open("/proc/thread-self/status").expect("open the thread's status");
        self.status.clear();
        self.status.resize(4096, 0);
        let n = file
            .read(&mut self.status)
            .expect("read the thread's status");
        let umask = self.status[..n]
            .split(|&b| b == b'\n')
            .find(|line| line.starts_with(b"Umask:"));
        std::hint::black_box(umask.expect("a Umask line"));
        std::hint::black_box(std::env::current_dir().expect("getcwd"));
        self.env.clear();
        for variable in environment() {
            self.env.extend_from_slice(variable.as_bytes());
            self.env.push(0);
        }
        if self.env != self.last_env {
            std::mem::swap(&mut self.env, &mut self.last_env);
        }
    }
}

/// This process's environment as C keeps it, `KEY=VALUE` each.
fn environment() -> impl Iterator<Item = &'static OsStr> {
    unsafe extern "C" {
        static environ: *const *const libc::c_char;
    }
    // SAFETY: this single-threaded benchmark never changes its environment
    // while it reads it; `environ` is a null-terminated array of C strings.
    let mut next = unsafe { environ };
    std::iter::from_fn(move || {
        // SAFETY: as above: `next` stays within the array up to its null.
        unsafe {
            if next.is_null() || (*next).is_null() {
                return None;
            }
            let variable = CStr::from_ptr(*next);
            next = next.add(1);
            Some(OsStr::from_bytes(variable.to_bytes()))
        }
    })
}

// ---- The raw server ----------------------------------------------------------

/// Serves calls and exits when this process is the raw fork server. Call
/// it first thing in `main`.
pub fn serve_if_raw_server() {
    let Some(fd) = std::env::var_os(RAW_SERVER) else {
        return;
    };
    let socket: RawFd = fd
        .to_str()
        .and_then(|fd| fd.parse().ok())
        .expect("the raw fork server's socket");
    // Once, for every child, as the library's server does.
    disable_core_files();
    install_fault_handler();
    let null = File::open("/dev/null").expect("open /dev/null");
    while serve_one(socket, null.as_raw_fd()) {}
    std::process::exit(0);
}

/// One call, start to end; `false` once the caller has hung up.
fn serve_one(socket: RawFd, null: RawFd) -> bool {
    let mut word = [0u8; 4];
    let mut fds = [-1; 4];
    let Some(count) = recv_with_fds(socket, &mut word, &mut fds) else {
        return false;
    };
    let rung = u32::from_le_bytes(word) as usize;
    let fds = &fds[..count];
    // SAFETY: always succeeds.
    let server = unsafe { libc::getpid() };
    let pid = floors::fork(|| run_child(rung, fds, null, server));
    // The reply pipe and the channel are the child's; the server holds the
    // output pipes until it has reaped it.
    let (mine, held) = fds.split_at(if rung >= CALL_CHANNEL { 2 } else { 1 });
    mine.iter().for_each(|&fd| floors::close(fd));
    if rung >= OWN_GROUP_PIDFD {
        // SAFETY: plain syscall; closes the race with the child's own setpgid.
        unsafe { libc::setpgid(pid, pid) };
        assert!(floors::write_all(socket, &pid.to_le_bytes()));
        let mut reap = [0u8; 1];
        if !floors::read_exact(socket, &mut reap) {
            return false;
        }
    }
    let mut status = 0;
    // SAFETY: `status` is valid for writes.
    assert_eq!(unsafe { libc::waitpid(pid, &raw mut status, 0) }, pid);
    held.iter().for_each(|&fd| floors::close(fd));
    floors::write_all(socket, &status.to_le_bytes())
}

/// The server's child, in the library's order: its own group, its stdio
/// and nothing else, death with the server, the request from its caller,
/// the OOM preference, C's buffers, then the reply. The signal state, core
/// limit and fault handler are the server's, inherited. `false` makes it
/// exit 1.
fn run_child(rung: usize, fds: &[RawFd], null: RawFd, server: i32) -> bool {
    let reply = fds[0];
    let channel = (rung >= CALL_CHANNEL).then(|| fds[1]);
    if rung >= OWN_GROUP_PIDFD {
        // SAFETY: plain syscall.
        unsafe { libc::setpgid(0, 0) };
    }
    if rung >= STDIO_RELAY {
        let (stdout, stderr) = (fds[fds.len() - 2], fds[fds.len() - 1]);
        install_stdio([null, stdout, stderr]);
        let mut keep = [reply, channel.unwrap_or(reply)];
        keep.sort_unstable();
        close_fds_except(&keep);
    }
    if rung >= DIE_WITH_SERVER && !die_with_parent(server) {
        return false;
    }
    if let Some(channel) = channel {
        let mut request = [0u8; REQUEST_LEN];
        if !floors::read_exact(channel, &mut request) {
            return false;
        }
        floors::close(channel);
    }
    if rung >= DIE_WITH_SERVER {
        prefer_as_oom_victim();
    }
    if rung >= C_STDIO_FLUSH {
        purge_and_flush_c_stdio();
    }
    floors::write_all(reply, &42u64.to_le_bytes())
}

// ---- Descriptors over the socket, without the heap --------------------------

/// Room for the control message of up to four descriptors.
#[repr(C, align(8))]
struct Control([u8; 64]);

/// Sends `bytes` with `fds` attached (`SCM_RIGHTS`).
fn send_with_fds(socket: RawFd, bytes: &[u8], fds: &[RawFd]) {
    let mut control = Control([0; 64]);
    let fds_len = u32::try_from(size_of_val(fds)).expect("a few descriptors");
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr().cast_mut().cast(),
        iov_len: bytes.len(),
    };
    // SAFETY: an all-zero msghdr is valid (no name, no data, no control).
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = &raw mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.0.as_mut_ptr().cast();
    // SAFETY: pure arithmetic.
    message.msg_controllen = unsafe { libc::CMSG_SPACE(fds_len) } as usize;
    assert!(message.msg_controllen <= control.0.len());
    // SAFETY: the control buffer has room for one header and `fds`
    // (checked above); CMSG_FIRSTHDR points into it.
    let sent = unsafe {
        let header = libc::CMSG_FIRSTHDR(&raw const message);
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        (*header).cmsg_len = libc::CMSG_LEN(fds_len) as usize;
        std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(header).cast(), fds.len());
        libc::sendmsg(socket, &raw const message, libc::MSG_NOSIGNAL)
    };
    assert_eq!(usize::try_from(sent).ok(), Some(bytes.len()), "sendmsg");
}

/// Receives `bytes.len()` bytes and up to four descriptors into `fds`;
/// how many came, or `None` at end of file.
fn recv_with_fds(socket: RawFd, bytes: &mut [u8], fds: &mut [RawFd; 4]) -> Option<usize> {
    let mut control = Control([0; 64]);
    let mut iov = libc::iovec {
        iov_base: bytes.as_mut_ptr().cast(),
        iov_len: bytes.len(),
    };
    // SAFETY: an all-zero msghdr is valid (no name, no data, no control).
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = &raw mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.0.as_mut_ptr().cast();
    message.msg_controllen = control.0.len();
    // SAFETY: every pointer in `message` is valid for the call.
    let n = unsafe { libc::recvmsg(socket, &raw mut message, libc::MSG_CMSG_CLOEXEC) };
    if n <= 0 {
        return None;
    }
    assert_eq!(
        usize::try_from(n).ok(),
        Some(bytes.len()),
        "a whole request"
    );
    // SAFETY: the kernel filled the control buffer `message` points to;
    // one SCM_RIGHTS message of at most four descriptors fits it.
    unsafe {
        let header = libc::CMSG_FIRSTHDR(&raw const message);
        assert!(!header.is_null(), "descriptors with the request");
        let len = (*header).cmsg_len - libc::CMSG_LEN(0) as usize;
        let count = len / size_of::<RawFd>();
        assert!(count <= fds.len());
        std::ptr::copy_nonoverlapping(libc::CMSG_DATA(header).cast(), fds.as_mut_ptr(), count);
        Some(count)
    }
}
