//! The hygiene ladder: what the guarantees of a fork-mode call (the child
//! hygiene and supervision of `isolate-runtime/src/fork.rs`) cost the
//! kernel, measured raw (libc and nix, not through bombsquad) against the
//! library's own trivial calls in the same interleaved run.
//!
//! Each rung is the one before plus one guarantee, in the order the library
//! makes the calls, and only the calls the guarantee needs: rung 8 is the
//! floor of a hygienic fork-mode call on the pipe backend, rung 9 (the same
//! with the reply in an unnamed temp file) on the file backend. What a
//! library call costs beyond its rung is the library's own overhead.

use std::fs::{File, Permissions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};

use crate::bench::{Case, Plan, interleave, ratio, show};
use crate::{Config, calls, floors};

/// Where each guarantee joins: rung `N` is rung `N - 1` plus it.
///
/// From rung 1 the parent learns of the exit from the pidfd, not from end
/// of file, so the reply pipe must be drained in the same poll (else a
/// reply larger than the pipe would block the child forever): its read end
/// is non-blocking, as the library's is.
const OWN_GROUP_PIDFD: usize = 1;
const STDIO_RELAY: usize = 2;
const EXEC_LIKE_SIGNALS: usize = 3;
const DIE_WITH_PARENT: usize = 4;
const FAULT_HANDLER: usize = 5;
const OOM_VICTIM: usize = 6;
const OOM_WATCH: usize = 7;
const C_STDIO_FLUSH: usize = 8;
const FILE_REPLY: usize = 9;

/// The floors the library's calls are held to, per backend.
const PIPE_FLOOR: usize = C_STDIO_FLUSH;
const FILE_FLOOR: usize = FILE_REPLY;

const RUNGS: [&str; 10] = [
    "0 raw fork + pipe + waitpid",
    "1 + own group, pidfd wait, group kill",
    "2 + stdio pipes, stdin /dev/null, close_range",
    "3 + exec-like signal state",
    "4 + death with parent, no core files",
    "5 + fault handler",
    "6 + oom_score_adj 1000",
    "7 + OOM counter, thread count (parent)",
    "8 + C stdio: drop inherited, flush: pipe floor",
    "9 = 8, reply in temp file: file-backend floor",
];

/// C's streams, named apart from the descriptors this file calls `stdout`
/// and `stderr`.
mod c_stdio {
    unsafe extern "C" {
        pub static mut stdout: *mut libc::FILE;
        pub static mut stderr: *mut libc::FILE;
        /// `<stdio_ext.h>`: what the library's child does to the C output
        /// the parent had buffered at the fork.
        pub fn __fpurge(stream: *mut libc::FILE);
    }
}

/// `PIDFD_SIGNAL_PROCESS_GROUP` (Linux 6.9, `<linux/pidfd.h>`).
const PIDFD_SIGNAL_PROCESS_GROUP: libc::c_uint = 1 << 2;

/// The ladder and the library's fork-mode trivial calls on the pipe and
/// file backends, interleaved.
pub fn hygiene(config: &Config) {
    let plan = config.scale(Plan {
        rounds: 40,
        block: 25,
    });
    println!(
        "\n== hygiene ladder: a fork-mode call's guarantees, raw, rung by rung \
         (8-byte result), {} rounds x {} calls, medians",
        plan.rounds, plan.block
    );
    let oom_counter = oom_counter_file();
    match &oom_counter {
        Some(path) => println!("(rung 7 reads the OOM counter in {})", path.display()),
        None => println!("(no cgroup oom_kill counter here: rung 7 only counts threads)"),
    }
    let oom_counter = oom_counter.as_deref();
    let mut cases = vec![Case::new(RUNGS[0], || assert_eq!(floors::raw_fork(), 42))];
    for (rung, name) in RUNGS.iter().enumerate().skip(1) {
        cases.push(Case::new(*name, move || {
            assert_eq!(hygienic_call(rung, oom_counter), 42);
        }));
    }
    let library = [("pipe", PIPE_FLOOR), ("file", FILE_FLOOR)];
    for (backend, _) in library {
        let call = trivial_fork_call(backend);
        cases.push(Case::new(call.name, move || {
            assert_eq!((call.run)().unwrap(), 42);
        }));
    }
    interleave(&mut cases, plan);
    let floor_rungs: Vec<usize> = library.iter().map(|&(_, floor)| floor).collect();
    print_table(&cases, &floor_rungs);
}

/// The fork-mode trivial call on `backend`.
fn trivial_fork_call(backend: &str) -> &'static calls::Trivial {
    calls::TRIVIAL
        .iter()
        .find(|call| call.fork && call.name.ends_with(&format!(", {backend} backend")))
        .unwrap_or_else(|| panic!("no fork-mode trivial call on the {backend} backend"))
}

/// The rungs, each with what it adds to the one before; then the library's
/// calls, each with what it adds to its floor (rung `floor_rungs[i]` for
/// the `i`th).
fn print_table(cases: &[Case<'_>], floor_rungs: &[usize]) {
    println!(
        "{:<46} {:>10} {:>11} {:>10} {:>15}",
        "case", "median", "added", "vs rung 0", "vs its floor"
    );
    let (rungs, library) = cases.split_at(RUNGS.len());
    let rung0 = rungs[0].median();
    for (i, rung) in rungs.iter().enumerate() {
        let added = i.checked_sub(1).map(|before| rungs[before].median());
        println!(
            "{:<46} {:>10} {:>11} {:>9.2}x",
            rung.name,
            show(rung.median()),
            added.map_or_else(|| "-".to_owned(), |b| show_delta(rung.median(), b)),
            ratio(rung.median(), rung0),
        );
    }
    for (call, &floor) in library.iter().zip(floor_rungs) {
        let floor_median = rungs[floor].median();
        println!(
            "{:<46} {:>10} {:>11} {:>9.2}x {:>15}",
            call.name,
            show(call.median()),
            show_delta(call.median(), floor_median),
            ratio(call.median(), rung0),
            format!("{:.2}x (rung {floor})", ratio(call.median(), floor_median)),
        );
    }
    println!(
        "(added: over the rung before; for a library call, over its floor: \
         rung {PIPE_FLOOR} for the pipe backend, rung {FILE_FLOOR} for the file backend)"
    );
}

/// `a - b`, signed: medians of noisy neighbours may come out in either order.
fn show_delta(a: Duration, b: Duration) -> String {
    if a >= b {
        format!("+{}", show(a - b))
    } else {
        format!("-{}", show(b - a))
    }
}

// ---- The parent's side ----------------------------------------------------

/// One call on `rung` (1 and up): fork a child that sends 42 on its reply
/// channel under the rung's guarantees, and take it in as the library would.
fn hygienic_call(rung: usize, oom_counter: Option<&Path>) -> u64 {
    if rung >= OOM_WATCH {
        count_threads();
    }
    let mut channels = Channels::open(rung);
    let parent = if rung >= DIE_WITH_PARENT {
        // SAFETY: always succeeds.
        unsafe { libc::getpid() }
    } else {
        0
    };
    if rung >= OOM_WATCH
        && let Some(path) = oom_counter
    {
        read_oom_kills(path);
    }
    let ends = channels.child_ends(parent);
    let pid = floors::fork(|| run_child(rung, ends));
    // SAFETY: plain syscall; closes the race with the child's own setpgid.
    unsafe { libc::setpgid(pid, pid) };
    channels.close_child_ends();
    let pidfd = pidfd_open(pid);
    wait_for_exit(&pidfd, &mut channels.pipes);
    kill_group(&pidfd, pid);
    reap(&pidfd);
    // The child is gone: what is left in the pipes is all it wrote.
    for pipe in &mut channels.pipes {
        pipe.read_available();
    }
    channels.reply()
}

/// One call's descriptors: the parent's ends and, until the fork, the
/// child's.
#[derive(Debug, Default)]
struct Channels {
    /// The reply (on a pipe, rungs 1 to 8), stdout and stderr (rung 2 up).
    pipes: [Inbound; 3],
    /// The reply on the file backend (rung 9).
    file: Option<File>,
    /// The reply pipe's write end, stdin (`/dev/null`), stdout's and
    /// stderr's write ends: the parent closes them once the child has them.
    child_side: [Option<OwnedFd>; 4],
}

impl Channels {
    /// In the library's order: the reply channel, then `/dev/null`, then
    /// the stdout and stderr pipes.
    fn open(rung: usize) -> Self {
        let mut channels = Self::default();
        if rung >= FILE_REPLY {
            channels.file = Some(reply_file());
        } else {
            let (read, write) = pipe_from_child();
            channels.pipes[0] = read;
            channels.child_side[0] = Some(write);
        }
        if rung >= STDIO_RELAY {
            let null = File::open("/dev/null").expect("open /dev/null");
            channels.child_side[1] = Some(null.into());
            for stream in 1..3 {
                let (read, write) = pipe_from_child();
                channels.pipes[stream] = read;
                channels.child_side[stream + 1] = Some(write);
            }
        }
        channels
    }

    /// The raw descriptors the child installs, so it neither allocates nor
    /// drops anything.
    fn child_ends(&self, parent: i32) -> ChildEnds {
        let raw = |slot: usize| self.child_side[slot].as_ref().map(AsRawFd::as_raw_fd);
        let reply = match &self.file {
            Some(file) => file.as_raw_fd(),
            None => raw(0).expect("a reply pipe"),
        };
        let stdio = match (raw(1), raw(2), raw(3)) {
            (Some(stdin), Some(stdout), Some(stderr)) => Some([stdin, stdout, stderr]),
            _ => None,
        };
        ChildEnds {
            reply,
            stdio,
            parent,
        }
    }

    fn close_child_ends(&mut self) {
        self.child_side = Default::default();
    }

    /// The 8 bytes the child sent: read from the pipe as it came, or from
    /// the file once the child is gone (a stat for its size, then a
    /// positional read, as the file backend does).
    fn reply(&self) -> u64 {
        let mut value = [0u8; 8];
        match &self.file {
            Some(file) => {
                assert_eq!(file.metadata().expect("stat the reply file").len(), 8);
                file.read_exact_at(&mut value, 0).expect("read the reply");
            }
            None => value.copy_from_slice(self.pipes[0].bytes()),
        }
        u64::from_le_bytes(value)
    }
}

/// An unnamed temp file, mode 0600, as the file backend makes it.
fn reply_file() -> File {
    let file = tempfile::tempfile_in(std::env::temp_dir()).expect("create the reply file");
    file.set_permissions(Permissions::from_mode(0o600))
        .expect("narrow the reply file");
    file
}

/// A close-on-exec pipe from the child: the parent's end non-blocking (it
/// is drained in the loop that waits on the pidfd), the child's blocking.
fn pipe_from_child() -> (Inbound, OwnedFd) {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe2");
    let flags = OFlag::from_bits_truncate(fcntl(&read, FcntlArg::F_GETFL).expect("F_GETFL"));
    fcntl(&read, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).expect("F_SETFL");
    (Inbound::new(read), write)
}

/// The parent's non-blocking end of a pipe from the child and what came
/// through it: the 8-byte reply, or nothing (the child prints nothing).
#[derive(Debug, Default)]
struct Inbound {
    /// `None` once at end of file (or for a pipe this rung does not have).
    fd: Option<OwnedFd>,
    buf: [u8; 16],
    len: usize,
}

impl Inbound {
    fn new(fd: OwnedFd) -> Self {
        Self {
            fd: Some(fd),
            ..Self::default()
        }
    }

    /// Reads until the pipe is empty, or to end of file (then closes it).
    fn read_available(&mut self) {
        while let Some(fd) = &self.fd {
            assert!(self.len < self.buf.len(), "the child wrote too much");
            match nix::unistd::read(fd, &mut self.buf[self.len..]) {
                Ok(0) => self.fd = None,
                Ok(n) => self.len += n,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return,
                Err(e) => panic!("read a pipe from the child: {e}"),
            }
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// `pidfd_open(2)`.
fn pidfd_open(pid: i32) -> OwnedFd {
    // SAFETY: plain syscall with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    assert!(fd >= 0, "pidfd_open: {}", io::Error::last_os_error());
    let fd = RawFd::try_from(fd).expect("a descriptor");
    // SAFETY: the kernel just returned this descriptor and nothing else owns it.
    unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }
}

/// Polls the pidfd with every open pipe until the child has exited,
/// draining each pipe as it becomes readable (a child must never block on
/// a full pipe), as the library's supervisor does.
fn wait_for_exit(pidfd: &OwnedFd, pipes: &mut [Inbound; 3]) {
    loop {
        let watch = |fd: RawFd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let mut fds = [watch(pidfd.as_raw_fd()); 4];
        let mut owners = [0; 4];
        let mut n = 1;
        for (i, pipe) in pipes.iter().enumerate() {
            if let Some(fd) = &pipe.fd {
                (fds[n], owners[n]) = (watch(fd.as_raw_fd()), i);
                n += 1;
            }
        }
        // SAFETY: `fds` is valid for `n` (at most 4) entries.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), n as libc::nfds_t, -1) };
        if ready < 0 {
            assert_eq!(Errno::last(), Errno::EINTR, "poll");
            continue;
        }
        for (fd, &owner) in fds[1..n].iter().zip(&owners[1..n]) {
            if fd.revents != 0 {
                pipes[owner].read_available();
            }
        }
        if fds[0].revents != 0 {
            return;
        }
    }
}

/// SIGKILL then SIGCONT to the child's process group through its pidfd
/// (grandchildren included; a stopped member cannot linger), as the library
/// does before reaping.
fn kill_group(pidfd: &OwnedFd, pid: i32) {
    for signal in [libc::SIGKILL, libc::SIGCONT] {
        // SAFETY: raw syscall on a descriptor we own; a null siginfo asks
        // for a kill(2)-style one.
        let sent = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                pidfd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                PIDFD_SIGNAL_PROCESS_GROUP,
            )
        };
        if sent < 0 && Errno::last() == Errno::EINVAL {
            // A kernel before 6.9: by number; the unreaped child pins it.
            // SAFETY: plain syscall; a negative pid addresses the group.
            unsafe { libc::kill(-pid, signal) };
        }
    }
}

/// Reaps the child through its pidfd with its resource usage (the raw
/// waitid, whose fifth argument is the rusage), and checks it exited 0.
fn reap(pidfd: &OwnedFd) {
    // SAFETY: both are plain old data; all-zero is a valid value.
    let (mut info, mut usage): (libc::siginfo_t, libc::rusage) =
        unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    loop {
        // SAFETY: both pointers are valid for writes for the whole call.
        let reaped = unsafe {
            libc::syscall(
                libc::SYS_waitid,
                libc::P_PIDFD,
                pidfd.as_raw_fd(),
                &raw mut info,
                libc::WEXITED,
                &raw mut usage,
            )
        };
        if reaped == 0 {
            break;
        }
        assert_eq!(Errno::last(), Errno::EINTR, "waitid");
    }
    // SAFETY: waitid filled a SIGCHLD siginfo, whose status field is set.
    let status = unsafe { info.si_status() };
    assert_eq!((info.si_code, status), (libc::CLD_EXITED, 0));
}

/// The thread count the library checks before each fork-mode call (to warn
/// about forking a multi-threaded process): one stat of `/proc/self/task`.
fn count_threads() {
    let links = std::fs::metadata("/proc/self/task").expect("stat /proc/self/task");
    std::hint::black_box(links.nlink());
}

/// The cgroup's `oom_kill` counter, read before the fork so a SIGKILL can
/// later be told apart from the OOM killer's.
fn read_oom_kills(path: &Path) {
    let events = std::fs::read_to_string(path).expect("read the oom_kill counter");
    let count = events
        .lines()
        .find_map(|line| line.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse::<u64>().ok());
    std::hint::black_box(count);
}

/// The file holding this process's cgroup `oom_kill` counter, found as the
/// library finds it: cgroup v2 `memory.events`, else a v1 memory
/// controller's `memory.oom_control`, from `/proc/self/mountinfo` and
/// `/proc/self/cgroup`.
fn oom_counter_file() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut files: Vec<(bool, PathBuf)> = mounts
        .lines()
        .filter_map(|mount| counter_file(mount, &cgroups))
        .collect();
    files.sort_by_key(|&(v2, _)| !v2); // v2 first
    files
        .into_iter()
        .map(|(_, file)| file)
        .find(|file| file.exists())
}

/// Where a `mountinfo` line's cgroup hierarchy keeps our counter, and
/// whether it is cgroup v2.
fn counter_file(mount: &str, cgroups: &str) -> Option<(bool, PathBuf)> {
    let (left, right) = mount.split_once(" - ")?;
    let fields: Vec<&str> = left.split(' ').collect();
    let (root, mount_point) = (*fields.get(3)?, *fields.get(4)?);
    let mut right = right.split(' ');
    let (fs_type, options) = (right.next()?, right.nth(1).unwrap_or(""));
    let (v2, path, file) = match fs_type {
        "cgroup2" => (true, cgroup_path(cgroups, str::is_empty)?, "memory.events"),
        "cgroup" if options.split(',').any(|o| o == "memory") => (
            false,
            cgroup_path(cgroups, |c| c.split(',').any(|c| c == "memory"))?,
            "memory.oom_control",
        ),
        _ => return None,
    };
    // A mount of a subtree shows the subtree at its mount point.
    let path = path
        .strip_prefix(root)
        .filter(|_| root != "/")
        .unwrap_or(path);
    let file = Path::new(mount_point)
        .join(path.trim_start_matches('/'))
        .join(file);
    Some((v2, file))
}

/// The path of the `/proc/self/cgroup` line ("id:controllers:path") whose
/// controllers fit.
fn cgroup_path(cgroups: &str, fits: impl Fn(&str) -> bool) -> Option<&str> {
    cgroups.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        fits(controllers).then_some(path)
    })
}

// ---- The child's side -----------------------------------------------------

/// What the child is handed, as raw descriptors.
#[derive(Debug, Clone, Copy)]
struct ChildEnds {
    reply: RawFd,
    /// stdin (`/dev/null`), stdout, stderr (rung 2 up).
    stdio: Option<[RawFd; 3]>,
    /// The parent's pid (rung 4 up).
    parent: i32,
}

/// The child, in the library's order: its own group, its stdio and nothing
/// else, exec-like signals, death with the parent and no core files, the
/// fault handler, the OOM preference, C's buffers flushed, then the reply.
/// Raw syscalls only, no allocation. `false` makes it exit 1.
fn run_child(rung: usize, ends: ChildEnds) -> bool {
    if rung >= OWN_GROUP_PIDFD {
        // SAFETY: plain syscall.
        unsafe { libc::setpgid(0, 0) };
    }
    if let Some(stdio) = ends.stdio {
        install_stdio(stdio);
        close_fds_except(ends.reply);
    }
    if rung >= EXEC_LIKE_SIGNALS {
        reset_signal_state();
    }
    if rung >= DIE_WITH_PARENT {
        if !die_with_parent(ends.parent) {
            return false;
        }
        disable_core_files();
    }
    if rung >= FAULT_HANDLER {
        install_fault_handler();
    }
    if rung >= OOM_VICTIM {
        prefer_as_oom_victim();
    }
    if rung >= C_STDIO_FLUSH {
        // SAFETY: the forked child is single-threaded; purging moves the
        // two streams' buffer pointers, and fflush(NULL) flushes every
        // open stream (glibc resets the stdio locks in a forked child).
        unsafe {
            c_stdio::__fpurge(c_stdio::stdout);
            c_stdio::__fpurge(c_stdio::stderr);
            libc::fflush(std::ptr::null_mut());
        }
    }
    floors::write_all(ends.reply, &42u64.to_le_bytes())
}

/// `dup2`s `/dev/null` and the pipes onto 0, 1 and 2.
fn install_stdio(stdio: [RawFd; 3]) {
    for (target, fd) in (0..).zip(stdio) {
        // SAFETY: dup2 between descriptors this process owns.
        unsafe { libc::dup2(fd, target) };
    }
}

/// Closes every descriptor from 3 up but `keep`, with `close_range`: the
/// range below it (if any), then the range above, as the library does.
fn close_fds_except(keep: RawFd) {
    let close_range = |first: u32, last: u32| {
        // SAFETY: raw syscall with integer arguments; the child gave up
        // these descriptors.
        unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
    };
    let mut first = 3;
    if let Ok(keep) = u32::try_from(keep)
        && keep >= first
    {
        if keep > first {
            close_range(first, keep - 1);
        }
        first = keep + 1;
    }
    close_range(first, u32::MAX);
}

/// The signal state an exec'd process has: an empty mask, and the default
/// action for every caught signal but those the kernel or std keep
/// (SIGKILL and SIGSTOP cannot be caught; std's SIGSEGV and SIGBUS
/// handler stays). glibc refuses its own two, without a syscall.
fn reset_signal_state() {
    // SAFETY: an all-zero sigset_t is valid; sigemptyset makes it empty.
    let mut empty: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid; the old mask is not asked for.
    unsafe {
        libc::sigemptyset(&raw mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &raw const empty, std::ptr::null_mut());
    }
    for signal in 1..=libc::SIGRTMAX() {
        if matches!(
            signal,
            libc::SIGKILL | libc::SIGSTOP | libc::SIGSEGV | libc::SIGBUS
        ) {
            continue;
        }
        let handler = current_handler(signal);
        if handler != libc::SIG_DFL && handler != libc::SIG_IGN {
            set_default(signal);
        }
    }
}

/// Queries a signal's disposition (a null new action changes nothing).
fn current_handler(signal: i32) -> libc::sighandler_t {
    // SAFETY: an all-zero sigaction is valid; with a null `act` sigaction
    // only fills `old` (an invalid signal leaves it zeroed: SIG_DFL).
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &raw mut old);
        old.sa_sigaction
    }
}

fn set_default(signal: i32) {
    // SAFETY: an all-zero sigaction with SIG_DFL and an empty mask is valid;
    // the child owns its signal state.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(signal, &raw const action, std::ptr::null_mut());
    }
}

/// SIGKILL when the parent dies, then a check that it has not died already
/// (the request only covers a death after it). `false` when it has.
fn die_with_parent(parent: i32) -> bool {
    // SAFETY: raw prctl syscall with integer arguments.
    unsafe {
        libc::syscall(
            libc::SYS_prctl,
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL,
            0,
            0,
            0,
        )
    };
    // SAFETY: always succeeds.
    unsafe { libc::getppid() == parent }
}

/// `RLIMIT_CORE` 0/0: a crash writes no core file.
fn disable_core_files() {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: raw syscall; `zero` outlives it and the old limit is not asked for.
    unsafe {
        libc::syscall(
            libc::SYS_prlimit64,
            0,
            libc::RLIMIT_CORE,
            &raw const zero,
            std::ptr::null_mut::<libc::rlimit>(),
        )
    };
}

/// The size of the alternate signal stack given to a thread that has none.
const ALT_STACK_LEN: usize = 64 << 10;

/// The fault handler's installation: an alternate stack (std's, or a new
/// one), then an SA_SIGINFO | SA_ONSTACK handler for each fault signal,
/// keeping what it replaced (as the library does, to chain to it).
fn install_fault_handler() {
    ensure_alternate_stack();
    for signal in [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE] {
        // SAFETY: an all-zero sigaction is valid (empty mask, no flags).
        let (mut action, mut old): (libc::sigaction, libc::sigaction) =
            unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
        action.sa_sigaction = exit_on_fault as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: both pointers are valid; the handler only calls `_exit`.
        unsafe { libc::sigaction(signal, &raw const action, &raw mut old) };
    }
}

/// Queries the alternate signal stack; makes one when there is none (std
/// gives its threads one, so a forked child of `main` has it).
fn ensure_alternate_stack() {
    // SAFETY: an all-zero stack_t is valid; a null new stack only queries.
    let mut current: libc::stack_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let queried = unsafe { libc::sigaltstack(std::ptr::null(), &raw mut current) };
    if queried != 0 || current.ss_flags & libc::SS_DISABLE == 0 {
        return;
    }
    // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            ALT_STACK_LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return;
    }
    let new = libc::stack_t {
        ss_sp: stack,
        ss_flags: 0,
        ss_size: ALT_STACK_LEN,
    };
    // SAFETY: the mapping lives as long as the child.
    unsafe { libc::sigaltstack(&raw const new, std::ptr::null_mut()) };
}

/// The ladder's fault handler: leaves at once (the library's writes a
/// record first; no fault happens here).
extern "C" fn exit_on_fault(signal: i32, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: always safe; never returns.
    unsafe { libc::_exit(128 + signal) };
}

/// Makes the child the OOM killer's first choice: "1000" into
/// `/proc/self/oom_score_adj`.
fn prefer_as_oom_victim() {
    // SAFETY: a valid C string; the descriptor is closed below.
    let fd = unsafe {
        libc::open(
            c"/proc/self/oom_score_adj".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        )
    };
    if fd >= 0 {
        floors::write_all(fd, b"1000");
        floors::close(fd);
    }
}
