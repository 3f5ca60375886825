//! The hygiene ladder: what the guarantees of a fork-mode call (the child
//! hygiene and supervision of `isolate-runtime/src/start/fork.rs`) cost the
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

mod child;
pub mod forkserver;
use crate::{Config, calls, floors};
use child::{ChildEnds, run_child};

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
    print_table(&RUNGS, &cases, &floor_rungs);
}

/// The fork-mode trivial call on `backend`.
fn trivial_fork_call(backend: &str) -> &'static calls::Trivial {
    calls::TRIVIAL
        .iter()
        .find(|call| call.fork && call.name.ends_with(&format!(", {backend} backend")))
        .unwrap_or_else(|| panic!("no fork-mode trivial call on the {backend} backend"))
}

/// The rungs (the first `names.len()` cases), each with what it adds to
/// the one before; then the library's calls, each with what it adds to its
/// floor (rung `floor_rungs[i]` for the `i`th).
fn print_table(names: &[&str], cases: &[Case<'_>], floor_rungs: &[usize]) {
    println!(
        "{:<46} {:>10} {:>11} {:>10} {:>15}",
        "case", "median", "added", "vs rung 0", "vs its floor"
    );
    let (rungs, library) = cases.split_at(names.len());
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
    println!("(added: over the rung before; for a library call, over its floor)");
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
